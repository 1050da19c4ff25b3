"""orderlog's schemas as an outside client finds them in the schema registry.

`orderlog schemas register` puts them there; confluent-kafka's own
SchemaRegistryClient, with its TopicRecordNameStrategy, must then find every
event's schema under the subject it computes itself, read it as the same Avro
schema as schemas/*.avsc, and serialize and deserialize with it (the Confluent
framing: a 0 byte, the 4-byte schema id, the Avro binary). Needs the registry
of ops/stack (ORDERLOG_REGISTRY_URL; `ops/test` starts it)."""

import json
import os
import subprocess

import pytest
from fastavro import parse_schema

import harness
import olclient

REGISTRY = os.environ.get("ORDERLOG_REGISTRY_URL")

pytestmark = pytest.mark.skipif(
    not REGISTRY, reason="ORDERLOG_REGISTRY_URL is not set: no schema registry (ops/stack registry-start, or ops/test)")


@pytest.fixture(scope="module")
def registered():
    """The test's own topic prefix, with every schema registered under it."""
    prefix = f"it_interop_registry_{os.getpid()}_"
    r = subprocess.run([harness.OL, "-X", f"topic.prefix={prefix}", "-X", f"registry.url={REGISTRY}",
                        "schemas", "register"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"orderlog schemas register: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return prefix


def client():
    from confluent_kafka.schema_registry import SchemaRegistryClient
    return SchemaRegistryClient({"url": REGISTRY})


def fields(schema):
    """A schema's fields as (name, type, default or None), the orderlog.* attributes left out."""
    return [(f["name"], json.dumps(f["type"], sort_keys=True), json.dumps(f.get("default")))
            for f in schema["fields"]]


def test_every_event_is_found_under_confluents_topic_record_name_subject(registered):
    from confluent_kafka.schema_registry import topic_record_subject_name_strategy
    from confluent_kafka.serialization import MessageField, SerializationContext

    c = client()
    names = olclient.event_names()
    assert len(names) >= 25
    for name in names:
        raw = olclient.raw_schema(name)
        topic = registered + olclient.topic_of(name)
        ctx = SerializationContext(topic, MessageField.VALUE)
        subject = topic_record_subject_name_strategy(ctx, f"{raw['namespace']}.{raw['name']}")
        latest = c.get_latest_version(subject)
        assert latest.version == len(c.get_versions(subject))
        got = json.loads(latest.schema.schema_str)
        assert fields(got) == fields(raw), f"{subject}: the registered schema differs from schemas/{name}.avsc"
        parse_schema(got)  # an Avro schema for fastavro too
        # every older version of history/ is there, in order
        for v in range(1, raw["orderlog.version"]):
            old = json.loads(c.get_version(subject, v).schema.schema_str)
            assert fields(old) == fields(olclient.raw_schema(name, v)), f"{subject} version {v}"


def test_confluent_serializer_writes_and_reads_with_the_registered_schema(registered):
    from confluent_kafka.schema_registry import topic_record_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    c = client()
    # the file as it is: Apicurio finds a schema by its exact text (Confluent's
    # registry by its normalized form)
    with open(os.path.join(olclient.SCHEMA_DIR, "BuyRequested.avsc"), encoding="utf-8") as f:
        schema_str = f.read()
    # never registers: the schema must be the one orderlog registered
    ser = AvroSerializer(c, schema_str, conf={"auto.register.schemas": False,
                                             "subject.name.strategy": topic_record_subject_name_strategy})
    de = AvroDeserializer(c)
    ctx = SerializationContext(registered + "buy-requests", MessageField.VALUE)
    data = dict(request_id="reg-1", session_id="s", client_ip="192.0.2.7", user_id="u-1", user_level=2,
                sku="SKU-R", quantity=3, requested_at=1700000000123, channel="web")
    framed = ser(data, ctx)
    assert framed[0] == 0
    schema_id = int.from_bytes(framed[1:5], "big")
    subject = f"{registered}buy-requests-orderlog.BuyRequested"
    assert schema_id == c.get_latest_version(subject).schema_id
    back = de(framed, ctx)
    assert back["request_id"] == "reg-1" and back["quantity"] == 3 and back["channel"] == "web"
    assert int(back["requested_at"].timestamp() * 1000) == 1700000000123
