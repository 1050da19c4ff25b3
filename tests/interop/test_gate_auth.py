"""The gate's JWT authentication (gate.auth=jwt) met by tokens an outside
library makes: PyJWT signs RS256 and HS256 tokens with the test keys of
tests/fixtures/auth; the BuyRequested the gate writes is read back with
confluent-kafka + fastavro. Skipped when PyJWT (with cryptography, for RS256)
is not installed in the test virtualenv: it is not in requirements.txt
(`.local/py/bin/python -m pip install 'pyjwt[crypto]'` to run it)."""

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request

import pytest

import olclient

jwt = pytest.importorskip("jwt")
pytest.importorskip("cryptography")

FIXTURES = os.path.join(olclient.SOURCE_DIR, "tests", "fixtures", "auth")
ISS, AUD = "https://id.example", "orderlog-gate"


def fixture(name):
    return os.path.join(FIXTURES, name)


def read(name):
    with open(fixture(name), "rb") as f:
        return f.read()


def http(method, url, body=None, token=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def claims(user, level, **over):
    now = int(time.time())
    c = dict(iss=ISS, aud=AUD, sub=user, level=level, iat=now, nbf=now, exp=now + 600)
    c.update(over)
    return c


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256_by_hand(payload, secret):
    """HS256 over any secret, the PEM of a public key included (PyJWT refuses that)."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def buy(rid, **user):
    return dict(sessionID="s1", clientIP="10.0.0.1", goodsSKU="A", goodsQuantity=1, requestID=rid, **user)


def start_gate(d, *opts):
    gate = d.start("gate", "-X", "gate.listen=127.0.0.1:0", "-X", "gate.wait.ms=0",
                   "-X", "gate.auth=jwt", "-X", f"gate.auth.jwt.issuer={ISS}",
                   "-X", f"gate.auth.jwt.audience={AUD}", *opts)
    return gate, d.wait_output(gate, r"gate listening on (http://[0-9.:]+)").group(1)


def buy_requests(d):
    out = {}
    for rec in d.read_all("buy-requests"):
        name, data = rec.decode()
        assert name == "BuyRequested", name
        out[data["request_id"]] = data
    return out


def test_gate_verifies_pyjwt_tokens_rs256_and_hs256(deployment):
    d = deployment("gate_auth")
    gate, url = start_gate(d, "-X", f"gate.auth.jwt.key.file={fixture('rsa.pub.pem')}")
    try:
        priv = read("rsa.key.pem")
        ok = jwt.encode(claims("py-alice", 3), priv, algorithm="RS256")
        st, _, ans = http("POST", url + "/buy", buy("py-rs-1"), ok)
        assert st == 202, (st, ans)
        # another alg with the same key pair, and the classic confusion
        rs512 = jwt.encode(claims("py-alice", 3), priv, algorithm="RS512")
        st, hdrs, ans = http("POST", url + "/buy", buy("py-rs-2"), rs512)
        assert st == 401 and hdrs.get("WWW-Authenticate") == 'Bearer error="invalid_token"', (st, hdrs, ans)
        forged = hs256_by_hand(claims("py-mallory", 9), read("rsa.pub.pem"))
        st, _, ans = http("POST", url + "/buy", buy("py-rs-3"), forged)
        assert st == 401, (st, ans)
        expired = jwt.encode(claims("py-alice", 3, exp=int(time.time()) - 3600), priv, algorithm="RS256")
        st, hdrs, ans = http("POST", url + "/buy", buy("py-rs-4"), expired)
        assert st == 401 and ans["error"] == "token expired", (st, ans)
        assert 'error_description="expired"' in hdrs.get("WWW-Authenticate", ""), hdrs
        st, _, ans = http("POST", url + "/buy", buy("py-rs-5", userID="py-bob"), ok)
        assert st == 403 and ans["field"] == "userID", (st, ans)
    finally:
        d.stop(gate)

    gate, url = start_gate(d, "-X", "gate.auth.jwt.alg=HS256",
                           "-X", f"gate.auth.jwt.key.file={fixture('hmac.secret')}")
    try:
        secret = read("hmac.secret").rstrip(b"\n")
        ok = jwt.encode(claims("py-carol", 1), secret, algorithm="HS256")
        st, _, ans = http("POST", url + "/buy", buy("py-hs-1", userLevel=1), ok)
        assert st == 202, (st, ans)
        rs = jwt.encode(claims("py-carol", 1), read("rsa.key.pem"), algorithm="RS256")
        st, _, ans = http("POST", url + "/buy", buy("py-hs-2"), rs)
        assert st == 401, (st, ans)
    finally:
        d.stop(gate)

    got = buy_requests(d)
    assert set(got) == {"py-rs-1", "py-hs-1"}, sorted(got)
    assert (got["py-rs-1"]["user_id"], got["py-rs-1"]["user_level"]) == ("py-alice", 3)
    assert (got["py-hs-1"]["user_id"], got["py-hs-1"]["user_level"]) == ("py-carol", 1)
