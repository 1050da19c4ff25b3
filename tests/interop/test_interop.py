"""orderlog met by an outside client: a Python service written from docs/events.md
and schemas/*.avsc alone (confluent-kafka + fastavro), against the real broker and
PostgreSQL, next to orderlog's own commands."""

import datetime as dt
import json
import re
import time
import urllib.error
import urllib.request
import uuid

import pytest

import olclient
from olclient import murmur2, murmur2_partition, crc32_partition, signed32

MIN = 60_000


def times_of(name):
    return {f["name"] for f in olclient.raw_schema(name)["fields"] if olclient._is_time(f["type"])}


def parse_time(v):
    """An RFC 3339 string or epoch milliseconds, as epoch milliseconds."""
    if v is None or isinstance(v, int):
        return v
    t = dt.datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    return int(round(t.timestamp() * 1000))


def normal(name, data):
    """An event's data with every time as epoch milliseconds."""
    ts = times_of(name)
    return {k: (parse_time(v) if k in ts else v) for k, v in data.items()}


def sql_ms(v):
    """A timestamptz from json_agg, as epoch milliseconds."""
    return parse_time(v) if v is not None else None


# ---------------------------------------------------------------------------
# Kafka's murmur2 (Utils.murmur2) against its published vectors
# ---------------------------------------------------------------------------

def test_murmur2_matches_kafka_vectors():
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2, and the empty array
    vectors = {b"21": -973932308, b"foobar": -790332482,
               b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
               b"abc": 479470107, b"": 275646681}
    for data, want in vectors.items():
        assert signed32(murmur2(data)) == want, data
    # docs/events.md, worked example over 6 partitions: murmur2 and CRC32 placement
    for key, h, p, crc in [("SKU1", -1063703877, 5, 0), ("ORD-1001", -1078319179, 1, 4),
                           ("o-h-r1", 416283626, 2, 0)]:
        assert signed32(murmur2(key.encode())) == h
        assert murmur2_partition(key, 6) == p
        assert crc32_partition(key, 6) == crc


# ---------------------------------------------------------------------------
# a. every event type, as Avro and as JSON, projected into SQL
# ---------------------------------------------------------------------------

def scenario(t, T):
    """Every event type of the contract once, coherent per key; ids carry the tag t."""
    s1, s2, s3 = f"IT{t}-SKU1", f"IT{t}-SKU2", f"IT{t}-SKU3"
    o1, o2, o3 = f"IT{t}-O1", f"IT{t}-O2", f"IT{t}-O3"
    u = lambda n: f"{t}-u{n}"  # noqa: E731
    ip = "198.51.100.7" if t == "a" else "2001:db8::7"
    ev = [
        # skus
        ("SkuSynced", dict(sku=s1, platform="shop", title=f"Phone 手机 {t}", price=1999, currency="CNY",
                           stock=100, version=3, updated_at=T)),
        ("StockAdjusted", dict(sku=s1, delta=-5, reason="damaged", adjusted_at=T + 1000)),
        ("PurchasePolicySet", dict(sku=s1, min_level=1, default_limit=2,
                                   level_limits=[dict(level=5, limit=4)], set_at=T + 2000)),
        ("SkuSynced", dict(sku=s2, platform="shop", title="Case", price=300, currency="EUR",
                           stock=7, version=1, updated_at=T)),
        ("SkuRemoved", dict(sku=s2, removed_at=T + 3000)),
        # sale-events: the decider's facts about s3
        ("StockChanged", dict(sku=s3, total=10, cause="sync", changed_at=T, version=3, price=1999,
                              currency="CNY")),
        ("PolicyChanged", dict(sku=s3, min_level=1, default_limit=2,
                               level_limits=[dict(level=5, limit=4)], set_at=T)),
        ("BuyAccepted", dict(request_id=f"{t}-r1", hold_id=f"h-{t}-r1", user_id=u(1), sku=s3, quantity=2,
                             expires_at=T + 30 * MIN, decided_at=T + 10)),
        ("BuyAccepted", dict(request_id=f"{t}-r2", hold_id=f"h-{t}-r2", user_id=u(2), sku=s3, quantity=1,
                             expires_at=T + 30 * MIN, decided_at=T + 20)),
        ("BuyRejected", dict(request_id=f"{t}-r3", user_id=u(3), sku=s3, quantity=1, reason="limit",
                             message="You can not buy this goods!", decided_at=T + 30)),
        ("HoldConverted", dict(hold_id=f"h-{t}-r1", order_id=f"o-h-{t}-r1", user_id=u(1), sku=s3,
                               quantity=2, converted_at=T + 40)),
        ("HoldReleased", dict(hold_id=f"h-{t}-r2", user_id=u(2), sku=s3, quantity=1, reason="cancelled",
                              released_at=T + 50)),
        ("CheckoutRejected", dict(request_id=f"{t}-r4", hold_id=f"h-{t}-none", user_id=u(4), sku=s3,
                                  op="checkout", reason="unknown_hold", decided_at=T + 60)),
        # buy-requests: commands (read by decide and guard, not projected)
        ("BuyRequested", dict(request_id=f"{t}-b1", session_id="sess-1", client_ip=ip, user_id=u(5),
                              user_level=3, sku=s3, quantity=1, requested_at=T, channel="python")),
        ("CheckoutRequested", dict(request_id=f"{t}-c1", hold_id=f"h-{t}-b1", user_id=u(5), sku=s3,
                                   requested_at=T + 1)),
        ("HoldCancelled", dict(request_id=f"{t}-x1", hold_id=f"h-{t}-b1", user_id=u(5), sku=s3,
                               requested_at=T + 2)),
        # blacklist
        ("BlacklistChanged", dict(subject_type="ip", subject=ip, action="add", reason="manual",
                                  until=None, changed_at=T)),
        ("BlacklistChanged", dict(subject_type="user", subject=u("bad"), action="add", reason="rate",
                                  until=T + 10 * MIN, changed_at=T)),
        ("BlacklistChanged", dict(subject_type="user", subject=u("gone"), action="add", reason="manual",
                                  until=None, changed_at=T)),
        ("BlacklistChanged", dict(subject_type="user", subject=u("gone"), action="remove", reason="manual",
                                  until=None, changed_at=T + 1000)),
        # orders
        ("OrderPlaced", dict(order_id=o1, user_id=u(1), source="external",
                             lines=[dict(sku=s1, quantity=2, unit_price=1999),
                                    dict(sku=s2, quantity=1, unit_price=500)],
                             total_amount=4498, currency="CNY", placed_at=T)),
        ("OrderPaid", dict(order_id=o1, payment_id=f"pay-{t}-1", amount=4498, currency="CNY",
                           paid_at=T + 1000)),
        ("OrderShipped", dict(order_id=o1, carrier="SF", tracking_no=f"TN-{t}-1", shipped_at=T + 2000)),
        ("OrderSynced", dict(order_id=o2, platform="tmall", shop_id="shop-9", user_id=u(2), status="paid",
                             lines=[dict(sku=s2, quantity=1, unit_price=300)], total_amount=300,
                             currency="EUR", version=2, updated_at=T)),
        ("OrderCancelled", dict(order_id=o2, reason="fraud", cancelled_at=T + 1000)),
        ("OrderPlaced", dict(order_id=o3, user_id=u(3), source="flash_sale",
                             lines=[dict(sku=s3, quantity=1, unit_price=1999)],
                             total_amount=1999, currency="CNY", placed_at=T)),
        # after-sales, keyed by the order id
        ("RefundRequested", dict(refund_id=f"{t}-R1", order_id=o1, user_id=u(1),
                                 lines=[dict(sku=s1, quantity=1, amount=500)], amount=500,
                                 currency="CNY", reason="broken", requested_at=T + 3000)),
        ("RefundApproved", dict(refund_id=f"{t}-R1", order_id=o1, approved_at=T + 4000)),
        ("RefundCompleted", dict(refund_id=f"{t}-R1", order_id=o1, amount=400, completed_at=T + 5000)),
        ("RefundRequested", dict(refund_id=f"{t}-R2", order_id=o1, user_id=u(1),
                                 lines=[dict(sku=s2, quantity=1, amount=100)], amount=100,
                                 currency="CNY", reason="changed mind", requested_at=T + 3000)),
        ("RefundRejected", dict(refund_id=f"{t}-R2", order_id=o1, reason="too late", rejected_at=T + 4000)),
        ("AfterSaleSynced", dict(refund_id=f"{t}-R3", order_id=o3, platform="tmall", status="completed",
                                 lines=[dict(sku=s3, quantity=1, amount=300)], amount=300, currency="CNY",
                                 version=1, updated_at=T + 6000)),
    ]
    return ev


def check_projection(d, t, T):
    s1, s2, s3 = f"IT{t}-SKU1", f"IT{t}-SKU2", f"IT{t}-SKU3"
    o1, o2, o3 = f"IT{t}-O1", f"IT{t}-O2", f"IT{t}-O3"
    u = lambda n: f"{t}-u{n}"  # noqa: E731
    ip = "198.51.100.7" if t == "a" else "2001:db8::7"

    orders = {r["order_id"]: r for r in d.rows(
        f"select * from orderlog.orders where order_id like 'IT{t}-%'")}
    assert set(orders) == {o1, o2, o3}
    r = orders[o1]
    assert (r["status"], r["source"], r["user_id"], r["total_amount"], r["currency"]) == \
        ("shipped", "external", u(1), 4498, "CNY")
    assert (r["paid_amount"], r["payment_id"], sql_ms(r["paid_at"])) == (4498, f"pay-{t}-1", T + 1000)
    assert (r["carrier"], r["tracking_no"], sql_ms(r["shipped_at"])) == ("SF", f"TN-{t}-1", T + 2000)
    assert sql_ms(r["placed_at"]) == T
    assert r["refunded_amount"] == 400          # the completed refund R1, not the rejected R2
    r = orders[o2]
    assert (r["status"], r["source"], r["platform"], r["shop_id"], r["user_id"]) == \
        ("cancelled", "external", "tmall", "shop-9", u(2))
    assert (r["total_amount"], r["currency"], r["paid_amount"], r["version"], r["cancel_reason"]) == \
        (300, "EUR", 0, 2, "fraud")
    assert sql_ms(r["cancelled_at"]) == T + 1000
    r = orders[o3]
    assert (r["status"], r["source"], r["total_amount"], r["paid_amount"], r["refunded_amount"]) == \
        ("placed", "flash_sale", 1999, 0, 300)

    lines = d.rows(f"select order_id, sku, quantity, unit_price from orderlog.order_lines "
                   f"where order_id like 'IT{t}-%' order by order_id, line_no")
    assert [(x["order_id"], x["sku"], x["quantity"], x["unit_price"]) for x in lines] == [
        (o1, s1, 2, 1999), (o1, s2, 1, 500), (o2, s2, 1, 300), (o3, s3, 1, 1999)]

    refunds = {r["refund_id"]: r for r in d.rows(
        f"select * from orderlog.refunds where refund_id like '{t}-R%'")}
    assert set(refunds) == {f"{t}-R1", f"{t}-R2", f"{t}-R3"}
    r = refunds[f"{t}-R1"]
    assert (r["order_id"], r["status"], r["amount"], r["currency"], r["user_id"]) == \
        (o1, "completed", 400, "CNY", u(1))
    assert (sql_ms(r["requested_at"]), sql_ms(r["approved_at"]), sql_ms(r["completed_at"])) == \
        (T + 3000, T + 4000, T + 5000)
    r = refunds[f"{t}-R2"]
    assert (r["status"], r["amount"], r["reject_reason"], sql_ms(r["rejected_at"])) == \
        ("rejected", 100, "too late", T + 4000)
    r = refunds[f"{t}-R3"]
    assert (r["order_id"], r["status"], r["amount"], r["platform"], r["version"]) == \
        (o3, "completed", 300, "tmall", 1)
    assert sql_ms(r["completed_at"]) == T + 6000

    skus = {r["sku"]: r for r in d.rows(f"select * from orderlog.skus where sku like 'IT{t}-%'")}
    assert set(skus) == {s1, s2}
    r = skus[s1]
    assert (r["platform"], r["title"], r["price"], r["currency"], r["version"]) == \
        ("shop", f"Phone 手机 {t}", 1999, "CNY", 3)
    assert r["stock"] == 95                      # 100, then StockAdjusted -5
    assert r["removed_at"] is None
    r = skus[s2]
    assert (r["price"], r["currency"], r["stock"]) == (300, "EUR", 7)
    assert sql_ms(r["removed_at"]) == T + 3000

    inv = d.rows(f"select total, held, sold, available, version from orderlog.inventory where sku = '{s3}'")
    assert inv == [dict(total=10, held=0, sold=2, available=8, version=3)]
    pol = d.rows(f"select sku, min_level, default_limit, level_limits from orderlog.policies "
                 f"where sku like 'IT{t}-%'")
    assert [(p["sku"], p["min_level"], p["default_limit"]) for p in pol] == [(s3, 1, 2)]
    assert pol[0]["level_limits"] == [dict(level=5, limit=4)]
    dec = {r["request_id"]: r for r in d.rows(
        f"select request_id, user_id, outcome, reason, hold_id, quantity from orderlog.buy_decisions "
        f"where sku = '{s3}'")}
    assert {k: (v["outcome"], v["reason"], v["hold_id"], v["quantity"]) for k, v in dec.items()} == {
        f"{t}-r1": ("accepted", None, f"h-{t}-r1", 2),
        f"{t}-r2": ("accepted", None, f"h-{t}-r2", 1),
        f"{t}-r3": ("rejected", "limit", None, 1)}
    holds = {r["hold_id"]: r for r in d.rows(
        f"select hold_id, status, order_id, release_reason, quantity from orderlog.holds where sku = '{s3}'")}
    assert {k: (v["status"], v["order_id"], v["release_reason"], v["quantity"]) for k, v in holds.items()} == {
        f"h-{t}-r1": ("converted", f"o-h-{t}-r1", None, 2),
        f"h-{t}-r2": ("released", None, "cancelled", 1)}
    tot = {r["user_id"]: (r["held"], r["bought"]) for r in d.rows(
        f"select user_id, held, bought from orderlog.user_sku_totals where sku = '{s3}'")}
    assert tot.get(u(1)) == (0, 2) and tot.get(u(2), (0, 0)) == (0, 0)
    rej = d.rows(f"select request_id, hold_id, op, reason from orderlog.checkout_rejections where sku = '{s3}'")
    assert rej == [dict(request_id=f"{t}-r4", hold_id=f"h-{t}-none", op="checkout", reason="unknown_hold")]

    bl = {(r["subject_type"], r["subject"]): r for r in d.rows(
        f"select subject_type, subject, reason, until from orderlog.blacklist "
        f"where subject in ('{ip}', '{u('bad')}', '{u('gone')}')")}
    assert set(bl) == {("ip", ip), ("user", u("bad"))}
    assert (bl[("ip", ip)]["reason"], bl[("ip", ip)]["until"]) == ("manual", None)
    assert (bl[("user", u("bad"))]["reason"], sql_ms(bl[("user", u("bad"))]["until"])) == \
        ("rate", T + 10 * MIN)


def test_a_every_event_type_as_avro_and_json_is_projected(deployment):
    d = deployment("a")
    T = (olclient.now_ms() // 1000) * 1000 - 10 * MIN
    c = d.client()
    sent = {}  # ce_id -> (name, data, fmt)
    for tag, fmt in (("a", "avro"), ("j", "json")):
        ev = scenario(tag, T)
        assert {n for n, _ in ev} == set(olclient.event_names()), "the scenario misses event types"
        for name, data in ev:
            key, value, headers = olclient.encode(name, data, fmt, source="it-interop/a", event_time=T)
            h = dict(headers)
            c.producer.produce(d.topic(olclient.topic_of(name)), key=key, value=value, headers=headers,
                               on_delivery=c._report)
            sent[h["ce_id"]] = (name, data, fmt, key)
    delivered = c.flush()
    assert len(delivered) == len(sent)
    n = d.partitions("orders")
    for topic, part, off, key in delivered:
        assert part == murmur2_partition(key, n), f"{key!r} on {topic}[{part}]"

    # orderlog reads every record the way it was meant: `tail` decodes each one
    seen = {}
    for topic in ("buy-requests", "skus", "sale-events", "blacklist", "orders", "after-sales"):
        r = d.run("tail", topic)
        for line in r.stdout.splitlines():
            j = json.loads(line)
            assert "error" not in j, j
            seen[j["headers"]["ce_id"]] = j
    assert set(seen) == set(sent)
    for ce_id, (name, data, fmt, key) in sent.items():
        j = seen[ce_id]
        assert (j["type"], j["key"], j["schema_version"]) == (name, key.decode(), olclient.version_of(name))
        assert normal(name, j["data"]) == data, (name, fmt)

    # the projection
    d.run("project", "--until-end", group="project", timeout=120)
    for tag in ("a", "j"):
        check_projection(d, tag, T)
    dlq = d.read_all("dlq")
    assert dlq == [], [(r, r.h.get("dlq_error")) for r in dlq]
