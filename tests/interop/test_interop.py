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


# ---------------------------------------------------------------------------
# b. a flash sale through orderlog decide, read back with read_committed
# ---------------------------------------------------------------------------

DECISIONS = {"BuyAccepted", "BuyRejected"}
HOLD_OUTCOMES = {"HoldConverted", "HoldReleased", "CheckoutRejected"}


def test_b_flash_sale_decided_and_read_back(deployment):
    d = deployment("b")
    now = olclient.now_ms()
    hot, never = "FS-HOT", "FS-NEVER-SYNCED"
    c = d.client()
    # the catalog first (docs: the catalog before the buys), and a blacklisted user
    c.send("SkuSynced", dict(sku=hot, platform="shop", title="Hot", price=59900, currency="CNY",
                             stock=3, version=7, updated_at=now))
    c.send("PurchasePolicySet", dict(sku=hot, min_level=1, default_limit=2,
                                     level_limits=[dict(level=5, limit=3)], set_at=now), fmt="json")
    c.send("BlacklistChanged", dict(subject_type="user", subject="b-bad", action="add", reason="manual",
                                    until=None, changed_at=now))
    c.flush()

    def buy(rid, user, level, qty, sku=hot, fmt="avro"):
        c.send("BuyRequested", dict(request_id=rid, session_id="s-" + user, client_ip="203.0.113.50",
                                    user_id=user, user_level=level, sku=sku, quantity=qty,
                                    requested_at=olclient.now_ms(), channel="it"), fmt=fmt)

    buy("b-r1", "b-u1", 0, 1)                   # level 0 < min_level 1: level
    buy("b-r2", "b-u2", 2, 2)                   # accepted: 2 of 3
    buy("b-r3", "b-u2", 2, 1, fmt="json")       # 2 + 1 > default_limit 2: limit
    buy("b-r4", "b-u3", 5, 1)                   # level 5 limit 3: accepted, 3 of 3 held
    buy("b-r5", "b-u4", 2, 1, fmt="json")       # nothing left: sold_out
    buy("b-r6", "b-u5", 2, 1, sku=never)        # never synced: unknown_sku
    buy("b-r7", "b-bad", 3, 1)                  # blacklisted user
    ts = olclient.now_ms()
    # after the buys on the same key (same partition, read after them)
    c.send("CheckoutRequested", dict(request_id="b-c1", hold_id="h-b-r2", user_id="b-u2", sku=hot,
                                     requested_at=ts))                             # HoldConverted
    c.send("CheckoutRequested", dict(request_id="b-c2", hold_id="h-b-r4", user_id="b-u2", sku=hot,
                                     requested_at=ts))                             # not_owner
    c.send("CheckoutRequested", dict(request_id="b-c3", hold_id="h-b-nope", user_id="b-u2", sku=hot,
                                     requested_at=ts), fmt="json")                 # unknown_hold
    c.send("HoldCancelled", dict(request_id="b-x1", hold_id="h-b-r4", user_id="b-u3", sku=hot,
                                 requested_at=ts))                                 # HoldReleased
    c.send("CheckoutRequested", dict(request_id="b-c4", hold_id="h-b-r4", user_id="b-u3", sku=hot,
                                     requested_at=ts))                             # released
    c.flush()

    decide = d.start("decide", group="decide")
    reader = d.follower("sale-events", group="reader")
    try:
        def done(recs):
            names = [r.h.get("ce_type") for r in recs]
            d.check_alive(decide)
            return (sum(n in ("orderlog.BuyAccepted", "orderlog.BuyRejected") for n in names) >= 7
                    and sum(n in ("orderlog.HoldConverted", "orderlog.HoldReleased",
                                  "orderlog.CheckoutRejected") for n in names) >= 5)
        reader.until(done, 60, "7 buy decisions and 5 hold outcomes on sale-events")
    finally:
        reader.close()
        d.stop(decide)

    # the whole topic, now that decide is stopped: nothing more, nothing twice
    recs = d.read_all("sale-events")
    facts = []
    for r in recs:
        assert r.h.get("content-type", "application/avro") == "application/avro"
        m = re.fullmatch(r"urn:orderlog:schema:(\w+):([1-9][0-9]*)", r.h["ce_dataschema"])
        assert m and "orderlog." + m.group(1) == r.h["ce_type"], r.h
        name, data = r.decode()                 # the writer schema ce_dataschema names
        assert r.key == data["sku"].encode()
        facts.append((name, data, int(m.group(2))))
    by = {}
    for name, data, _ in facts:
        if name in DECISIONS:
            by.setdefault(data["request_id"], []).append((name, data))
    assert sorted(by) == [f"b-r{i}" for i in range(1, 8)]
    assert all(len(v) == 1 for v in by.values()), {k: len(v) for k, v in by.items()}
    outcome = {k: (v[0][1].get("reason", "accepted"), v[0][1]["quantity"]) for k, v in by.items()}
    assert outcome == {"b-r1": ("level", 1), "b-r2": ("accepted", 2), "b-r3": ("limit", 1),
                       "b-r4": ("accepted", 1), "b-r5": ("sold_out", 1), "b-r6": ("unknown_sku", 1),
                       "b-r7": ("blacklisted", 1)}
    messages = {k: v[0][1].get("message") for k, v in by.items() if v[0][0] == "BuyRejected"}
    assert messages == {"b-r1": "You can not buy this goods!", "b-r3": "You can not buy this goods!",
                        "b-r5": "The goods is sold out!", "b-r6": "The goods is sold out!",
                        "b-r7": "Bad guy! Bye-Bye!"}
    for rid in ("b-r2", "b-r4"):
        acc = by[rid][0][1]
        assert acc["hold_id"] == "h-" + rid and acc["expires_at"] > acc["decided_at"]

    holds = [(n, x) for n, x, _ in facts if n in HOLD_OUTCOMES]
    conv = [x for n, x in holds if n == "HoldConverted"]
    assert [(x["hold_id"], x["order_id"], x["user_id"], x["quantity"]) for x in conv] == \
        [("h-b-r2", "o-h-b-r2", "b-u2", 2)]
    rel = [x for n, x in holds if n == "HoldReleased"]
    assert [(x["hold_id"], x["reason"], x["quantity"]) for x in rel] == [("h-b-r4", "cancelled", 1)]
    rej = {x["request_id"]: (x["hold_id"], x["op"], x["reason"]) for n, x in holds if n == "CheckoutRejected"}
    assert rej == {"b-c2": ("h-b-r4", "checkout", "not_owner"), "b-c3": ("h-b-nope", "checkout", "unknown_hold"),
                   "b-c4": ("h-b-r4", "checkout", "released")}
    # the catalog as the decider applied it (StockChanged version 2 carries the snapshot)
    sc = [(x, v) for n, x, v in facts if n == "StockChanged"]
    assert sc and sc[0][1] == olclient.version_of("StockChanged")
    assert (sc[0][0]["total"], sc[0][0]["version"], sc[0][0]["price"], sc[0][0]["currency"]) == \
        (3, 7, 59900, "CNY")
    pc = [x for n, x, _ in facts if n == "PolicyChanged"]
    assert [(x["min_level"], x["default_limit"], x["level_limits"]) for x in pc] == \
        [(1, 2, [dict(level=5, limit=3)])]
    # the order of the checkout, on orders, on the murmur2 partition of its id
    orders = d.read_all("orders")
    assert [(r.key, r.decode()[0]) for r in orders] == [(b"o-h-b-r2", "OrderPlaced")]
    placed = orders[0].decode()[1]
    assert (placed["source"], placed["user_id"], placed["total_amount"], placed["currency"]) == \
        ("flash_sale", "b-u2", 2 * 59900, "CNY")
    assert placed["lines"] == [dict(sku=hot, quantity=2, unit_price=59900)]
    assert orders[0].partition == murmur2_partition(b"o-h-b-r2", d.partitions("orders"))
    assert d.read_all("dlq") == []


# ---------------------------------------------------------------------------
# c. issue 9, point 1: flash-sale orders paid and shipped by another service,
#    projected from a backlog
# ---------------------------------------------------------------------------

def test_c_flash_sale_orders_paid_and_shipped_from_a_backlog(deployment):
    d = deployment("c")
    n_orders, skus = 36, ["FC-1", "FC-2", "FC-3", "FC-4"]
    price = {s: 1000 * (i + 1) for i, s in enumerate(skus)}
    now = olclient.now_ms()
    c = d.client()
    for s in skus:
        c.send("SkuSynced", dict(sku=s, platform="shop", title=s, price=price[s], currency="CNY",
                                 stock=1000, version=1, updated_at=now))
    c.flush()
    want = {}  # order id -> (user, sku, quantity)
    for i in range(n_orders):
        s, q, user, rid = skus[i % len(skus)], 1 + i % 3, f"c-u{i}", f"c-r{i}"
        c.send("BuyRequested", dict(request_id=rid, session_id="s", client_ip="192.0.2.1", user_id=user,
                                    user_level=1, sku=s, quantity=q, requested_at=olclient.now_ms(),
                                    channel="it"))
        c.send("CheckoutRequested", dict(request_id=f"c-co{i}", hold_id=f"h-{rid}", user_id=user, sku=s,
                                         requested_at=olclient.now_ms()))
        want[f"o-h-{rid}"] = (user, s, q)
    c.flush()

    decide = d.start("decide", group="decide")
    orders = d.follower("orders", group="payments")
    try:
        def all_placed(recs):
            d.check_alive(decide)
            return len({r.key for r in recs if r.h.get("ce_type") == "orderlog.OrderPlaced"}) >= n_orders
        # the payment service sends once it has seen the order (read_committed)
        orders.until(all_placed, 90, f"{n_orders} OrderPlaced on orders")
    finally:
        orders.close()
        d.stop(decide)
    placed = {}
    for r in orders.records:
        name, data = r.decode()
        assert name == "OrderPlaced" and data["source"] == "flash_sale"
        placed[data["order_id"]] = data
    assert set(placed) == set(want)

    # the payment and shipping services: keyed by the order id, murmur2
    pay = d.client()
    for oid, o in placed.items():
        pay.send("OrderPaid", dict(order_id=oid, payment_id="pay-" + oid, amount=o["total_amount"],
                                   currency=o["currency"], paid_at=olclient.now_ms()))
        pay.send("OrderShipped", dict(order_id=oid, carrier="SF", tracking_no="T-" + oid,
                                      shipped_at=olclient.now_ms()), fmt="json")
    delivered = pay.flush()
    assert len(delivered) == 2 * n_orders

    # the projector starts only now, with all of it as a backlog
    d.run("project", "--until-end", group="project", timeout=120)
    rows = {r["order_id"]: r for r in d.rows(
        "select order_id, user_id, source, status, total_amount, paid_amount, payment_id, carrier "
        "from orderlog.orders")}
    assert set(rows) == set(want)
    for oid, (user, s, q) in want.items():
        r = rows[oid]
        assert (r["status"], r["source"], r["user_id"]) == ("shipped", "flash_sale", user), r
        assert r["total_amount"] == q * price[s] and r["paid_amount"] == r["total_amount"], r
        assert (r["payment_id"], r["carrier"]) == ("pay-" + oid, "SF"), r
    assert d.value("select count(*) from orderlog.holds where status = 'converted'") == str(n_orders)
    dlq = d.read_all("dlq")
    assert dlq == [], [(r, r.h.get("dlq_stage"), r.h.get("dlq_error")) for r in dlq[:5]]
    # where they went: each order's events on one partition, the murmur2 one of its id
    n = d.partitions("orders")
    by_key = {r.key: r.partition for r in orders.records}
    for topic, part, off, key in delivered:
        assert part == by_key[key] == murmur2_partition(key, n), (key, part, by_key[key])


# ---------------------------------------------------------------------------
# d. every record orderlog's commands write sits on the murmur2 partition of its key
# ---------------------------------------------------------------------------

def http(method, url, body=None, timeout=30, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={**({"Content-Type": "application/json"} if data else {}),
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_d_every_record_of_orderlogs_commands_on_its_murmur2_partition(deployment):
    d = deployment("d")
    now = olclient.now_ms()
    hot, skus = "D-HOT", [f"SKU-{i:05d}" for i in range(1, 6)]
    # publish: a JSON-lines file
    lines = [dict(type="SkuSynced", data=dict(sku=s, platform="shop", title=s, price=990, currency="CNY",
                                              stock=1000, version=1)) for s in [hot] + skus]
    lines += [
        dict(type="PurchasePolicySet", data=dict(sku=hot, min_level=0, default_limit=0, level_limits=[])),
        dict(type="BlacklistChanged", data=dict(subject_type="ip", subject="203.0.113.1", action="add",
                                                reason="manual", until=None)),
        dict(type="OrderPlaced", data=dict(order_id="ORD-1001", user_id="d-ext", source="external",
                                           lines=[dict(sku=skus[0], quantity=1, unit_price=990)],
                                           total_amount=990, currency="CNY")),
        dict(type="OrderPaid", data=dict(order_id="ORD-1001", payment_id="p1", amount=990, currency="CNY")),
        dict(type="RefundRequested", data=dict(refund_id="RF-1", order_id="ORD-1001", user_id="d-ext",
                                               lines=[], amount=990, currency="CNY", reason="x")),
        dict(type="BuyRequested", data=dict(request_id="d-pub-1", session_id="s", client_ip="192.0.2.9",
                                            user_id="d-pub", user_level=1, sku=skus[1], quantity=1)),
    ]
    path = f"{d.dir}/events.jsonl"
    with open(path, "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in lines)
    d.run("publish", path)

    decide = d.start("decide", group="decide")
    guard = d.start("guard", "-X", "guard.ip.max=5", group="guard")
    # the gate behind a load balancer (played here): the client's address is
    # the X-Forwarded-For the balancer on 127.0.0.1 appends, not the body's clientIP
    gate = d.start("gate", "-X", "gate.listen=127.0.0.1:0", "-X", "gate.wait.ms=20000",
                   "-X", "gate.trusted.proxies=127.0.0.1/32", group="gate")
    try:
        url = d.wait_output(gate, r"gate listening on (http://[0-9.:]+)").group(1)
        # loadgen: simulated shoppers, each request decided once (exit 0)
        d.run("loadgen", "--count", "300", "--skus", "5", "--hot-sku", hot, "--run-id", d.name,
              "--wait-ms", "60000", timeout=120)
        # the gate: a buy and its checkout (decide's OrderPlaced on orders)
        st, ans = http("POST", url + "/buy", dict(sessionID="s1", clientIP="192.0.2.77", userID="d-g1",
                                                  userLevel=3, goodsSKU=hot, goodsQuantity=2,
                                                  requestID="d-gate-1"),
                       headers={"X-Forwarded-For": "192.0.2.77"})
        assert st == 200 and ans["repResult"] is True and ans["holdID"] == "h-d-gate-1", (st, ans)
        st, ans = http("POST", url + "/checkout", dict(userID="d-g1", goodsSKU=hot, holdID="h-d-gate-1"))
        assert st == 200 and ans["orderID"] == "o-h-d-gate-1", (st, ans)
        # a bot: more than guard.ip.max buys from one IP, through the gate
        for i in range(8):
            st, ans = http("POST", url + "/buy", dict(sessionID="bot", clientIP="203.0.113.50",
                                                      userID=f"d-bot{i}", userLevel=1, goodsSKU=skus[i % 5],
                                                      goodsQuantity=1, requestID=f"d-bot-{i}"),
                           headers={"X-Forwarded-For": "203.0.113.50, 198.51.100.66"})
            assert st in (200, 202), (st, ans)
        bl = d.follower("blacklist", group="watch")
        try:
            def banned(recs):
                d.check_alive(decide, guard, gate)
                assert not any(r.key == b"ip:203.0.113.50" for r in recs), "the address the bot forged got banned"
                return any(r.key == b"ip:198.51.100.66" and r.h.get("ce_source") == "orderlog/guard"
                           for r in recs)
            bl.until(banned, 60, "guard's BlacklistChanged for ip:198.51.100.66")
        finally:
            bl.close()
    finally:
        for p in (gate, guard, decide):
            d.stop(p)

    topics = ("buy-requests", "skus", "sale-events", "orders", "blacklist", "after-sales")
    counts = {t: d.partitions(t) for t in topics}
    assert len(set(counts.values())) == 1, counts
    recs = d.read_all(*topics)
    sources, wrong = {}, []
    for r in recs:
        t = r.topic[len(d.prefix):]
        if not r.key:
            wrong.append(f"{r}: no key")
        elif r.partition != murmur2_partition(r.key, counts[t]):
            wrong.append(f"{r} from {r.h.get('ce_source')}: belongs on "
                         f"{murmur2_partition(r.key, counts[t])}")
        name, data = r.decode()
        assert r.key == olclient.key_of(name, data).encode(), r
        sources.setdefault((t, r.h.get("ce_source")), 0)
        sources[(t, r.h["ce_source"])] += 1
    assert wrong == [], wrong[:10]
    # every command wrote some of them
    for pair in [("buy-requests", "orderlog/publish"), ("buy-requests", "orderlog/loadgen"),
                 ("buy-requests", "orderlog/gate"), ("skus", "orderlog/publish"),
                 ("sale-events", "orderlog"), ("orders", "orderlog"), ("orders", "orderlog/publish"),
                 ("blacklist", "orderlog/publish"), ("blacklist", "orderlog/guard"),
                 ("after-sales", "orderlog/publish")]:
        assert sources.get(pair, 0) > 0, (pair, sources)
    assert sources[("buy-requests", "orderlog/loadgen")] == 300
    assert sources[("sale-events", "orderlog")] >= 300 + 1 + 8
    assert len(recs) == sum(sources.values())


# ---------------------------------------------------------------------------
# e. the counter-example: a record placed by librdkafka's default partitioner
#    (consistent_random, CRC32) is dead-lettered, never applied silently
# ---------------------------------------------------------------------------

def crc_misplaced_key(prefix, n):
    """The first key prefix<i> whose CRC32 partition is not its murmur2 one."""
    for i in range(100):
        k = f"{prefix}{i}"
        if crc32_partition(k, n) != murmur2_partition(k, n):
            return k
    raise AssertionError("no such key")


def check_placement_dlq(r, topic, key, crc, mm, group):
    assert r.h.get("dlq_stage") == "placement", r.h
    assert r.h.get("dlq_topic") == topic, r.h
    assert r.h.get("dlq_partition") == str(crc), r.h
    assert r.h.get("dlq_group") == group, r.h
    err = r.h.get("dlq_error", "")
    assert f'"{key}"' in err and f"on partition {crc}" in err and f"belongs on partition {mm}" in err, err
    assert "murmur2" in err, err


def test_e_crc32_placed_records_go_to_the_dlq(deployment):
    d = deployment("e")
    n = d.partitions("skus")
    sku = crc_misplaced_key("E-SKU-", n)
    oid = crc_misplaced_key("E-ORD-", d.partitions("orders"))
    good = "E-GOOD-SKU"
    now = olclient.now_ms()
    # confluent-kafka's defaults: no partitioner set
    naive = d.client(partitioner=None)
    naive.send("SkuSynced", dict(sku=sku, platform="shop", title="misplaced", price=100, currency="CNY",
                                 stock=10, version=1, updated_at=now))
    naive.send("OrderPlaced", dict(order_id=oid, user_id="e-u1", source="external",
                                   lines=[dict(sku=sku, quantity=1, unit_price=100)], total_amount=100,
                                   currency="CNY", placed_at=now))
    got = {key: part for _, part, _, key in naive.flush()}
    assert got == {sku.encode(): crc32_partition(sku, n), oid.encode(): crc32_partition(oid, n)}
    # a well placed SKU and buys of both, after them on the same partitions
    c = d.client()
    c.send("SkuSynced", dict(sku=good, platform="shop", title="fine", price=100, currency="CNY",
                             stock=10, version=1, updated_at=now))
    c.flush()
    for rid, s in (("e-r1", sku), ("e-r2", good)):
        c.send("BuyRequested", dict(request_id=rid, session_id="s", client_ip="192.0.2.5", user_id="e-u1",
                                    user_level=1, sku=s, quantity=1, requested_at=olclient.now_ms(),
                                    channel="it"))
    c.flush()

    decide = d.start("decide", group="decide")
    try:
        f = d.follower("dlq", "sale-events", group="watch")
        try:
            def seen(recs):
                d.check_alive(decide)
                dec = {r.decode()[1]["request_id"] for r in recs
                       if r.h.get("ce_type") in ("orderlog.BuyAccepted", "orderlog.BuyRejected")}
                return {"e-r1", "e-r2"} <= dec and any(r.topic == d.topic("dlq") for r in recs)
            f.until(seen, 60, "the decisions and decide's dlq record")
        finally:
            f.close()
    finally:
        d.stop(decide)
    d.run("project", "--until-end", group="project", timeout=120)

    dlq = d.read_all("dlq")
    by = {(r.key, r.h.get("dlq_group")): r for r in dlq}
    dec_g, proj_g = d.prefix + "decide", d.prefix + "project"
    mm_sku, crc_sku = murmur2_partition(sku, n), crc32_partition(sku, n)
    mm_oid, crc_oid = murmur2_partition(oid, n), crc32_partition(oid, n)
    # decide, reading skus, and project, reading orders (and skus)
    check_placement_dlq(by[(sku.encode(), dec_g)], d.topic("skus"), sku, crc_sku, mm_sku, dec_g)
    check_placement_dlq(by[(oid.encode(), proj_g)], d.topic("orders"), oid, crc_oid, mm_oid, proj_g)
    check_placement_dlq(by[(sku.encode(), proj_g)], d.topic("skus"), sku, crc_sku, mm_sku, proj_g)
    assert set(by) == {(sku.encode(), dec_g), (oid.encode(), proj_g), (sku.encode(), proj_g)}
    # the dlq keeps the original record: key, value and headers
    orig = by[(oid.encode(), proj_g)]
    assert orig.decode() == ("OrderPlaced", dict(order_id=oid, user_id="e-u1", source="external",
                                                 lines=[dict(sku=sku, quantity=1, unit_price=100)],
                                                 total_amount=100, currency="CNY", placed_at=now))
    # nothing of them applied: the misplaced SKU is unknown to the decider, the order not projected
    facts = {}
    for r in d.read_all("sale-events"):
        name, data = r.decode()
        if name in DECISIONS:
            facts[data["request_id"]] = data.get("reason", "accepted")
    assert facts == {"e-r1": "unknown_sku", "e-r2": "accepted"}
    assert d.rows(f"select order_id from orderlog.orders where order_id = '{oid}'") == []
    assert [r["sku"] for r in d.rows("select sku from orderlog.skus")] == [good]
