package orderlog.registry;

import java.util.List;

import javax.enterprise.inject.Produces;
import javax.inject.Singleton;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;

/**
 * The list of properties an administrator may change at run time, which the
 * config-index extension (left out: its build part is not published) used to
 * generate from the application's {@code @Dynamic} properties. The local
 * registry needs none of them: each property keeps its static value.
 */
public class DynamicPropertiesProducer {

    @Produces
    @Singleton
    DynamicConfigPropertyList dynamicConfigPropertyList() {
        return new DynamicConfigPropertyList(List.of());
    }
}
