"""An outside client of orderlog, written from docs/events.md and schemas/*.avsc alone.

What a team with its own Python services would write to meet orderlog on Kafka:
CloudEvents binary-mode records (Avro or JSON payload), keyed by the aggregate id
and placed with Kafka's murmur2 (the Java client's partitioner), and a reader
that decodes Avro with the writer schema named by ce_dataschema.
"""

import datetime as _dt
import glob
import io
import json
import os
import time
import uuid
import zlib

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from fastavro import parse_schema, schemaless_reader, schemaless_writer

SOURCE_DIR = os.environ.get(
    "ORDERLOG_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SCHEMA_DIR = os.path.join(SOURCE_DIR, "schemas")

# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------

_raw = {}
_parsed = {}


def event_names():
    """Every event type of the contract: one schemas/<Event>.avsc each."""
    return sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(SCHEMA_DIR, "*.avsc")))


def raw_schema(name, version=None):
    """The schema JSON of event `name` at `version` (None: the current one)."""
    k = (name, version)
    if k not in _raw:
        cur = json.load(open(os.path.join(SCHEMA_DIR, f"{name}.avsc"), encoding="utf-8"))
        if version is None or version == cur["orderlog.version"]:
            _raw[k] = cur
        else:
            path = os.path.join(SCHEMA_DIR, "history", f"{name}.v{version}.avsc")
            _raw[k] = json.load(open(path, encoding="utf-8"))
    return _raw[k]


def schema(name, version=None):
    k = (name, version)
    if k not in _parsed:
        _parsed[k] = parse_schema(raw_schema(name, version))
    return _parsed[k]


def version_of(name):
    return raw_schema(name)["orderlog.version"]


def topic_of(name):
    """Topic of an event, without the prefix (the schema's orderlog.topic)."""
    return raw_schema(name)["orderlog.topic"]


def key_of(name, data):
    """The record key: the schema's orderlog.key template over the event's fields."""
    return raw_schema(name)["orderlog.key"].format(**data)


def subject_of(name, data):
    return str(data[raw_schema(name)["orderlog.subject"]])


# ---------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------

def murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2 (seed 0x9747b28c), as an unsigned 32-bit value."""
    m = 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    n = len(data) // 4 * 4
    for i in range(0, n, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[n:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def signed32(u: int) -> int:
    return u - (1 << 32) if u & 0x80000000 else u


def murmur2_partition(key, partitions: int) -> int:
    """The partition of a key: (murmur2(key) & 0x7fffffff) % partitions."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key, partitions: int) -> int:
    """Where librdkafka's default partitioner (consistent_random) puts a key."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return zlib.crc32(key) % partitions


# ---------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------

def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339(ms: int) -> str:
    t = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _plain(v):
    """fastavro gives timestamp-millis as datetime: back to epoch milliseconds."""
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        return int(round(v.timestamp() * 1000))
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _is_time(ftype):
    if isinstance(ftype, dict):
        return ftype.get("logicalType") == "timestamp-millis"
    if isinstance(ftype, list):
        return any(_is_time(t) for t in ftype)
    return False


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------

def encode(name, data, fmt="avro", source="it-interop", event_time=None):
    """(key, value, headers) of one event as a CloudEvents binary-mode record.

    fmt "avro": the Avro binary encoding of the current version (times as epoch ms);
    fmt "json": the event's fields as one JSON object, times as RFC 3339 strings.
    """
    if event_time is None:
        event_time = now_ms()
    if fmt == "avro":
        buf = io.BytesIO()
        schemaless_writer(buf, schema(name), data)
        value, ctype = buf.getvalue(), "application/avro"
    elif fmt == "json":
        times = {f["name"] for f in raw_schema(name)["fields"] if _is_time(f["type"])}
        doc = {k: (rfc3339(v) if k in times and isinstance(v, int) else v) for k, v in data.items()}
        value, ctype = json.dumps(doc, ensure_ascii=False).encode("utf-8"), "application/json"
    else:
        raise ValueError(fmt)
    headers = [
        ("ce_specversion", "1.0"),
        ("ce_id", str(uuid.uuid4())),
        ("ce_type", f"orderlog.{name}"),
        ("ce_source", source),
        ("ce_time", rfc3339(event_time)),
        ("ce_subject", subject_of(name, data)),
        ("content-type", ctype),
        ("ce_dataschema", f"urn:orderlog:schema:{name}:{version_of(name)}"),
    ]
    return key_of(name, data).encode("utf-8"), value, headers


def header_map(headers):
    """Headers as a dict of text; a repeated header: the last counts."""
    return {k: (v.decode("utf-8") if v is not None else None) for k, v in headers or []}


def decode(headers, value):
    """(event name, data) of a record of an orderlog topic, times as epoch ms."""
    h = header_map(headers)
    if "ce_type" not in h:  # a publish line
        line = json.loads(value)
        return line["type"].removeprefix("orderlog."), line["data"]
    name = h["ce_type"].removeprefix("orderlog.")
    if h.get("content-type", "").startswith("application/json"):
        return name, json.loads(value)
    version = None
    if "ce_dataschema" in h:
        version = int(h["ce_dataschema"].rsplit(":", 1)[1])
    buf = io.BytesIO(value)
    data = schemaless_reader(buf, schema(name, version), schema(name))
    if buf.tell() != len(value):
        raise ValueError(f"{name}: {len(value) - buf.tell()} bytes after the Avro record")
    return name, _plain(data)


class Client:
    """A producer of orderlog events: idempotent, acks=all, murmur2 placement."""

    def __init__(self, bootstrap, prefix, partitioner="murmur2_random", **extra):
        conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                "linger.ms": 5}
        if partitioner is not None:
            conf["partitioner"] = partitioner
        conf.update(extra)
        self.prefix = prefix
        self.producer = Producer(conf)
        self.delivered = []   # (topic, partition, offset, key)
        self.errors = []

    def _report(self, err, msg):
        if err is not None:
            self.errors.append(f"{msg.topic()} key {msg.key()!r}: {err}")
        else:
            self.delivered.append((msg.topic(), msg.partition(), msg.offset(), msg.key()))

    def send(self, name, data, fmt="avro", **kw):
        """Queue one event on its topic; returns the key."""
        key, value, headers = encode(name, data, fmt, **kw)
        topic = self.prefix + topic_of(name)
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers,
                                      on_delivery=self._report)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)
        return key

    def flush(self, timeout=30.0):
        left = self.producer.flush(timeout)
        assert left == 0, f"{left} records not delivered within {timeout}s"
        assert not self.errors, "delivery failed: " + "; ".join(self.errors[:5])
        done, self.delivered = self.delivered, []
        return done


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def partition_count(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "it-interop-meta"})
    try:
        md = c.list_topics(topic, timeout=10)
        t = md.topics[topic]
        if t.error is not None:
            raise KafkaException(t.error)
        return len(t.partitions)
    finally:
        c.close()


class Record:
    __slots__ = ("topic", "partition", "offset", "key", "value", "headers", "h")

    def __init__(self, msg):
        self.topic, self.partition, self.offset = msg.topic(), msg.partition(), msg.offset()
        self.key, self.value, self.headers = msg.key(), msg.value(), msg.headers()
        self.h = header_map(self.headers)

    def decode(self):
        return decode(self.headers, self.value)

    def __repr__(self):
        return f"<{self.topic}[{self.partition}]@{self.offset} key={self.key!r} {self.h.get('ce_type')}>"


def read_all(bootstrap, topics, timeout=60.0):
    """Every record of `topics` from the beginning to the end they have now,
    read_committed. A partition is read to its end when the consumer reports
    partition EOF or its position reaches the high watermark."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"it-interop-reader-{uuid.uuid4()}",   # assign() only: never joins
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    out = []
    try:
        parts = []
        for t in topics:
            n = partition_count(bootstrap, t)
            parts += [TopicPartition(t, p, -2) for p in range(n)]  # -2: OFFSET_BEGINNING
        ends = {}
        for tp in parts:
            lo, hi = c.get_watermark_offsets(tp, timeout=10)
            ends[(tp.topic, tp.partition)] = hi
        pending = {k for k, hi in ends.items() if hi > 0}
        c.assign([tp for tp in parts if (tp.topic, tp.partition) in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not read to the end within {timeout}s: {sorted(pending)}")
            msg = c.poll(0.5)
            if msg is None:
                # read_committed: the position may stop short of the high
                # watermark only while a transaction is open; check positions.
                for tp in c.position([TopicPartition(t, p) for t, p in pending]):
                    if tp.offset >= 0 and tp.offset >= ends[(tp.topic, tp.partition)]:
                        pending.discard((tp.topic, tp.partition))
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                    continue
                raise KafkaException(msg.error())
            out.append(Record(msg))
            if msg.offset() + 1 >= ends[(msg.topic(), msg.partition())]:
                pending.discard((msg.topic(), msg.partition()))
    finally:
        c.close()
    return out


class Follower:
    """A read_committed group consumer of some topics from their beginning,
    collecting records until a condition holds (bounded by a deadline)."""

    def __init__(self, bootstrap, topics, group):
        self.c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        self.c.subscribe(list(topics))
        self.records = []

    def until(self, pred, timeout, what="condition"):
        deadline = time.monotonic() + timeout
        while not pred(self.records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not met within {timeout}s ({len(self.records)} records read)")
            msg = self.c.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            self.records.append(Record(msg))
        return self.records

    def close(self):
        self.c.close()
