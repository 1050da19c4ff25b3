"""The Confluent wire format both ways (README, "Two formats on the wire").

In: a producer with confluent-kafka's AvroSerializer writes orders and buy
requests through the schema registry, with no CloudEvents headers; orderlog
projects them into PostgreSQL and decides the buys. A record whose schema id
the registry does not know goes to the dlq saying what it is.
Out: with event.format=confluent, decide and publish write framed records
that confluent-kafka's AvroDeserializer reads, the CloudEvents headers kept.
The registry away mid-run (a relay to it cut, so the registry other tests
share keeps running): records wait, nothing in the dlq, and go on once it
answers again. Needs the registry of ops/stack (ORDERLOG_REGISTRY_URL; `ops/test`
starts it)."""

import json
import os
import subprocess
import time
import urllib.request

import pytest

import harness
import olclient

REGISTRY = os.environ.get("ORDERLOG_REGISTRY_URL")

pytestmark = pytest.mark.skipif(
    not REGISTRY, reason="ORDERLOG_REGISTRY_URL is not set: no schema registry (ops/stack registry-start, or ops/test)")

SKU = "CF-SKU"
MIN = 60_000


def register(d):
    r = d.run("schemas", "register", "-X", f"registry.url={REGISTRY}")
    assert r.returncode == 0


def serializer(name):
    from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroSerializer
    with open(os.path.join(olclient.SCHEMA_DIR, f"{name}.avsc"), encoding="utf-8") as f:
        schema_str = f.read()
    return AvroSerializer(SchemaRegistryClient({"url": REGISTRY}), schema_str,
                          conf={"auto.register.schemas": False,
                                "subject.name.strategy": topic_record_subject_name_strategy})


class ConfluentProducer:
    """What another team's service writes: framed Avro, no headers, murmur2 keys."""

    def __init__(self, d):
        self.d, self.c, self.ser = d, d.client(), {}

    def send(self, name, data):
        from confluent_kafka.serialization import MessageField, SerializationContext
        if name not in self.ser:
            self.ser[name] = serializer(name)
        topic = self.d.topic(olclient.topic_of(name))
        value = self.ser[name](data, SerializationContext(topic, MessageField.VALUE))
        assert value[0] == 0
        self.c.producer.produce(topic, key=olclient.key_of(name, data).encode(), value=value,
                                on_delivery=self.c._report)

    def send_raw(self, name, key, value):
        self.c.producer.produce(self.d.topic(olclient.topic_of(name)), key=key.encode(), value=value,
                                on_delivery=self.c._report)

    def flush(self):
        return self.c.flush()


def deserialize(records):
    """(name, data) of each framed record, read by confluent-kafka's AvroDeserializer."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    de = AvroDeserializer(SchemaRegistryClient({"url": REGISTRY}))
    out = []
    for r in records:
        assert r.value[0] == 0, f"{r}: not framed"
        sid = int.from_bytes(r.value[1:5], "big")
        assert r.h["ce_dataschema"].endswith(f"/schemas/ids/{sid}"), r.h
        assert r.h["ce_type"].startswith("orderlog.") and r.h.get("ce_id"), r.h
        out.append((r.h["ce_type"][len("orderlog."):],
                    de(r.value, SerializationContext(r.topic, MessageField.VALUE))))
    return out


def scenario(p, now):
    p.send("SkuSynced", dict(sku=SKU, platform="shop", title="Framed", price=1000, currency="CNY", stock=2,
                             version=1, updated_at=now))
    p.send("PurchasePolicySet", dict(sku=SKU, min_level=0, default_limit=5, level_limits=[], set_at=now))
    p.flush()
    for i, qty in ((1, 2), (2, 1)):  # the first takes the stock, the second finds none
        p.send("BuyRequested", dict(request_id=f"cf-r{i}", session_id="s", client_ip="192.0.2.9",
                                    user_id=f"cf-u{i}", user_level=1, sku=SKU, quantity=qty,
                                    requested_at=olclient.now_ms(), channel="it"))
    p.send("OrderPlaced", dict(order_id="CF-O1", user_id="cf-u9", source="external",
                               lines=[dict(sku=SKU, quantity=1, unit_price=1000)], total_amount=1000,
                               currency="CNY", placed_at=now))
    p.flush()


def test_confluent_producer_projected_and_decided_and_read_back_framed(deployment):
    d = deployment("cf")
    register(d)
    now = olclient.now_ms()
    p = ConfluentProducer(d)
    scenario(p, now)
    # an id the registry never gave, on a well placed key
    p.send_raw("OrderPlaced", "CF-O2", b"\x00\x7f\xff\xff\xfe" + b"\x02")
    p.flush()

    decide = d.start("decide", "-X", f"registry.url={REGISTRY}", "-X", "event.format=confluent", group="decide")
    reader = d.follower("sale-events", group="reader")
    try:
        reader.until(lambda recs: (d.check_alive(decide) or True) and
                     sum(r.h.get("ce_type") in ("orderlog.BuyAccepted", "orderlog.BuyRejected")
                         for r in recs) >= 2, 60, "2 buy decisions on sale-events")
    finally:
        reader.close()
        d.stop(decide)
    facts = deserialize(d.read_all("sale-events"))
    decided = {x["request_id"]: (n, x.get("reason")) for n, x in facts if n in ("BuyAccepted", "BuyRejected")}
    assert decided == {"cf-r1": ("BuyAccepted", None), "cf-r2": ("BuyRejected", "sold_out")}, facts

    # publish writes framed too
    line = json.dumps(dict(type="OrderPaid", data=dict(order_id="CF-O1", payment_id="pay-1", amount=1000,
                                                       currency="CNY", paid_at=now + 1000)))
    d.run("publish", "-X", f"registry.url={REGISTRY}", "-X", "event.format=confluent", stdin=line + "\n")
    orders = d.read_all("orders")
    paid = [r for r in orders if r.h.get("ce_type") == "orderlog.OrderPaid"]
    assert [x for _, x in deserialize(paid)] and deserialize(paid)[0][1]["payment_id"] == "pay-1"

    # and the gate
    gate = d.start("gate", "-X", "gate.listen=127.0.0.1:0", "-X", "gate.wait.ms=0", "-X", f"registry.url={REGISTRY}",
                   "-X", "event.format=confluent", group="gate")
    try:
        url = d.wait_output(gate, r"gate listening on (http://[0-9.:]+)").group(1)
        body = json.dumps(dict(sessionID="s-g", clientIP="192.0.2.10", userID="cf-g1", userLevel=1,
                               goodsSKU=SKU, goodsQuantity=1, requestID="cf-gate-1")).encode()
        req = urllib.request.Request(url + "/buy", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 202, r.status
    finally:
        d.stop(gate)
    from_gate = [r for r in d.read_all("buy-requests") if r.h.get("ce_source", "").endswith("/gate")]
    got = deserialize(from_gate)
    assert [(n, x["request_id"], x["quantity"]) for n, x in got] == [("BuyRequested", "cf-gate-1", 1)], got

    # projected: the foreign records and orderlog's framed ones
    d.run("project", "--until-end", "-X", f"registry.url={REGISTRY}", group="project", timeout=120)
    rows = d.rows("select order_id, status, source, total_amount from orderlog.orders order by order_id")
    assert rows == [dict(order_id="CF-O1", status="paid", source="external", total_amount=1000)], rows
    dlq = d.read_all("dlq")
    assert [(r.h.get("dlq_topic"), r.key) for r in dlq] == [(d.topic("orders"), b"CF-O2")], dlq
    err = dlq[0].h.get("dlq_error", "")
    assert err.startswith("Confluent wire format, schema id 2147483646: ") and "knows no such id" in err, err


class RegistryLink:
    """A TCP relay to the registry on a port of its own: cut, the registry is
    away for whoever talks through it (connection refused), as when it is
    stopped, without stopping the registry other tests share."""

    def __init__(self):
        import socket
        from urllib.parse import urlsplit
        u = urlsplit(REGISTRY)
        self.target = (u.hostname, u.port or 80)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}{u.path}"
        self.server = None

    def up(self):
        import socket
        import threading
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(16)
        srv = self.server

        def pipe(a, b):
            try:
                while True:
                    buf = a.recv(65536)
                    if not buf:
                        break
                    b.sendall(buf)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def accept():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                t = socket.create_connection(self.target)
                threading.Thread(target=pipe, args=(c, t), daemon=True).start()
                threading.Thread(target=pipe, args=(t, c), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def down(self):
        import socket
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept: nothing more relayed
        except OSError:
            pass
        self.server.close()


def test_registry_away_mid_run_records_wait_then_go_on(deployment):
    d = deployment("cfout")
    register(d)
    now = olclient.now_ms()
    link = RegistryLink()
    link.up()
    p = ConfluentProducer(d)
    p.send("OrderPlaced", dict(order_id="CF-W1", user_id="cf-u1", source="external",
                               lines=[dict(sku=SKU, quantity=1, unit_price=500)], total_amount=500,
                               currency="CNY", placed_at=now))
    p.flush()
    proj = d.start("project", "-X", f"registry.url={link.url}", "-X", "consumer.retry.max.ms=500",
                   group="project")
    try:
        def status():
            d.check_alive(proj)
            return [r["status"] for r in d.rows("select status from orderlog.orders where order_id = 'CF-W1'")]

        deadline = time.monotonic() + 60
        while status() != ["placed"]:
            assert time.monotonic() < deadline, "CF-W1 not projected within 60 s"
            time.sleep(0.1)
        # the registry away; a schema project has not seen yet
        link.down()
        p.send("OrderPaid", dict(order_id="CF-W1", payment_id="pay-w", amount=500, currency="CNY",
                                 paid_at=now + 1000))
        p.flush()
        d.wait_output(proj, r"waits \(attempt", timeout=60)
        assert status() == ["placed"]
        assert d.read_all("dlq") == []
        # stopped while it waits: nothing of that batch committed, an error saying so
        rc = d.stop(proj, check=False, timeout=30)
        assert rc != 0 and "stopped while records waited" in d.output(proj), d.output(proj)[-2000:]
        # started while the registry is away: the record waits again
        proj = d.start("project", "-X", f"registry.url={link.url}", "-X", "consumer.retry.max.ms=500",
                       group="project")
        d.wait_output(proj, r"waits \(attempt", timeout=60)
        assert status() == ["placed"]
        link.up()
        deadline = time.monotonic() + 60
        while status() != ["paid"]:
            assert time.monotonic() < deadline, "CF-W1 not paid within 60 s of the registry's return"
            time.sleep(0.1)
    finally:
        if proj.poll() is None:
            d.stop(proj)
        try:
            link.down()
        except OSError:
            pass
    assert d.read_all("dlq") == []
