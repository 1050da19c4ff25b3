#ifndef OL_PROJECT_H
#define OL_PROJECT_H

#include "consumers/runtime.h"

/* The projection of orders, after-sales and skus (consumers/project.c), for
 * orderlog project and orderlog rebuild. */
const ol_rt_role_t *ol_project_role(void);

#endif
