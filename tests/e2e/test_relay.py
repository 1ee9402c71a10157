#!/usr/bin/env python3
"""End-to-end tests of sealpushd: the real daemon, a real redis-server, real TLS, and frames
built by hand with spwire (an implementation of proto/PROTOCOL.md independent of the C codec).

    test_relay.py --sealpushd BUILD/server/sealpushd --sealpush-ca BUILD/tools/sealpush-ca
    test_relay.py ... -k window        # only tests whose name contains "window"
    test_relay.py ... --list           # names only
    test_relay.py ... --keep           # keep the temp dir (PKI, configs, logs)

Prints TAP: "ok N - name" / "not ok N - name" (with "#" diagnostics and the daemon's log on a
failure), then "1..N"; exits 1 if any test failed. Each test starts its own sealpushd (so
tests are independent) and runs under a time limit. The binaries can also come from the
environment: SEALPUSHD, SEALPUSH_CA, REDIS_SERVER.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import spwire as w  # noqa: E402
from harness import (Client, Daemon, Device, Harness, HandshakeRefused, TestFailure,  # noqa: E402
                     fail, run_tap, try_refused, LOOPBACK)

# The relay under test has a Redis store, so an offline recipient's message is QUEUED (a
# relay without one refuses it with DEVICE_OFFLINE: see the test "without a store").
OFFLINE = w.S_QUEUED

TESTS = []
BENCH = None  # --sealpush-bench


def test(name, timeout=30):
    def deco(fn):
        TESTS.append((name, fn, timeout))
        return fn
    return deco


class T:
    """What a test gets: the harness and shortcuts."""

    def __init__(self, h):
        self.h = h
        self.notes = []
        self.cleanups = []

    def daemon(self, **config):
        return self.h.start_daemon(config)

    def dev(self, name):
        return self.h.pki[name]

    def client(self, d, who, hello=True, **kw):
        """A connected client; with hello, after HELLO/WELCOME. hello may be a dict of HELLO
        fields (and flags)."""
        dev = self.dev(who) if isinstance(who, str) else who
        c = Client(d, dev, **kw)
        c.connect()
        if hello:
            c.hello(**(hello if isinstance(hello, dict) else {}))
        return c

    def note(self, msg):
        self.notes.append(str(msg))

    def eq(self, got, want, what):
        if got != want:
            fail("%s: got %r, want %r" % (what, got, want))

    def check(self, cond, msg):
        if not cond:
            fail(msg)


LOGFMT_PAIR = re.compile(r'\s*([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def parse_logfmt(line):
    """{key: value} of a logfmt line (key=value or key="quoted \\" value"), or None."""
    out = {}
    pos = 0
    line = line.rstrip("\n")
    while pos < len(line):
        m = LOGFMT_PAIR.match(line, pos)
        if not m:
            return None
        v = m.group(2)
        out[m.group(1)] = v[1:-1] if v.startswith('"') else v
        pos = m.end()
        if pos < len(line) and not line[pos].isspace():
            return None
    return out or None


def blob_of(n, seed=0):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def expect_clean_close(c, timeout=5.0, allow=()):
    """The server closes the connection with a TLS close_notify (section 1: "the side that
    closes sends a TLS close_notify alert before closing the socket")."""
    how = c.expect_closed(timeout, allow)
    if how != "close_notify":
        fail("%s: the server closed the connection without close_notify (%s)" % (c.name, how))


def expect_fatal(c, code, frame_type=None, msg_id=None, timeout=5.0):
    """ERROR code with CLOSING, then a clean close."""
    c.expect_error(code, True, frame_type, msg_id, timeout)
    expect_clean_close(c)


def roundtrip(sender, recipient, blob=None, timeout=5.0):
    """sender SENDs to recipient, which gets the DELIVER and ACKs; the sender gets
    DELIVERED. Returns the DELIVER."""
    blob = blob if blob is not None else os.urandom(24)
    mid = sender.send_msg([recipient.device], blob)
    f = recipient.expect(w.DELIVER, timeout, what="DELIVER of %s" % mid.hex()[:8])
    if f["msg_id"] != mid or f["blob"] != blob:
        fail("%s: DELIVER %r, want msg_id %s and the blob sent" % (recipient.name, f, mid.hex()))
    recipient.ack([mid])
    r = sender.collect_results({mid: 1}, timeout)
    if r[mid][0] != w.S_DELIVERED:
        fail("%s -> %s: status %s, want DELIVERED" % (sender.name, recipient.name,
                                                     w.status_name(r[mid][0])))
    return f


class Pair:
    """dave and carol, connected, exchanging messages: the bystanders that must not notice
    what other connections do."""

    def __init__(self, t, d):
        self.dave = t.client(d, "dave")
        self.carol = t.client(d, "carol")
        self.n = 0

    def check(self, when=""):
        self.n += 1
        try:
            roundtrip(self.dave, self.carol)
            roundtrip(self.carol, self.dave)
        except TestFailure as e:
            fail("bystanders (dave <-> carol) %s: %s" % (when, e))


ALERTS = {
    "nocert": ("certificate required", "handshake failure"),
    "wrongca": ("unknown ca", "bad certificate"),
    "expired": ("certificate expired", "bad certificate"),
    "revoked": ("certificate revoked", "bad certificate"),
    "tls12": ("protocol version",),
    "alpn": ("no application protocol",),
}


def expect_refused(t, d, device, kind, alert_required=False, **kw):
    """The server refuses the connection at the TLS layer, before any frame, and stays up.
    If it sends a TLS alert, it must be one of ALERTS[kind]; with alert_required (ALPN: the
    spec names the alert) a bare close is a failure too. (RFC 8446 6.2: a fatal alert is a
    SHOULD, so for certificates a close without one is only noted.)"""
    how, where = try_refused(d, device, **kw)
    norm = how.lower().replace("_", " ")
    want = " or ".join(ALERTS[kind])
    if how.startswith("tls-alert"):
        if not any(a in norm for a in ALERTS[kind]):
            fail("refused with %r (at the %s), want the TLS alert %s" % (how, where, want))
    elif alert_required:
        fail("refused with %r (at the %s), want the TLS alert %s" % (how, where, want))
    else:
        t.note("refused without a TLS alert (%s); a %s alert would tell the device why" % (
            how, want))
    t.note("refused at the %s: %s" % (where, how))
    if not d.alive():
        fail("sealpushd died after refusing the connection")
    t.client(d, "alice")  # and it still accepts a good one


# ---------------------------------------------------------------------------------------
# PKI and mTLS matrix

@test("pki: sealpush-ca prints each device token, equal to SHA-256 of the cert's SPKI")
def _(t):
    for dev in list(t.h.pki.devices.values()) + list(t.h.wrong.devices.values()):
        t.eq(dev.ca_token_hex, dev.token.hex(), "token printed by sealpush-ca for " + dev.name)


@test("mtls: good device cert accepted over TLS 1.3 + ALPN sealpush/1; WELCOME token matches")
def _(t):
    d = t.daemon()
    c = Client(d, t.dev("alice")).connect()
    t.eq(c.tls_version, "TLSv1.3", "TLS version")
    t.eq(c.alpn_selected, w.ALPN_V1, "ALPN protocol selected")
    c.hello()  # checks WELCOME token == SHA-256(SPKI of alice.crt)
    # The server certificate also holds for the address (the client verified it for
    # "localhost" above; now by IP, as a client configured with 127.0.0.1 would).
    c2 = Client(d, t.dev("bob"), server_hostname=LOOPBACK).connect()
    c2.hello()


@test("mtls: no client certificate is refused at the handshake")
def _(t):
    expect_refused(t, t.daemon(), None, "nocert")


@test("mtls: a certificate from another CA is refused")
def _(t):
    expect_refused(t, t.daemon(), t.h.wrong["eve"], "wrongca")


@test("mtls: an expired certificate is refused")
def _(t):
    expect_refused(t, t.daemon(), t.dev("old"), "expired")


@test("mtls: a revoked certificate is refused (crl configured)")
def _(t):
    expect_refused(t, t.daemon(), t.dev("mallory"), "revoked")


@test("mtls: TLS 1.2 is refused")
def _(t):
    expect_refused(t, t.daemon(), t.dev("alice"), "tls12", tls_max=ssl.TLSVersion.TLSv1_2)


@test("mtls: TLS without ALPN is refused with no_application_protocol")
def _(t):
    expect_refused(t, t.daemon(), t.dev("alice"), "alpn", alert_required=True, alpn=None)


@test("mtls: TLS with only unknown ALPN names is refused with no_application_protocol")
def _(t):
    expect_refused(t, t.daemon(), t.dev("alice"), "alpn", alert_required=True,
                   alpn=["sealpush/2", "h2"])


@test("mtls: of several ALPN names offered the server picks sealpush/1")
def _(t):
    d = t.daemon()
    c = Client(d, t.dev("alice"), alpn=["sealpush/2", "sealpush/1", "h2"]).connect()
    t.eq(c.alpn_selected, w.ALPN_V1, "ALPN protocol selected")
    c.hello()


@test("mtls: plain TCP (a HELLO frame in clear) is refused and closed")
def _(t):
    d = t.daemon()
    s = socket.create_connection((LOOPBACK, d.port), timeout=5)
    s.sendall(w.encode(w.HELLO, {"version": 1}))
    got = b""
    deadline = time.monotonic() + 5
    closed = False
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            b = s.recv(4096)
            if not b:
                closed = True
                break
            got += b
    except socket.timeout:
        pass
    except OSError:
        closed = True  # reset
    s.close()
    t.check(closed, "the server kept a plain TCP connection open for 5s (got %r)" % got[:64])
    # Whatever came back must be a TLS alert record (content type 21), never a frame.
    t.check(got == b"" or got[0] == 0x15,
            "the server answered plain TCP with non-TLS bytes: %s" % got[:64].hex())
    t.client(d, "alice")


@test("mtls: a TCP connection that never completes the handshake is closed (handshake timeout)")
def _(t):
    d = t.daemon(handshake_timeout="1s")
    socks = []
    for partial in (b"", bytes.fromhex("16030100c8010000c40303")):  # nothing; a ClientHello start
        s = socket.create_connection((LOOPBACK, d.port), timeout=5)
        s.sendall(partial)
        socks.append((s, partial))
    t0 = time.monotonic()
    for s, partial in socks:
        s.settimeout(max(0.01, 5 - (time.monotonic() - t0)))
        try:
            b = s.recv(4096)
            while b:
                b = s.recv(4096)
        except socket.timeout:
            fail("connection with %d bytes of handshake still open after 5s" % len(partial))
        except OSError:
            pass
        s.close()
    took = time.monotonic() - t0
    t.check(took >= 0.5, "closed after %.2fs, before the 1s handshake timeout" % took)
    t.client(d, "alice")



def _metric(d, series):
    """The value of one sample line of /metrics (0 if absent)."""
    body = d.admin_get("/metrics")[1]
    m = re.search(r"^%s (\S+)$" % re.escape(series), body, re.M)
    return float(m.group(1)) if m else 0.0


@test("admission: --max-handshakes 2 on one worker: 2 handshakes run, the others wait "
      "(counted), a waiting client connects when slots free, waits end by handshake_timeout",
      timeout=60)
def _(t):
    d = t.daemon(workers=1, max_handshakes=2, handshake_timeout="2s")
    # The harness's readiness probe (one TCP connect, closed at once) ends first: accepted (it
    # may still sit in the listen backlog, and would then take a slot from the five below)
    # and gone.
    deadline = time.monotonic() + 5
    while _metric(d, "sealpush_connections_accepted_total") < 1 or \
            _metric(d, 'sealpush_connections{state="handshake"}') > 0:
        if time.monotonic() > deadline:
            fail("handshakes still open before the test began")
        time.sleep(0.05)
    deferred0 = _metric(d, "sealpush_handshakes_deferred_total")
    raw = [socket.create_connection((LOOPBACK, d.port), timeout=5) for _ in range(5)]
    time.sleep(0.5)
    t.eq(_metric(d, "sealpush_handshakes_in_flight"), 2, "handshakes in flight, 5 stalled")
    t.eq(_metric(d, "sealpush_handshakes_waiting"), 3, "connections waiting for a slot")
    t.eq(_metric(d, "sealpush_handshakes_deferred_total") - deferred0, 3,
         "deferred accepts counted")
    t.eq(_metric(d, 'sealpush_limit_hits_total{limit="max_handshakes"}'),
         _metric(d, "sealpush_handshakes_deferred_total"), "max_handshakes limit hits")
    # A real device behind them: it waits, and gets through once the stalled ones go.
    got = {}

    def dial():
        try:
            c = Client(d, t.dev("alice"))
            c.connect(timeout=15)
            c.hello()
            got["c"] = c
        except Exception as e:  # noqa: BLE001 (reported below)
            got["err"] = e
    th = threading.Thread(target=dial)
    th.start()
    time.sleep(0.5)
    t.eq(_metric(d, "sealpush_handshakes_waiting"), 4, "the device waits behind the stalled")
    t.check(_metric(d, "sealpush_handshakes_in_flight") <= 2, "never more than 2 in flight")
    for s in raw:
        s.close()
    th.join(20)
    if "c" not in got:
        fail("the waiting device did not connect: %r" % got.get("err"))
    got["c"].ping()
    t.eq(_metric(d, "sealpush_handshakes_in_flight"), 0, "in flight after all are done")
    t.eq(_metric(d, "sealpush_handshakes_waiting"), 0, "waiting after all are done")
    got["c"].close()
    # Five stalled at once again: each ends within the handshake timeout, either timed out in
    # its handshake or refused after waiting as long for a slot; none is left.
    base_to = _metric(d, 'sealpush_handshake_failures_total{cause="timeout"}')
    raw = [socket.create_connection((LOOPBACK, d.port), timeout=5) for _ in range(5)]
    time.sleep(0.3)
    t.check(_metric(d, "sealpush_handshakes_in_flight") <= 2, "never more than 2 in flight")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if _metric(d, 'sealpush_connections{state="handshake"}') == 0:
            break
        time.sleep(0.2)
    else:
        fail("stalled connections still open 8s after a 2s handshake timeout")
    timed_out = _metric(d, 'sealpush_handshake_failures_total{cause="timeout"}') - base_to
    refused = _metric(d, 'sealpush_connections_refused_total{reason="handshake_wait"}')
    t.note("of 5 stalled: %d timed out in their handshake, %d refused after waiting"
           % (timed_out, refused))
    t.check(timed_out >= 2 and timed_out + refused == 5,
            "5 stalled connections: %d handshake timeouts + %d wait refusals" % (timed_out, refused))
    for s in raw:
        s.close()
    t.client(d, "bob").ping()


# ---------------------------------------------------------------------------------------
# session and frame errors

@test("proto: HELLO with version 2 -> ERROR UNSUPPORTED_VERSION (CLOSING) and close")
def _(t):
    c = t.client(t.daemon(), "alice", hello=False)
    c.send_frame(w.HELLO, {"version": 2})
    expect_fatal(c, w.E_UNSUPPORTED_VERSION, frame_type=w.HELLO)


@test("proto: SEND before HELLO -> ERROR UNEXPECTED_FRAME (CLOSING) and close")
def _(t):
    c = t.client(t.daemon(), "alice", hello=False)
    mid = os.urandom(16)
    c.send_frame(w.SEND, {"msg_id": mid, "recipients": [t.dev("bob").token], "blob": b"x"})
    expect_fatal(c, w.E_UNEXPECTED_FRAME, frame_type=w.SEND)


@test("proto: an unknown frame type before HELLO -> ERROR UNEXPECTED_FRAME (CLOSING)")
def _(t):
    c = t.client(t.daemon(), "alice", hello=False)
    c.send(w.frame(0x42, b""))
    expect_fatal(c, w.E_UNEXPECTED_FRAME, frame_type=0x42)


@test("proto: no HELLO -> ERROR HELLO_TIMEOUT (CLOSING) after --hello-timeout")
def _(t):
    c = t.client(t.daemon(hello_timeout="1s"), "alice", hello=False)
    t0 = time.monotonic()
    c.expect_error(w.E_HELLO_TIMEOUT, True, timeout=5)
    took = time.monotonic() - t0
    t.check(0.7 <= took <= 4.0, "HELLO_TIMEOUT after %.2fs, want about 1s" % took)
    expect_clean_close(c)


@test("proto: a HELLO of exactly 1024 bytes (body) is accepted before WELCOME")
def _(t):
    c = t.client(t.daemon(), "alice", hello=False)
    head = w.encode_body({"version": 1})
    pad = 1024 - len(head) - 1 - 2  # an unknown optional field: id, 2-byte length, value
    body = head + w.field(0x7F, bytes(pad))
    t.eq(len(body), 1024, "body length")
    c.send(w.frame(w.HELLO, body))
    c.expect(w.WELCOME)


@test("proto: a pre-HELLO frame over 1024 bytes -> ERROR FRAME_TOO_LARGE (CLOSING)")
def _(t):
    c = t.client(t.daemon(), "alice", hello=False)
    c.send(w.header(w.HELLO, 0, 1025))  # the header alone: checked before the body arrives
    expect_fatal(c, w.E_FRAME_TOO_LARGE, frame_type=w.HELLO)


@test("proto: a frame over max_frame after WELCOME -> ERROR FRAME_TOO_LARGE (CLOSING); "
      "exactly max_frame is fine")
def _(t):
    d = t.daemon(max_frame=8192, max_blob=4096, max_recipients=100)
    c = t.client(d, "alice")
    t.eq(c.welcome["max_frame"], 8192, "WELCOME max_frame")
    # exactly max_frame: a PING padded with an unknown optional field
    pad = 8192 - 10 - 1 - 2
    body = w.encode_body({"data": b"12345678"}) + w.field(0x7F, bytes(pad))
    t.eq(len(body), 8192, "body length")
    c.send(w.frame(w.PING, body))
    f = c.expect(w.PONG)
    t.eq(f.get("data"), b"12345678", "PONG data")
    c.send(w.header(w.PING, 0, 8193))
    expect_fatal(c, w.E_FRAME_TOO_LARGE, frame_type=w.PING)


@test("proto: garbage bytes after WELCOME -> ERROR (CLOSING) with the decoder's code, close")
def _(t):
    d = t.daemon()
    # 1. text: its "header" claims a huge length (FRAME_TOO_LARGE, checked first).
    garbage = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    v = w.verdict(garbage, 65536)
    t.check(isinstance(v, w.WireError) and v.code == w.E_FRAME_TOO_LARGE, "spwire says %s" % v)
    c = t.client(d, "alice")
    c.send(garbage[:6])  # the header is enough to decide; more would only race the close
    expect_fatal(c, v.code, frame_type=garbage[0])
    # 2. a SEND whose body is not a field sequence (8-byte length form in the first field)
    body = bytes.fromhex("01c0") + blob_of(40, 3)
    g = w.frame(w.SEND, body)
    v = w.verdict(g, 65536)
    t.check(isinstance(v, w.WireError) and v.code == w.E_MALFORMED_FRAME, "spwire says %s" % v)
    c = t.client(d, "alice")
    c.send(g)
    expect_fatal(c, w.E_MALFORMED_FRAME, frame_type=w.SEND)


@test("proto: a SEND with priority 7 -> ERROR BAD_FIELD (CLOSING) with msg_id and frame_type "
      "(section 11)")
def _(t):
    c = t.client(t.daemon(), "alice")
    mid = bytes.fromhex("00112233445566778899aabbccddeeff")
    c.send_frame(w.SEND, {"msg_id": mid, "recipients": [bytes([0xB2]) * 32], "priority": 7,
                          "blob": b""})
    f = c.expect_error(w.E_BAD_FIELD, True, frame_type=w.SEND, msg_id=mid)
    t.note("reason: %r" % f.get("reason"))
    expect_clean_close(c)


def _client_vectors(t):
    """Invalid vectors (proto/vectors/frames.json) of frames a client may send, one per
    (type, error), that a server with the default max_frame 65536 must reject."""
    import json
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "proto", "vectors", "frames.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        vec = json.load(f)
    seen = set()
    out = []
    for v in vec["invalid"]:
        raw = bytes.fromhex(v["hex"])
        ftype = raw[0]
        if v.get("max_frame", 65536) != 65536:
            continue
        if ftype not in (w.HELLO, w.SEND, w.ACK, w.PING, w.PONG, w.ERROR) and \
                v["error"] != "UNKNOWN_FRAME_TYPE":
            continue
        if ftype == w.HELLO and len(raw) - 6 > 1024:
            continue
        key = (ftype, v["error"])
        if key in seen:
            continue
        seen.add(key)
        out.append(v)
    return out


@test("proto: each decoder error of the test vectors is answered with its code over the wire",
      timeout=60)
def _(t):
    vectors = _client_vectors(t)
    if vectors is None:
        t.note("SKIP: proto/vectors/frames.json not found")
        return
    d = t.daemon(max_frame=65536, max_blob=16384, max_recipients=100)
    bad = []
    for v in vectors:
        raw = bytes.fromhex(v["hex"])
        code = w.ERROR_CODES[v["error"]]
        is_hello = raw[0] == w.HELLO
        c = t.client(d, "alice", hello=not is_hello)
        c.send(raw if code != w.E_FRAME_TOO_LARGE else raw[:6])
        try:
            if code == w.E_UNKNOWN_FRAME_TYPE:
                c.expect_error(code, False, frame_type=raw[0])
                c.ping()
            else:
                expect_fatal(c, code, frame_type=raw[0])
        except TestFailure as e:
            bad.append("%s (%s): %s" % (v["name"], v["hex"][:40], e))
        c.close()
    t.note("%d vectors sent" % len(vectors))
    if bad:
        fail("%d of %d vectors not answered as the spec says:\n%s" % (
            len(bad), len(vectors), "\n".join(bad)))


@test("proto: unknown frame type 0x42 -> ERROR UNKNOWN_FRAME_TYPE without CLOSING; "
      "the connection still works")
def _(t):
    d = t.daemon()
    c = t.client(d, "alice")
    bob = t.client(d, "bob")
    c.send(w.frame(0x42, b"\x01\x02\x03"))
    c.expect_error(w.E_UNKNOWN_FRAME_TYPE, False, frame_type=0x42)
    c.ping()
    roundtrip(c, bob)


@test("proto: more than --max-errors unknown frames -> ERROR TOO_MANY_ERRORS (CLOSING)")
def _(t):
    d = t.daemon(max_errors=3)
    c = t.client(d, "alice")
    for i in range(3):
        c.send(w.frame(0x42 + i, b""))
        c.expect_error(w.E_UNKNOWN_FRAME_TYPE, False, frame_type=0x42 + i)
    c.ping()  # 3 errors are within the limit
    c.send(w.frame(0x50, b""))
    f = c.read(5)
    if f.type == w.ERROR and f["code"] == w.E_UNKNOWN_FRAME_TYPE and not f.flags & w.CLOSING:
        t.note("the 4th unknown frame got its own UNKNOWN_FRAME_TYPE first")
        f = c.read(5)
    if not (f.type == w.ERROR and f["code"] == w.E_TOO_MANY_ERRORS and f.flags & w.CLOSING):
        fail("after the 4th unknown frame: got %r, want ERROR TOO_MANY_ERRORS (CLOSING)" % f)
    expect_clean_close(c)


@test("proto: frames of the server's direction (WELCOME, DELIVER, ...) or a second HELLO "
      "-> ERROR UNEXPECTED_FRAME (CLOSING)")
def _(t):
    d = t.daemon()
    tok = t.dev("alice").token
    mid = os.urandom(16)
    frames = [
        (w.WELCOME, {"version": 1, "token": tok, "max_frame": 65536, "max_blob": 16384,
                     "max_recipients": 100, "window": 64, "send_window": 256, "keepalive": 60,
                     "keepalive_min": 10, "keepalive_max": 3600}),
        (w.DELIVER, {"msg_id": mid, "blob": b"x"}),
        (w.SEND_RESULT, {"msg_id": mid, "results": [(0, 0)]}),
        (w.GOAWAY, {"code": w.E_SHUTDOWN}),
        (w.HELLO, {"version": 1}),
    ]
    for ftype, fields in frames:
        c = t.client(d, "alice")
        c.send_frame(ftype, fields)
        try:
            expect_fatal(c, w.E_UNEXPECTED_FRAME, frame_type=ftype)
        except TestFailure as e:
            fail("%s from the client: %s" % (w.type_name(ftype), e))


@test("proto: a truncated frame and then a close cost the server nothing")
def _(t):
    d = t.daemon()
    pair = Pair(t, d)
    full = w.encode(w.SEND, {"msg_id": os.urandom(16), "recipients": [t.dev("carol").token],
                             "blob": blob_of(300)})
    for cut in (3, 6, 40, len(full) - 1):
        c = t.client(d, "alice")
        c.send(full[:cut])
        time.sleep(0.05)
        c.close()
        pair.check("after a frame cut at %d bytes" % cut)
    # before HELLO too
    c = t.client(d, "bob", hello=False)
    c.send(w.encode(w.HELLO, {"version": 1})[:9])
    c.close()
    pair.check("after a truncated HELLO")
    t.check(d.alive(), "sealpushd died")
    t.client(d, "alice")


@test("proto: bad frames on other connections cost nothing to connected clients", timeout=60)
def _(t):
    d = t.daemon(max_frame=8192, max_blob=4096, max_errors=5)
    pair = Pair(t, d)
    pair.check("at the start")
    rnd = random.Random(1)
    mid = os.urandom(16)
    attacks = [
        ("garbage", True, b"\x16\x03\x01garbage" + rnd.randbytes(64)),
        ("oversized header", True, w.header(w.SEND, 0, 1 << 24)),
        ("u32 max length", True, w.header(w.PING, 0, 0xFFFFFFFF)),
        ("malformed field", True, w.frame(w.PING, bytes.fromhex("16c0"))),
        ("critical field", True, w.frame(w.PING, w.field(0x80, b""))),
        ("duplicate field", True, w.frame(w.PING, w.field(0x16, bytes(8)) * 2)),
        ("bad ACK length", True, w.frame(w.ACK, w.field(0x17, bytes(15)))),
        ("missing blob", True, w.frame(w.SEND, w.encode_body({
            "msg_id": mid, "recipients": [t.dev("carol").token]}))),
        ("recipients not a multiple of 32", True, w.frame(w.SEND, w.encode_body({
            "msg_id": mid, "recipients": bytes(33), "blob": b""}))),
        ("unknown types", True, b"".join(w.frame(0xF0, bytes(100)) for _ in range(20))),
        ("DELIVER from a client", True, w.encode(w.DELIVER, {"msg_id": mid, "blob": b""})),
        ("pre-HELLO garbage", False, rnd.randbytes(2000)),
        ("pre-HELLO oversized", False, w.header(w.HELLO, 0, 100000)),
    ]
    for name, after_hello, data in attacks:
        c = t.client(d, "alice", hello=after_hello)
        c.send(data)
        try:
            c.expect_closed(5, allow=(w.ERROR,))
        except TestFailure as e:
            fail("attack %r: %s" % (name, e))
        pair.check("after %s" % name)
    t.check(d.alive(), "sealpushd died")


# ---------------------------------------------------------------------------------------
# messaging

@test("msg: alice -> bob: DELIVER keeps msg_id/blob/priority/collapse_id; DELIVERED after ACK")
def _(t):
    d = t.daemon()
    bob = t.client(d, "bob")
    alice = t.client(d, "alice")
    blob = os.urandom(100)
    mid = alice.send_msg([t.dev("bob")], blob, priority=5, collapse_id=b"inbox", ttl=60)
    f = bob.expect(w.DELIVER)
    t.eq(f["msg_id"], mid, "DELIVER msg_id")
    t.eq(f["blob"], blob, "DELIVER blob")
    t.eq(f.get("priority", 10), 5, "DELIVER priority")
    t.eq(f.get("collapse_id"), b"inbox", "DELIVER collapse_id")
    t.eq(f.known_flags & w.STORED, 0, "DELIVER flag STORED (live delivery)")
    t.eq(sorted(f.fields), ["blob", "collapse_id", "msg_id", "priority"], "DELIVER fields")
    t.eq(f.unknown, [], "DELIVER carries no other field (nothing about the sender)")
    alice.expect_nothing(0.3, "no SEND_RESULT before bob ACKs")
    bob.ack([mid])
    r = alice.collect_results({mid: 1})
    t.eq(w.status_name(r[mid][0]), "DELIVERED", "status")
    # and the other way, default priority
    mid2 = bob.send_msg([t.dev("alice")], b"")
    f = alice.expect(w.DELIVER)
    t.eq((f["msg_id"], f["blob"], f.get("priority", 10)), (mid2, b"", 10), "reply DELIVER")
    alice.ack([mid2])
    t.eq(bob.collect_results({mid2: 1})[mid2][0], w.S_DELIVERED, "reply status")


@test("msg: a SEND to a token that is not connected -> QUEUED")
def _(t):
    d = t.daemon()
    alice = t.client(d, "alice")
    mid = alice.send_msg([os.urandom(32)], b"x")
    t.eq(w.status_name(alice.collect_results({mid: 1})[mid][0]), w.status_name(OFFLINE),
         "status")
    # a known device that is simply not connected
    mid = alice.send_msg([t.dev("bob")], b"x")
    t.eq(w.status_name(alice.collect_results({mid: 1})[mid][0]), w.status_name(OFFLINE),
         "status for bob, not connected")


@test("msg: without a store (redis \"\") a SEND to a device that is not connected -> "
      "DEVICE_OFFLINE, never a silent drop; ttl 0 -> EXPIRED")
def _(t):
    d = t.daemon(redis="")
    alice = t.client(d, "alice")
    mid = alice.send_msg([t.dev("bob")], b"x")
    t.eq(w.status_name(alice.collect_results({mid: 1})[mid][0]), "DEVICE_OFFLINE", "status")
    mid = alice.send_msg([t.dev("bob")], b"x", ttl=0)
    t.eq(w.status_name(alice.collect_results({mid: 1})[mid][0]), "EXPIRED", "status, ttl 0")


@test("msg: fan-out to bob, carol, dave + an offline + a repeated + the zero token")
def _(t):
    d = t.daemon()
    alice = t.client(d, "alice")
    rx = {n: t.client(d, n) for n in ("bob", "carol", "dave")}
    offline = os.urandom(32)
    rcpt = [t.dev("bob").token, t.dev("carol").token, t.dev("dave").token, offline,
            t.dev("bob").token, bytes(32)]
    blob = os.urandom(50)
    mid = alice.send_msg(rcpt, blob)
    for n, c in rx.items():
        f = c.expect(w.DELIVER, what="%s's DELIVER" % n)
        t.eq((f["msg_id"], f["blob"]), (mid, blob), "%s's DELIVER" % n)
    rx["bob"].expect_nothing(0.3, "a single DELIVER for a repeated token")
    for c in rx.values():
        c.ack([mid])
    r = alice.collect_results({mid: len(rcpt)})[mid]
    got = [w.status_name(r[i]) for i in range(len(rcpt))]
    t.eq(got, ["DELIVERED"] * 3 + [w.status_name(OFFLINE), "BAD_DEVICE_TOKEN",
                                   "BAD_DEVICE_TOKEN"], "statuses by recipient index")


@test("msg: a device can send to its own token (same connection receives)")
def _(t):
    d = t.daemon()
    alice = t.client(d, "alice")
    mid = alice.send_msg([t.dev("alice")], b"note to self")
    f = alice.expect(w.DELIVER)
    t.eq(f["msg_id"], mid, "DELIVER msg_id")
    alice.ack([mid])
    t.eq(alice.collect_results({mid: 1})[mid][0], w.S_DELIVERED, "status")


@test("msg: delivery window 2: bob gets only 2 DELIVERs until he ACKs")
def _(t):
    d = t.daemon(window=2, ack_timeout="30s")
    bob = t.client(d, "bob")
    t.eq(bob.welcome["window"], 2, "WELCOME window")
    alice = t.client(d, "alice")
    mids = [alice.send_msg([t.dev("bob")], b"m%d" % i) for i in range(5)]
    got = [bob.expect(w.DELIVER)["msg_id"] for _ in range(2)]
    bob.expect_nothing(0.5, "no 3rd DELIVER while 2 are unacknowledged")
    bob.ack([got[0]])
    got.append(bob.expect(w.DELIVER)["msg_id"])
    bob.expect_nothing(0.3, "no DELIVER beyond the window after one ACK")
    bob.ack(got[1:3])
    got += [bob.expect(w.DELIVER)["msg_id"] for _ in range(2)]
    bob.ack(got[3:])
    t.eq(sorted(got), sorted(mids), "all 5 messages delivered once")
    if got != mids:
        t.note("live messages of one sender were delivered out of order (the spec only "
               "orders stored messages)")
    r = alice.collect_results({m: 1 for m in mids})
    t.eq([r[m][0] for m in mids], [w.S_DELIVERED] * 5, "statuses")


@test("msg: WELCOME window is min(client's wish, server's limit); window 1 holds back")
def _(t):
    d = t.daemon(window=4)
    t.eq(t.client(d, "carol", hello={"window": 100}).welcome["window"], 4, "wish 100, limit 4")
    bob = t.client(d, "bob", hello={"window": 1})
    t.eq(bob.welcome["window"], 1, "wish 1, limit 4")
    alice = t.client(d, "alice")
    m1 = alice.send_msg([t.dev("bob")], b"1")
    m2 = alice.send_msg([t.dev("bob")], b"2")
    t.eq(bob.expect(w.DELIVER)["msg_id"], m1, "first DELIVER")
    bob.expect_nothing(0.5, "nothing while the one-message window is full")
    bob.ack([m1])
    t.eq(bob.expect(w.DELIVER)["msg_id"], m2, "second DELIVER")
    bob.ack([m2])
    alice.collect_results({m1: 1, m2: 1})


@test("msg: WELCOME states the configured limits; keepalive clamped to its bounds")
def _(t):
    d = t.daemon(max_frame=32768, max_blob=8000, max_recipients=50, window=9, send_window=7,
                 keepalive=30, keepalive_min=20, keepalive_max=40)
    want = {"version": 1, "max_frame": 32768, "max_blob": 8000, "max_recipients": 50,
            "window": 9, "send_window": 7, "keepalive": 30, "keepalive_min": 20,
            "keepalive_max": 40}
    f = t.client(d, "alice").welcome
    got = {k: f.get(k) for k in want}
    t.eq(got, want, "WELCOME limits")
    t.check(f["max_frame"] >= f["max_blob"] + 32 * f["max_recipients"] + 128,
            "max_frame must hold a full SEND (5.2): %r" % f)
    t.eq(t.client(d, "bob", hello={"keepalive": 5}).welcome["keepalive"], 20,
         "keepalive wish 5 clamped to keepalive_min")
    t.eq(t.client(d, "carol", hello={"keepalive": 65535}).welcome["keepalive"], 40,
         "keepalive wish 65535 clamped to keepalive_max")
    t.eq(t.client(d, "dave", hello={"keepalive": 25}).welcome["keepalive"], 25,
         "keepalive wish 25 kept")


@test("msg: a blob over max_blob -> PAYLOAD_TOO_LARGE for every recipient, connection stays")
def _(t):
    d = t.daemon(max_blob=1000, max_frame=8192)
    bob = t.client(d, "bob")
    alice = t.client(d, "alice")
    t.eq(alice.welcome["max_blob"], 1000, "WELCOME max_blob")
    mid = alice.send_msg([t.dev("bob"), os.urandom(32)], blob_of(1001))
    r = alice.collect_results({mid: 2})[mid]
    t.eq([w.status_name(r[0]), w.status_name(r[1])], ["PAYLOAD_TOO_LARGE"] * 2, "statuses")
    bob.expect_nothing(0.3, "no DELIVER of a refused message")
    alice.ping()
    roundtrip(alice, bob, blob_of(1000))  # exactly max_blob is fine


@test("msg: more than max_recipients -> TOO_MANY_RECIPIENTS for every recipient")
def _(t):
    d = t.daemon(max_recipients=3)
    alice = t.client(d, "alice")
    bob = t.client(d, "bob")
    mid = alice.send_msg([t.dev("bob")] + [os.urandom(32) for _ in range(3)], b"x")
    r = alice.collect_results({mid: 4})[mid]
    t.eq([w.status_name(r[i]) for i in range(4)], ["TOO_MANY_RECIPIENTS"] * 4, "statuses")
    bob.expect_nothing(0.3, "no DELIVER of a refused message")
    mid = alice.send_msg([os.urandom(32) for _ in range(3)], b"x")
    r = alice.collect_results({mid: 3})[mid]
    t.eq([r[i] for i in range(3)], [OFFLINE] * 3, "3 recipients (the limit) are routed")


@test("msg: ttl 0 to an offline device -> EXPIRED; to a connected one -> DELIVERED")
def _(t):
    d = t.daemon()
    alice = t.client(d, "alice")
    mid = alice.send_msg([os.urandom(32)], b"now or never", ttl=0)
    t.eq(w.status_name(alice.collect_results({mid: 1})[mid][0]), "EXPIRED", "status")
    bob = t.client(d, "bob")
    mid = alice.send_msg([t.dev("bob")], b"now", ttl=0)
    t.eq(bob.expect(w.DELIVER)["msg_id"], mid, "DELIVER")
    bob.ack([mid])
    t.eq(w.status_name(alice.collect_results({mid: 1})[mid][0]), "DELIVERED", "status")


@test("msg: PING -> PONG echoing data; a PING without data gets a PONG without data")
def _(t):
    c = t.client(t.daemon(), "alice")
    c.ping(b"\x00\xff\x10\x20\x30\x40\x50\x60")
    c.ping(None)
    for i in range(3):
        c.send_frame(w.PING, {"data": bytes([i]) * 8})
    for i in range(3):
        t.eq(c.expect(w.PONG).get("data"), bytes([i]) * 8, "PONG %d data" % i)
    c.send_frame(w.PONG, {"data": bytes(8)})  # a PONG that answers no PING is ignored
    c.expect_nothing(0.3)
    c.ping()


@test("msg: an ACK of an id not outstanding on the connection is ignored")
def _(t):
    d = t.daemon(ack_timeout="30s")
    alice = t.client(d, "alice")
    bob = t.client(d, "bob")
    carol = t.client(d, "carol")
    bob.ack([os.urandom(16)])
    bob.expect_nothing(0.3, "nothing after an ACK of an unknown id")
    mid = alice.send_msg([t.dev("carol")], b"for carol")
    t.eq(carol.expect(w.DELIVER)["msg_id"], mid, "carol's DELIVER")
    bob.ack([mid])  # bob never got it: must not count as carol's ACK
    alice.expect_nothing(0.5, "no SEND_RESULT from an ACK by another device")
    bob.ping()
    carol.ack([mid])
    t.eq(alice.collect_results({mid: 1})[mid][0], w.S_DELIVERED, "status after carol's ACK")


@test("msg: no ACK within --ack-timeout -> the recipient is handled as offline")
def _(t):
    d = t.daemon(ack_timeout="1s")
    alice = t.client(d, "alice")
    bob = t.client(d, "bob")
    mid = alice.send_msg([t.dev("bob")], b"x")
    bob.expect(w.DELIVER)
    t0 = time.monotonic()
    r = alice.collect_results({mid: 1}, timeout=6)
    took = time.monotonic() - t0
    t.eq(w.status_name(r[mid][0]), w.status_name(OFFLINE), "status")
    t.check(took >= 0.5, "answered after %.2fs, before the 1s ack timeout" % took)


@test("msg: a recipient that disconnects before ACKing -> the sender gets an answer")
def _(t):
    d = t.daemon(ack_timeout="30s")
    alice = t.client(d, "alice")
    bob = t.client(d, "bob")
    mid = alice.send_msg([t.dev("bob")], b"x")
    bob.expect(w.DELIVER)
    bob.close()
    r = alice.collect_results({mid: 1}, timeout=5)
    t.eq(w.status_name(r[mid][0]), w.status_name(OFFLINE), "status")


@test("msg: a second connection of bob replaces the first (GOAWAY REPLACED, closed)")
def _(t):
    d = t.daemon()
    bob1 = t.client(d, "bob", name="bob#1")
    alice = t.client(d, "alice")
    roundtrip(alice, bob1)
    bob2 = t.client(d, "bob", name="bob#2")
    bob1.expect_goaway(w.E_REPLACED)
    expect_clean_close(bob1)
    roundtrip(alice, bob2)
    t.check(not bob1.reader.dec.pending(), "bob#1 got bytes after its close")


@test("msg: a SEND_ONLY connection of bob does not replace the receiving one nor receive")
def _(t):
    d = t.daemon()
    bob = t.client(d, "bob")
    so1 = t.client(d, "bob", hello={"flags": w.SEND_ONLY}, name="bob/send-only#1")
    so2 = t.client(d, "bob", hello={"flags": w.SEND_ONLY}, name="bob/send-only#2")
    bob.expect_nothing(0.5, "no GOAWAY for the receiving connection")
    alice = t.client(d, "alice")
    roundtrip(alice, bob)
    so1.expect_nothing(0.2, "no DELIVER on a SEND_ONLY connection")
    so2.expect_nothing(0.1, "no DELIVER on a SEND_ONLY connection")
    carol = t.client(d, "carol")
    roundtrip(so1, carol)
    roundtrip(so2, carol)
    # a device connected only SEND_ONLY is not a recipient
    t.client(d, "dave", hello={"flags": w.SEND_ONLY})
    mid = alice.send_msg([t.dev("dave")], b"x")
    t.eq(w.status_name(alice.collect_results({mid: 1})[mid][0]), w.status_name(OFFLINE),
         "status for a device with only a SEND_ONLY connection")


@test("msg: --send-window 2: a third unanswered SEND -> TOO_MANY_REQUESTS with retry_after")
def _(t):
    d = t.daemon(send_window=2, ack_timeout="30s")
    bob = t.client(d, "bob")
    alice = t.client(d, "alice")
    t.eq(alice.welcome["send_window"], 2, "WELCOME send_window")
    m1 = alice.send_msg([t.dev("bob")], b"1")
    m2 = alice.send_msg([t.dev("bob")], b"2")
    bob.expect(w.DELIVER)
    bob.expect(w.DELIVER)
    m3 = alice.send_msg([t.dev("bob")], b"3")
    r = alice.collect_results({m3: 1})
    t.eq(w.status_name(r[m3][0]), "TOO_MANY_REQUESTS", "status of the 3rd SEND")
    t.check("retry_after" in alice.last_result, "TOO_MANY_REQUESTS without retry_after: %r" %
            alice.last_result)
    bob.expect_nothing(0.3, "no DELIVER of the refused SEND")
    bob.ack([m1, m2])
    r = alice.collect_results({m1: 1, m2: 1})
    t.eq([r[m1][0], r[m2][0]], [w.S_DELIVERED] * 2, "statuses")
    roundtrip(alice, bob)  # the window is free again


@test("msg: --send-rate 5: a burst of 40 SENDs gets TOO_MANY_REQUESTS (per connection)")
def _(t):
    d = t.daemon(send_rate=5)
    alice = t.client(d, "alice")
    carol = t.client(d, "carol")
    off = os.urandom(32)
    mids = [os.urandom(16) for _ in range(40)]
    alice.send(b"".join(w.encode(w.SEND, {"msg_id": m, "recipients": [off], "blob": b"x"})
                        for m in mids))
    t0 = time.monotonic()
    frames = []
    got = {}
    while len(got) < len(mids):
        f = alice.expect(w.SEND_RESULT, 10)
        frames.append(f)
        for i, s in f["results"]:
            got[f["msg_id"]] = s
    took = time.monotonic() - t0
    limited = [f for f in frames if f["results"][0][1] == w.S_TOO_MANY_REQUESTS]
    accepted = sum(1 for s in got.values() if s == OFFLINE)
    other = {w.status_name(s) for s in got.values()} - {"TOO_MANY_REQUESTS",
                                                         w.status_name(OFFLINE)}
    t.note("accepted %d, limited %d, in %.2fs" % (accepted, len(limited), took))
    t.check(not other, "unexpected statuses %s" % other)
    t.check(limited, "no TOO_MANY_REQUESTS for 40 SENDs at 5/s")
    t.check(1 <= accepted <= 5 + 5 * (took + 1) + 5,
            "%d of 40 accepted in %.2fs at 5/s" % (accepted, took))
    t.check(all("retry_after" in f for f in limited),
            "TOO_MANY_REQUESTS without retry_after: %r" % [f for f in limited
                                                          if "retry_after" not in f][:1])
    # another connection has its own budget
    ms = [carol.send_msg([off], b"y") for _ in range(3)]
    r = carol.collect_results({m: 1 for m in ms})
    t.eq([r[m][0] for m in ms], [OFFLINE] * 3, "carol's statuses")
    time.sleep(1.5)
    m = alice.send_msg([off], b"later")
    t.eq(w.status_name(alice.collect_results({m: 1})[m][0]), w.status_name(OFFLINE),
         "alice's status after waiting")


@test("msg: slow reader: bob stops reading -> disconnected at the output cap; carol and dave "
      "keep flowing", timeout=90)
def _(t):
    d = t.daemon(output_buffer_max="64k", window=1000, send_window=1000, max_blob=32768,
                 max_frame=65536, ack_timeout="30s")
    bob = t.client(d, "bob", hello={"window": 1000}, rcvbuf=4096)
    pair = Pair(t, d)
    alice = t.client(d, "alice")
    blob = blob_of(32000)
    mids = []
    for batch in range(8):
        data = b""
        for _ in range(20):
            m = os.urandom(16)
            mids.append(m)
            data += w.encode(w.SEND, {"msg_id": m, "recipients": [t.dev("bob").token],
                                      "blob": blob})
        t.check(alice.send(data), "alice could not send: %r" % alice.send_errors[-1:])
        pair.check("during the flood (batch %d)" % batch)
    # Now bob reads: what is buffered, then the end of the connection.
    frames = []
    deadline = time.monotonic() + 20
    how = None
    while time.monotonic() < deadline:
        try:
            frames.append(bob.read(max(0.01, deadline - time.monotonic())))
        except w.Closed as e:
            how = e.how
            break
        except w.FrameTimeout:
            break
    n_deliver = sum(1 for f in frames if f.type == w.DELIVER)
    errors = [f for f in frames if f.type == w.ERROR]
    t.note("bob read %d DELIVERs before the end (%s); errors %r" % (n_deliver, how, errors))
    t.check(how is not None, "bob was not disconnected (read %d DELIVERs of %d, then nothing)" % (
        n_deliver, len(mids)))
    t.check(n_deliver < len(mids), "bob got all %d messages" % len(mids))
    others = [f for f in frames if f.type not in (w.DELIVER, w.ERROR)]
    t.check(not others, "bob got %r" % others[:3])
    for f in errors:
        t.check(f["code"] == w.E_SLOW_CONSUMER and f.flags & w.CLOSING,
                "bob's ERROR %r, want SLOW_CONSUMER (CLOSING)" % f)
    r = alice.collect_results({m: 1 for m in mids}, timeout=20)
    statuses = {w.status_name(r[m][0]) for m in mids}
    # queued for bob until his queue is full (max_queue_bytes), refused beyond
    t.check(statuses <= {w.status_name(OFFLINE), "QUOTA_EXCEEDED"} and
            w.status_name(OFFLINE) in statuses,
            "statuses of the messages bob never ACKed: %r" % statuses)
    pair.check("after bob was disconnected")
    alice.ping()


# ---------------------------------------------------------------------------------------
# lifecycle, admin, limits

@test("life: SIGTERM -> GOAWAY SHUTDOWN to every client, owed results sent, exit 0 in grace")
def _(t):
    d = t.daemon(shutdown_grace="3s", ack_timeout="30s")
    alice = t.client(d, "alice")
    bob = t.client(d, "bob")
    carol = t.client(d, "carol")
    mid = alice.send_msg([t.dev("bob")], b"in flight")
    bob.expect(w.DELIVER)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    early = []  # alice's SEND_RESULT may come before her GOAWAY if bob is closed first
    for c in (alice, bob, carol):
        f = c.expect(w.GOAWAY, 3, what="GOAWAY SHUTDOWN",
                     skip=(w.SEND_RESULT,) if c is alice else ())
        t.eq(w.error_name(f["code"]), "SHUTDOWN", "%s's GOAWAY code" % c.name)
        t.note("%s: %r" % (c.name, f))
    bob.ack([mid])  # still accepted after GOAWAY
    r = alice.collect_results({mid: 1}, timeout=4) if not alice.skipped else None
    if r is None:
        f = alice.skipped[0]
        t.eq(f["msg_id"], mid, "msg_id of the SEND_RESULT before GOAWAY")
        r = {mid: dict(f["results"])}
    t.check(r[mid][0] in (w.S_DELIVERED, OFFLINE),
            "in-flight message got %s, want DELIVERED (or %s)" % (
                w.status_name(r[mid][0]), w.status_name(OFFLINE)))
    t.note("in-flight message: %s" % w.status_name(r[mid][0]))
    for c in (alice, bob, carol):
        how = c.expect_closed(timeout=d.grace + 2)
        t.check(how == "close_notify", "%s closed without close_notify (%s)" % (c.name, how))
    rc = d.wait_exit(max(0.1, d.grace + 1.0 - (time.monotonic() - t0)))
    took = time.monotonic() - t0
    t.check(rc is not None, "sealpushd still running %.1fs after SIGTERM (grace %.1fs)" % (
        took, d.grace))
    t.eq(rc, 0, "exit status after SIGTERM")
    d.stop()  # checks the log for sanitizer reports


@test("life: SIGHUP after revoking a connected device -> GOAWAY CERT_REVOKED for it only; "
      "its new handshakes are refused")
def _(t):
    d = t.daemon()
    name = "hup%d" % int(time.monotonic() * 1000)
    dev = t.h.pki.device(name)
    victim = t.client(d, dev)
    alice = t.client(d, "alice")
    bob = t.client(d, "bob")
    roundtrip(alice, victim)
    t.h.pki.revoke(name)
    d.signal(signal.SIGHUP)
    victim.expect_goaway(w.E_CERT_REVOKED, timeout=5)
    expect_clean_close(victim)
    alice.expect_nothing(0.3, "nothing for alice on reload")
    bob.expect_nothing(0.1, "nothing for bob on reload")
    roundtrip(alice, bob)
    roundtrip(bob, alice)
    expect_refused(t, d, dev, "revoked")
    t.check(d.alive(), "sealpushd died on SIGHUP")
    # a device issued after the start is accepted (same CA) and the reload kept the rest
    t.client(d, t.h.pki.device(name + "b"))


def resumption_case(t, config):
    d = t.daemon(**config)
    name = "res%d" % int(time.monotonic() * 1000)
    dev = t.h.pki.device(name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(t.h.pki.ca_crt)
    ctx.load_cert_chain(dev.crt, dev.key)
    ctx.set_alpn_protocols(["sealpush/1"])

    def connect(session=None):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=5),
                            server_hostname="localhost", session=session)
        s.settimeout(5)
        s.sendall(w.encode(w.HELLO, {"version": 1}))
        hdr = b""
        while len(hdr) < 6:
            chunk = s.recv(6 - len(hdr))
            if not chunk:
                raise w.Closed("closed before WELCOME")
            hdr += chunk
        if hdr[0] != w.WELCOME:
            fail("expected WELCOME, got frame type %d" % hdr[0])
        length = int.from_bytes(hdr[2:6], "big")
        while length:
            length -= len(s.recv(length))
        # a PING round trip over the relay's record layer (after the hand-off)
        s.sendall(w.encode(w.PING, {"data": b"resume!!"}))
        got = b""
        while len(got) < 6 + 10:
            chunk = s.recv(64)
            if not chunk:
                fail("closed instead of PONG")
            got += chunk
        if got[0] != w.PONG or got[-8:] != b"resume!!":
            fail("bad PONG %r" % got)
        return s

    s = connect()
    session = s.session
    s.close()
    for _ in range(2):
        s = connect(session)
        if not s.session_reused:
            fail("the session was not resumed")
        session = s.session
        s.close()
    t.h.pki.revoke(name)
    d.signal(signal.SIGHUP)
    time.sleep(0.5)
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=5),
                            server_hostname="localhost", session=session)
        s.settimeout(5)
        s.sendall(w.encode(w.HELLO, {"version": 1}))
        if s.session_reused:
            fail("a session from before the reload was resumed: ticket keys survived it")
        data = s.recv(64)
        if data and data[0] == w.WELCOME:
            fail("a revoked certificate got WELCOME by resuming a session (reused=%s)"
                 % s.session_reused)
    except (ssl.SSLError, OSError, w.Closed):
        pass
    # The client sees the alert before the relay has counted it: give the relay a moment.
    until = time.monotonic() + 3
    while True:
        st, body = d.admin_get("/metrics")
        m = re.search(r'^sealpush_handshake_failures_total\{cause="revoked"\} (\d+)', body,
                      re.M)
        if (m and int(m.group(1)) >= 1) or time.monotonic() > until:
            break
        time.sleep(0.05)
    if not m or int(m.group(1)) < 1:
        fail("the refused resumption is not counted as a revoked handshake: %r (all: %r)"
             % (m and m.group(0), re.findall(r"^sealpush_handshake_failures_total.*$", body,
                                              re.M)))
    ho = re.search(r"^sealpush_tls_handoffs_total (\d+)", body, re.M)
    if not ho or int(ho.group(1)) < 3:
        fail("resumed sessions were not handed off: %r" % (ho and ho.group(0)))


@test("tls: resumed sessions are handed off too; after SIGHUP revokes a device, its old "
      "session does not let it back in (reload retires the ticket keys)", timeout=60)
def _(t):
    resumption_case(t, {})


@test("tls: tls_session_cache (stateful tickets): sessions resume from the relay's cache, "
      "are handed off, and a reload that revokes a device empties the cache", timeout=60)
def _(t):
    resumption_case(t, {"tls_session_cache": 100})


@test("life: /healthz 200; /readyz 200 with redis, 503 without, 200 again when it returns",
      timeout=60)
def _(t):
    r = t.h.new_redis("redis-readyz").start()
    t.cleanups.append(r.stop)
    d = t.daemon(redis=r.url)
    t.eq(d.admin_get("/healthz")[0], 200, "/healthz")
    t.eq(d.admin_get("/readyz")[0], 200, "/readyz with redis up")
    r.stop()

    def poll(path, want, secs):
        deadline = time.monotonic() + secs
        st = None
        while time.monotonic() < deadline:
            st = d.admin_get(path)[0]
            if st == want:
                return st
            time.sleep(0.1)
        return st

    t.eq(poll("/readyz", 503, 5), 503, "/readyz within 5s of redis stopping")
    t.eq(d.admin_get("/healthz")[0], 200, "/healthz with redis down")
    c = t.client(d, "alice")  # the relay itself goes on
    c.ping()
    r.start()
    t.eq(poll("/readyz", 200, 20), 200, "/readyz within 20s of redis returning")


@test("life: /metrics is Prometheus text, names start with sealpush_, counters move")
def _(t):
    d = t.daemon()

    def scrape():
        st, body = d.admin_get("/metrics")
        if st != 200:
            fail("/metrics: status %s: %s" % (st, body[:200]))
        samples = {}
        for ln in body.splitlines():
            if not ln or ln.startswith("#"):
                continue
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?", ln)
            if not m:
                fail("/metrics: not a Prometheus sample line: %r" % ln)
            if not m.group(1).startswith("sealpush_"):
                fail("/metrics: metric %r does not start with sealpush_" % m.group(1))
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return samples, body

    before, _ = scrape()
    t.check(before, "/metrics has no samples")
    alice = t.client(d, "alice")
    for _ in range(5):
        alice.ping()
    mid = alice.send_msg([os.urandom(32)], b"x")
    alice.collect_results({mid: 1})
    try:
        try_refused(d, None)
    except TestFailure:
        pass
    after, body = scrape()
    delta = {k: after[k] - before.get(k, 0) for k in after}

    def moved(pattern, at_least):
        return [k for k, v in delta.items() if re.search(pattern, k, re.I) and v >= at_least]

    problems = []
    if not moved(r"ping", 5):
        problems.append("no sample about PING frames grew by >= 5")
    if not moved(r"queued", 1):
        problems.append("no sample about QUEUED results grew by >= 1")
    if not moved(r"handshake", 1):
        problems.append("no sample about handshake failures grew by >= 1")
    for dev in t.h.pki.devices.values():
        if dev.token.hex()[:9] in body:
            problems.append("/metrics shows more than 8 hex digits of %s's token" % dev.name)
    if problems:
        fail("; ".join(problems) + "\nchanged: %s" % {k: v for k, v in delta.items() if v})


@test("life: logs are logfmt with ts/level/event and show no token beyond 8 hex digits nor "
      "any blob")
def _(t):
    d = t.daemon(log_level="debug")
    alice = t.client(d, "alice")
    bob = t.client(d, "bob")
    secret = b"PLAINTEXT-CANARY-" + os.urandom(8).hex().encode()
    roundtrip(alice, bob, secret)
    mid = alice.send_msg([t.dev("carol")], secret)
    alice.collect_results({mid: 1})
    alice.close()
    bob.close()
    time.sleep(0.3)
    d.stop()
    log = d.log()
    bad = []
    for ln in log.splitlines():
        kv = parse_logfmt(ln)
        if kv is None or not kv.get("ts") or kv.get("level") not in (
                "debug", "info", "warn", "error") or not kv.get("event"):
            bad.append(ln)
    t.check(not bad, "log lines that are not logfmt with ts, level and event:\n%s" %
            "\n".join(bad[:5]))
    t.check(secret.decode() not in log and secret.hex() not in log, "the log shows a blob")
    for dev in t.h.pki.devices.values():
        t.check(dev.token.hex()[:9] not in log,
                "the log shows more than 8 hex digits of %s's token" % dev.name)


@test("life: --check-config: 0 for a good config, 1 naming an unknown or ill-typed key")
def _(t):
    dd = Daemon(t.h, {})
    dd.build_config()

    def check(extra):
        cfg = dict(dd.config, **extra)
        path = os.path.join(dd.dir, "check.json")
        with open(path, "w") as f:
            import json
            json.dump(cfg, f)
        r = subprocess.run([t.h.sealpushd, "-c", path, "--check-config"], capture_output=True,
                           timeout=20, stdin=subprocess.DEVNULL)
        return r.returncode, r.stderr.decode(errors="replace") + r.stdout.decode(errors="replace")

    rc, out = check({})
    t.eq(rc, 0, "exit status for a good config (%s)" % out.strip()[:300])
    rc, out = check({"no_such_key": 1})
    t.check(rc == 1 and "no_such_key" in out, "unknown key: exit %d, output %r" % (rc, out[:300]))
    rc, out = check({"workers": "many"})
    t.check(rc == 1 and "workers" in out, "ill-typed key: exit %d, output %r" % (rc, out[:300]))


@test("life: deploy/sealpushd.example.json lists every option, in the daemon's own order")
def _(t):
    import json
    dd = Daemon(t.h, {})
    dd.build_config()
    path = os.path.join(dd.dir, "check.json")
    with open(path, "w") as f:
        json.dump(dd.config, f)
    r = subprocess.run([t.h.sealpushd, "-c", path, "--check-config"], capture_output=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    t.eq(r.returncode, 0, "--check-config exit status")
    dump = json.loads(r.stdout.decode())
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy",
                           "sealpushd.example.json")
    with open(example) as f:
        ex = json.load(f)
    t.eq(list(ex.keys()), list(dump.keys()), "keys of the example against the daemon's dump")


@test("life: --max-connections 3: a 4th connection is refused cleanly, a slot frees on close")
def _(t):
    d = t.daemon(max_connections=3)
    cs = [t.client(d, n) for n in ("alice", "bob", "carol")]
    c4 = Client(d, t.dev("dave"))
    try:
        c4.connect(timeout=5)
    except HandshakeRefused as e:
        if "timed out" in e.how or "timeout" in e.how:
            fail("a 4th connection hangs in the TLS handshake instead of being refused")
        t.note("4th connection refused in the handshake: %s" % e.how)
    else:
        c4.send_frame(w.HELLO, {"version": 1})
        try:
            f = c4.read(5)
        except w.Closed as e:
            t.note("4th connection closed after the handshake: %s" % e.how)
        except w.FrameTimeout:
            fail("a 4th connection was neither answered nor closed within 5s")
        else:
            if f.type == w.WELCOME:
                fail("a 4th connection got WELCOME with --max-connections 3")
            t.note("4th connection got %r" % f)
            c4.expect_closed(5)
    for c in cs:
        c.ping()
    cs[0].close()
    deadline = time.monotonic() + 5
    while True:
        try:
            t.client(d, "dave")
            break
        except (TestFailure, OSError, w.Closed, Exception) as e:
            if time.monotonic() > deadline:
                fail("no connection accepted 5s after one of 3 closed: %r" % e)
            time.sleep(0.2)


@test("life: out of descriptors (EMFILE): new connections are refused and counted, "
      "connected clients keep working, service resumes", timeout=60)
def _(t):
    import resource
    # One worker: with several, a worker whose spare descriptor was taken by another's accept
    # pauses its listener until descriptors free up, so its queued clients wait (by design).
    d = t.daemon(workers=1)
    a = t.client(d, "alice")
    pid = d.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    top = max(int(x) for x in os.listdir("/proc/%d/fd" % pid))
    # No descriptor above the highest one in use: accept() fails once the gaps are used.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (top + 1, hard))
    refused, held = 0, []
    try:
        for i in range(12):
            c = Client(d, t.dev("bob"))
            try:
                c.connect(timeout=5)
                c.send_frame(w.HELLO, {"version": 1}, flags=1)  # SEND_ONLY: no replacing
                f = c.read(5)
                if f.type != w.WELCOME:
                    fail("an unexpected %r while descriptors ran out" % f)
                held.append(c)  # kept open, so its descriptor stays used
            except HandshakeRefused as e:
                if "timed out" in e.how or "timeout" in e.how:
                    fail("a connection hangs while the relay is out of descriptors: %s" % e.how)
                refused += 1
            except w.Closed:
                refused += 1
            except w.FrameTimeout:
                fail("a connection was neither served nor closed within 5s at EMFILE")
        if refused == 0:
            fail("no connection was refused with the descriptor limit at %d" % (top + 1))
        a.ping()  # the connected client is unaffected
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        for c in held:
            c.close()
    # (The admin listener shares the descriptor limit, so it is read afterwards.)
    st, body = d.admin_get("/metrics")
    m = re.search(r'^sealpush_connections_refused_total\{reason="file_descriptors"\} (\d+)',
                  body, re.M)
    if st != 200 or not m or int(m.group(1)) < refused:
        fail("%d refusals at EMFILE, counted: %r" % (refused, m.group(0) if m else body[:200]))
    t.note("%d of 12 connections refused at EMFILE (%d served from free gaps)"
           % (refused, len(held)))
    c = t.client(d, "bob")  # descriptors are back: served again
    c.ping()


@test("tls: every handshake hands its session to the relay's record layer; KeyUpdate from an "
      "OpenSSL client (requested or not) is followed as RFC 8446 4.6.3 says", timeout=60)
def _(t):
    d = t.daemon()
    for n in ("alice", "bob"):
        t.client(d, n).ping()
    if not shutil.which("openssl"):
        fail("the openssl CLI is needed for the KeyUpdate part")
    alice = t.dev("alice")
    for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                  "TLS_CHACHA20_POLY1305_SHA256"):
        # s_client's K sends KeyUpdate(update_requested), k KeyUpdate(update_not_requested);
        # then a text line goes out as data, which the relay answers with an ERROR frame
        # sealed under its updated key (so s_client can only read it if both sides updated).
        p = subprocess.Popen(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % d.port, "-servername",
             "localhost", "-alpn", "sealpush/1", "-cert", alice.crt, "-key", alice.key,
             "-CAfile", t.h.pki.ca_crt, "-ciphersuites", suite, "-msg"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for line in (b"K\n", b"k\n", b"K\n", b"hello\n"):
                time.sleep(0.4)
                p.stdin.write(line)
                p.stdin.flush()
            time.sleep(0.8)
            out = p.communicate(timeout=10)[0].decode("latin-1")  # closes stdin: s_client ends
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        sent = out.count(">>> TLS 1.3, Handshake [length 0005], KeyUpdate")
        got = out.count("<<< TLS 1.3, Handshake [length 0005], KeyUpdate")
        if sent != 3 or got != 2:
            fail("%s: client sent %d KeyUpdates (expected 3), relay answered %d (expected 2, "
                 "one per update_requested)\n%s" % (suite, sent, got, out[-1500:]))
        if "larger than the negotiated max_frame" not in out and "FRAME_TOO_LARGE" not in out \
                and "frame" not in out:
            fail("%s: no ERROR frame readable after the key updates\n%s" % (suite, out[-1500:]))
        if re.search(r"<<< TLS 1.3, Alert", out) and "close_notify" not in out:
            fail("%s: the relay sent an alert other than close_notify\n%s" % (suite, out[-1500:]))
    st, body = d.admin_get("/metrics")
    hs = re.search(r"^sealpush_handshakes_total (\d+)", body, re.M)
    ho = re.search(r"^sealpush_tls_handoffs_total (\d+)", body, re.M)
    errs = re.search(r"^sealpush_tls_record_errors_total (\d+)", body, re.M)
    if not hs or not ho or int(hs.group(1)) != int(ho.group(1)) or int(hs.group(1)) < 5:
        fail("handshakes %s, hand-offs %s: every handshake should be handed off"
             % (hs and hs.group(1), ho and ho.group(1)))
    if not errs or int(errs.group(1)) != 0:
        fail("record errors: %s" % (errs and errs.group(1)))


# --- the offline queue (Redis) ---

def resp_parse(buf, pos=0):
    """One RESP2 value from buf at pos: (value, next pos)."""
    kind, end = buf[pos:pos + 1], buf.index(b"\r\n", pos)
    line = buf[pos + 1:end]
    pos = end + 2
    if kind in (b"+", b"-"):
        return line.decode(), pos
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        n = int(line)
        return (None, pos) if n < 0 else (buf[pos:pos + n], pos + n + 2)
    if kind == b"*":
        items = []
        for _ in range(int(line)):
            v, pos = resp_parse(buf, pos)
            items.append(v)
        return items, pos
    raise ValueError("RESP %r" % buf[pos - 1:pos + 20])


def rcmd(redis, *args):
    return resp_parse(redis.command(*args))[0]


def qkey(dev, part):
    return "sp:{%s}:%s" % (dev.token.hex(), part)


def restart(t, d, **over):
    """Stops d (SIGTERM, drained) and starts a relay with the same config on the same Redis."""
    d.stop()
    cfg = dict(d.user_config)
    cfg.update(over)
    return t.h.start_daemon(cfg, flush=False)


def drain(c, n, timeout=10):
    """The next n DELIVERs of c (no ACK); fails on anything else but PONGs."""
    out = []
    while len(out) < n:
        f = c.expect(w.DELIVER, timeout=timeout)
        out.append(f)
    return out


def build_features(sealpushd):
    """The feature words of this build, from `sealpushd --version` ("... features: pq-tls)")."""
    out = subprocess.run([sealpushd, "--version"], capture_output=True, timeout=10).stdout
    m = re.search(r"features: ([^)]*)\)", out.decode())
    return set(m.group(1).split()) - {"none"} if m else set()


def s_client_handshake(t, d, groups, who="alice"):
    """One openssl s_client handshake offering only `groups`; (ok, output). Never hangs."""
    dev = t.dev(who)
    r = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % d.port, "-servername", "localhost",
         "-alpn", "sealpush/1", "-cert", dev.crt, "-key", dev.key, "-CAfile", t.h.pki.ca_crt,
         "-groups", groups, "-brief"],
        input=b"", capture_output=True, timeout=20)
    out = (r.stdout + r.stderr).decode("latin-1")
    return "CONNECTION ESTABLISHED" in out, out


def group_counts(d):
    st, body = d.admin_get("/metrics")
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^sealpush_handshakes_by_group_total\{group="([^"]+)"\} (\d+)', body, re.M)}


@test("tls: key exchange groups: the relay prefers X25519MLKEM768 where OpenSSL has it, then "
      "X25519, P-256; counted by group; tls_groups restricts it; a client without a common "
      "group fails at once", timeout=90)
def _(t):
    if not shutil.which("openssl"):
        fail("the openssl CLI is needed")
    pq = "pq-tls" in build_features(t.h.sealpushd)
    d = t.daemon()
    before = group_counts(d)
    t.check(set(before) == {"X25519MLKEM768", "X25519", "P-256", "other"},
            "group labels in /metrics: %s" % sorted(before))
    t.client(d, "alice").ping()  # Python's ssl: OpenSSL's default list
    # Among classical groups the relay takes the key share the client sent first (no extra
    # round trip); a client that supports X25519MLKEM768 gets it even if its key share was
    # X25519 (a HelloRetryRequest: the relay's preference is a tuple of its own).
    offers = [("X25519", "X25519"), ("P-256", "P-256"), ("P-256:X25519", "P-256")]
    if pq:
        offers += [("X25519:X25519MLKEM768", "X25519MLKEM768"),
                   ("X25519MLKEM768", "X25519MLKEM768")]
    for offer, _ in offers:
        ok, out = s_client_handshake(t, d, offer)
        t.check(ok, "a client offering %s: no handshake\n%s" % (offer, out[-800:]))
    after = group_counts(d)
    want = {"X25519MLKEM768": 0, "X25519": 0, "P-256": 0, "other": 0}
    want["X25519MLKEM768" if pq else "X25519"] += 1  # the Python client
    for _, got in offers:
        want[got] += 1
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in want}
    t.eq(delta, want, "handshakes by group (pq-tls build: %s)" % pq)
    d.stop()

    # A relay restricted to one group: a client that offers only another fails cleanly.
    only, other = ("X25519MLKEM768", "X25519") if pq else ("P-256", "X25519")
    d2 = t.h.start_daemon({"tls_groups": only})
    t0 = time.monotonic()
    ok, out = s_client_handshake(t, d2, other)
    t.check(not ok and time.monotonic() - t0 < 10,
            "relay with tls_groups %s, client offering %s: %s after %.1f s\n%s" % (
                only, other, "connected" if ok else "refused", time.monotonic() - t0,
                out[-800:]))
    t.check(re.search(r"handshake failure|alert", out, re.I) is not None,
            "the refusal names a TLS alert: %s" % out[-400:])
    ok, out = s_client_handshake(t, d2, only)
    t.check(ok, "relay with tls_groups %s, client offering it: no handshake\n%s" % (
        only, out[-800:]))
    d2.stop()

    # A group this OpenSSL lacks is refused at start-up, with a message naming the setting.
    if not pq:
        dd = Daemon(t.h, {"tls_groups": "X25519MLKEM768"})
        dd.build_config()
        r = subprocess.run([t.h.sealpushd, "-c", dd.cfg_path, "--check-config"],
                           capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
        err = r.stderr.decode(errors="replace")
        t.check(r.returncode == 1 and "tls_groups" in err,
                "tls_groups X25519MLKEM768 on a build without it: exit %d, %r" % (
                    r.returncode, err[:300]))


@test("queue: messages for an offline device survive a relay restart and arrive in order, "
      "once, flagged STORED; ACKed ones leave Redis, unACKed ones come back", timeout=60)
def _(t):
    d = t.daemon()
    alice = t.client(d, "alice")
    bob = t.dev("bob")
    mids = [alice.send_msg([bob], b"m%d" % i, collapse_id=b"c%d" % i if i == 2 else None)
            if i == 2 else alice.send_msg([bob], b"m%d" % i) for i in range(5)]
    r = alice.collect_results({m: 1 for m in mids})
    t.eq([w.status_name(r[m][0]) for m in mids], ["QUEUED"] * 5, "statuses while offline")
    d = restart(t, d)
    b = t.client(d, "bob")
    fs = drain(b, 5)
    t.eq([f["msg_id"] for f in fs], mids, "stored messages in the order they were sent")
    t.eq([f["blob"] for f in fs], [b"m%d" % i for i in range(5)], "blobs")
    t.check(all(f.flags & w.STORED for f in fs), "every DELIVER from the queue is STORED")
    t.eq(fs[2].get("collapse_id"), b"c2", "collapse id kept")
    b.ack(mids[:3])
    b.ping()
    t.eq(rcmd(t.h.redis, "ZCARD", qkey(bob, "q")), 2, "two unACKed messages left in Redis")
    b.close()
    b = t.client(d, "bob")
    fs = drain(b, 2)
    t.eq([f["msg_id"] for f in fs], mids[3:], "the unACKed ones come again, in order")
    b.ack(mids[3:])
    b.expect_nothing(0.5, "nothing else for bob")
    t.eq(rcmd(t.h.redis, "ZCARD", qkey(bob, "q")), 0, "queue empty after every ACK")


@test("queue: a retried SEND (same msg_id) is stored once and answered QUEUED again; "
      "collapse replaces the older; short ttls expire; the count cap refuses with "
      "QUOTA_EXCEEDED", timeout=60)
def _(t):
    d = t.daemon(max_queue=3)
    alice = t.client(d, "alice")
    bob = t.dev("bob")
    m1 = alice.send_msg([bob], b"one")
    t.eq(w.status_name(alice.collect_results({m1: 1})[m1][0]), "QUEUED", "first")
    alice.send_msg([bob], b"one", msg_id=m1)
    t.eq(w.status_name(alice.collect_results({m1: 1})[m1][0]), "QUEUED", "retry, same id")
    c1 = alice.send_msg([bob], b"old", collapse_id=b"score")
    c2 = alice.send_msg([bob], b"new", collapse_id=b"score")
    r = alice.collect_results({c1: 1, c2: 1})
    t.eq((w.status_name(r[c1][0]), w.status_name(r[c2][0])), ("QUEUED", "QUEUED"), "collapse")
    e1 = alice.send_msg([bob], b"short", ttl=1)
    t.eq(w.status_name(alice.collect_results({e1: 1})[e1][0]), "QUEUED", "ttl 1")
    time.sleep(1.6)
    f1 = alice.send_msg([bob], b"three")  # the expired one no longer counts
    t.eq(w.status_name(alice.collect_results({f1: 1})[f1][0]), "QUEUED", "third")
    f2 = alice.send_msg([bob], b"four")
    t.eq(w.status_name(alice.collect_results({f2: 1})[f2][0]), "QUOTA_EXCEEDED", "over the cap")
    b = t.client(d, "bob")
    fs = drain(b, 3)
    t.eq([(f["msg_id"], f["blob"]) for f in fs], [(m1, b"one"), (c2, b"new"), (f1, b"three")],
         "delivered: the retried one once, the newer of the collapsed pair, not the expired")
    b.ack([f["msg_id"] for f in fs])
    b.expect_nothing(0.5, "nothing else")


@test("queue: HELLO resume_id drops that message from the queue before the drain (7.4); "
      "queue depth is sampled as devices connect")
def _(t):
    d = t.daemon()
    alice = t.client(d, "alice")
    bob = t.dev("bob")
    ms = [alice.send_msg([bob], b"r%d" % i) for i in range(3)]
    alice.collect_results({m: 1 for m in ms})
    b = t.client(d, "bob", hello={"resume_id": ms[0]})
    fs = drain(b, 2)
    t.eq([f["msg_id"] for f in fs], ms[1:], "the resumed-past message is not delivered again")
    b.ack(ms[1:])
    b.expect_nothing(0.5, "nothing else")
    st, body = d.admin_get("/metrics")
    n = re.search(r"^sealpush_queue_depth_samples_total (\d+)", body, re.M)
    sm = re.search(r"^sealpush_queue_depth_messages_total (\d+)", body, re.M)
    t.check(n and int(n.group(1)) >= 1 and sm and int(sm.group(1)) >= 2,
            "depth sampled at connect: %r %r" % (n and n.group(0), sm and sm.group(0)))


@test("queue: a live message that arrives while the queue drains comes after the queued ones",
      timeout=60)
def _(t):
    d = t.daemon(drain_page=4, window=2)
    alice = t.client(d, "alice")
    bob = t.dev("bob")
    mids = [alice.send_msg([bob], b"q%d" % i) for i in range(30)]
    r = alice.collect_results({m: 1 for m in mids})
    t.eq({w.status_name(r[m][0]) for m in mids}, {"QUEUED"}, "queued")
    b = t.client(d, "bob")
    first = b.expect(w.DELIVER)  # the drain has started
    live = alice.send_msg([bob], b"live")
    got = [first]
    b.ack([first["msg_id"]])
    while len(got) < 31:
        f = b.expect(w.DELIVER)
        got.append(f)
        b.ack([f["msg_id"]])
    t.eq([f["msg_id"] for f in got], mids + [live], "queued in order, then the live one")
    t.check(not got[-1].flags & w.STORED, "the live one is not flagged STORED")
    t.eq(w.status_name(alice.collect_results({live: 1})[live][0]), "DELIVERED", "live status")


@test("queue: Redis holds only what the protocol needs (sealed blob, id, expiry, priority, "
      "collapse id): no sender identity, and every key expires", timeout=60)
def _(t):
    d = t.daemon()
    alice = t.client(d, "alice")
    carol = t.client(d, "carol")
    bob = t.dev("bob")
    marker = b"SEALED-" + os.urandom(8).hex().encode()
    ms = [alice.send_msg([bob], marker + b"-a", collapse_id=b"k", priority=5),
          carol.send_msg([bob], marker + b"-c")]
    alice.collect_results({ms[0]: 1})
    carol.collect_results({ms[1]: 1})
    keys = sorted(k.decode() for k in rcmd(t.h.redis, "KEYS", "*"))
    t.eq(keys, sorted(qkey(bob, p) for p in "ceqms"), "the documented keys, for bob only")
    dump = b""
    for k in keys:
        ttl = rcmd(t.h.redis, "PTTL", k)
        t.check(isinstance(ttl, int) and ttl > 0, "%s has a TTL (got %r)" % (k, ttl))
        kind = rcmd(t.h.redis, "TYPE", k)
        if kind == "hash":
            dump += b"".join(x or b"" for x in rcmd(t.h.redis, "HGETALL", k))
        elif kind == "zset":
            dump += b"".join(x or b"" for x in rcmd(t.h.redis, "ZRANGE", k, 0, -1))
    for who in ("alice", "carol"):
        tok = t.dev(who).token
        t.check(tok not in dump and tok.hex().encode() not in dump and
                tok.hex()[:8].encode() not in dump,
                "%s's token (the sender) appears in Redis" % who)
    t.check(marker in dump, "the blobs are there (as given: the relay never opens them)")
    # Emptied by ACKs, the keys go; the next message, in the same hour, makes them again,
    # and they must get a TTL again too.
    b = t.client(d, "bob")
    fs = drain(b, 2)
    b.ack([f["msg_id"] for f in fs])
    b.close()
    deadline = time.monotonic() + 5
    while rcmd(t.h.redis, "EXISTS", qkey(bob, "q")) and time.monotonic() < deadline:
        time.sleep(0.05)
    t.check(rcmd(t.h.redis, "EXISTS", qkey(bob, "q")) == 0, "the emptied queue key is gone")
    m = alice.send_msg([bob], b"again", collapse_id=b"k2")
    alice.collect_results({m: 1})
    for k in sorted(x.decode() for x in rcmd(t.h.redis, "KEYS", "*")):
        ttl = rcmd(t.h.redis, "PTTL", k)
        t.check(isinstance(ttl, int) and ttl > 0, "re-created %s has a TTL (got %r)" % (k, ttl))


@test("queue: Redis stopped -> TRY_LATER (and /readyz 503); started again -> the relay "
      "recovers by itself and nothing QUEUED is lost (appendfsync always)", timeout=90)
def _(t):
    r = t.h.new_redis("redis-aof", aof=True).start()
    try:
        d = t.daemon(redis=r.url, store_timeout="500ms")
        alice = t.client(d, "alice")
        bob = t.dev("bob")
        before = [alice.send_msg([bob], b"b%d" % i) for i in range(5)]
        res = alice.collect_results({m: 1 for m in before})
        t.eq({w.status_name(res[m][0]) for m in before}, {"QUEUED"}, "queued while Redis runs")
        r.stop()
        m = alice.send_msg([bob], b"during")
        st = w.status_name(alice.collect_results({m: 1}, timeout=10)[m][0])
        t.eq(st, "TRY_LATER", "status while Redis is down")
        deadline = time.monotonic() + 5
        while d.admin_get("/readyz")[0] != 503:
            if time.monotonic() > deadline:
                fail("/readyz still not 503 5s after Redis stopped")
            time.sleep(0.2)
        r.start()
        deadline = time.monotonic() + 15
        while True:
            m = alice.send_msg([bob], b"after")
            st = w.status_name(alice.collect_results({m: 1}, timeout=10)[m][0])
            if st == "QUEUED":
                break
            if time.monotonic() > deadline:
                fail("still %s 15s after Redis came back" % st)
            time.sleep(0.3)
        b = t.client(d, "bob")
        fs = drain(b, 6)
        t.eq([f["msg_id"] for f in fs], before + [m], "every QUEUED message, in order")
        b.ack([f["msg_id"] for f in fs])
    finally:
        r.stop()


@test("queue: kill -9 of the relay under a stream of SENDs; after a restart every message "
      "whose sender saw QUEUED or DELIVERED is delivered (duplicates allowed)", timeout=90)
def _(t):
    d = t.daemon()
    alice = t.client(d, "alice")
    bob = t.client(d, "bob", auto_pong=True)
    sent, answered = [], {}
    for i in range(300):
        # bob is online for the first half (and never ACKs), offline for the rest
        if i == 150:
            bob.close()
            time.sleep(0.2)
        try:
            sent.append(alice.send_msg([t.dev("bob")], b"s%d" % i))
        except OSError:
            break
        if i == 220:
            d.kill()
            break
    try:
        while True:
            f = alice.read(1.0)
            if f.type == w.SEND_RESULT:
                for idx, st in f["results"]:
                    answered[f["msg_id"]] = st
    except Exception:
        pass
    accepted = [m for m in sent if answered.get(m) in (w.S_QUEUED, w.S_DELIVERED)]
    t.check(len(accepted) > 0, "some messages were accepted before the kill")
    d = restart_after_kill(t, d)
    b = t.client(d, "bob")
    got = set()
    deadline = time.monotonic() + 20
    while not set(accepted) <= got and time.monotonic() < deadline:
        try:
            f = b.expect(w.DELIVER, timeout=2)
        except Exception:
            break
        got.add(f["msg_id"])
        b.ack([f["msg_id"]])
    missing = [m for m in accepted if m not in got]
    if missing:
        fail("%d of %d accepted messages lost after kill -9 (first: %s)"
             % (len(missing), len(accepted), missing[0].hex()))
    t.note("%d sent, %d accepted before kill -9, all delivered after restart"
           % (len(sent), len(accepted)))


def restart_after_kill(t, d):
    cfg = dict(d.user_config)
    return t.h.start_daemon(cfg, flush=False)


def run_bench(t, args, common):
    """Runs sealpush-bench with --json; fails on a non-zero exit; returns the results."""
    p = subprocess.run([BENCH] + args + common, capture_output=True, timeout=90)
    if p.returncode != 0:
        fail("sealpush-bench %s exited %d:\n%s" % (" ".join(args), p.returncode,
                                                   p.stderr.decode(errors="replace")[-2000:]))
    out = json.loads(p.stdout)
    t.note("%s: %s" % (" ".join(args), json.dumps(out["results"])[:300]))
    t.eq(out["params"]["scenario"], args[0], "scenario in the JSON")
    for key in ("nproc", "kernel", "openssl"):
        t.check(key in out["environment"], "environment has %s" % key)
    return out["results"]


@test("bench: sealpush-bench throughput, fanout, queue, idle and handshake run against the "
      "relay and lose nothing", timeout=240)
def _(t):
    if not BENCH:
        fail("--sealpush-bench not given")
    d = t.daemon(send_rate=0, max_queue=10000)
    common = ["--server", "127.0.0.1:%d" % d.port, "--ca-dir", t.h.pki.dir,
              "--sealpush-ca", t.h.sealpush_ca, "--json"]
    r = run_bench(t, ["queue", "--messages", "400", "--devices", "4", "--senders", "2"], common)
    t.eq((r["queued"], r["missing"], r["duplicates"]), (400, 0, 0), "queue: queued, missing, dups")

    r = run_bench(t, ["throughput", "--pairs", "2", "--duration", "1", "--warmup", "0"], common)
    t.check(r["delivered"] > 0 and r["unanswered"] == 0, "throughput: delivered, all answered")
    t.check(r["latency"]["samples"] > 0 and r["latency"]["p50"] > 0, "throughput: latency")

    # Open loop, two processes: the rate is kept and latency is measured.
    r = run_bench(t, ["throughput", "--pairs", "4", "--duration", "2", "--warmup", "0",
                      "--rate", "400", "--processes", "2"], common)
    t.check(300 <= r["delivered_per_s"] <= 500, "open loop near 400/s: %r" % r["delivered_per_s"])
    t.check(r["latency"]["samples"] >= 500, "open loop latency samples")

    # Fanout: every SEND reaches its 3 recipients.
    r = run_bench(t, ["fanout", "--senders", "2", "--recipients", "3", "--duration", "1",
                      "--warmup", "0", "--threads", "2"], common)
    t.eq(r["addressed"], 3 * r["sent"], "fanout: 3 recipients per SEND")
    t.check(r["delivered"] == r["addressed"] and r["unanswered"] == 0,
            "fanout: every recipient delivered and answered: %r" % r)
    t.eq(list(r["status"]), ["DELIVERED"], "fanout statuses")

    # Idle over two processes; the relay's RSS is read through --pid.
    r = run_bench(t, ["idle", "--conns", "40", "--processes", "2", "--settle", "0.5",
                      "--pid", str(d.proc.pid)], common)
    t.check(r["connected"] and r["errors"] == 0, "idle: all connected")
    t.check(r["rss_settled_kib"] > 0 and "kib_per_conn" in r, "idle: RSS read: %r" % r)

    # Handshakes: full, then resumed (with HELLO/WELCOME); the relay counts resumptions.
    r = run_bench(t, ["handshake", "--conns", "4", "--duration", "1", "--warmup", "0"], common)
    t.check(r["full"] > 0 and r["resumed"] == 0 and r["failed"] == 0, "full handshakes: %r" % r)
    t.check(r["latency"]["samples"] == r["full"], "one latency sample per handshake")
    r = run_bench(t, ["handshake", "--conns", "4", "--duration", "1", "--warmup", "0.5",
                      "--resume", "--hello"], common)
    t.check(r["resumed"] > 0 and r["failed"] == 0, "resumed handshakes: %r" % r)
    m = re.search(r"^sealpush_handshakes_resumed_total (\d+)", d.admin_get("/metrics")[1], re.M)
    t.check(m and int(m.group(1)) >= r["resumed"], "relay counted the resumptions")

    # Bad input is refused with a clear error.
    p = subprocess.run([BENCH, "idle", "--rate", "5"] + common, capture_output=True, timeout=10)
    t.eq(p.returncode, 2, "an option of another scenario: exit 2")
    t.check(b"does not apply" in p.stderr, "says why: %r" % p.stderr)


@test("bench: a receiver replaced mid-run is counted and reconnected, the run goes on",
      timeout=90)
def _(t):
    if not BENCH:
        fail("--sealpush-bench not given")
    d = t.daemon(send_rate=0, max_queue=10000)
    common = ["--server", "127.0.0.1:%d" % d.port, "--ca-dir", t.h.pki.dir,
              "--sealpush-ca", t.h.sealpush_ca, "--json"]
    p = subprocess.Popen([BENCH, "throughput", "--pairs", "2", "--duration", "4", "--warmup",
                          "0", "--rate", "200"] + common,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t.cleanups.append(lambda: p.poll() is None and p.kill())
    time.sleep(2.0)  # identities issued, both pairs sending
    crt = os.path.join(t.h.pki.dir, "bench-r0.crt")
    token = w.token_of_cert_file(crt)
    dev = Device("bench-r0", crt, os.path.join(t.h.pki.dir, "bench-r0.key"), token,
                 token.hex())
    thief = t.client(d, dev)  # takes bench-r0's token: the bench's receiver is REPLACED
    f = thief.expect(w.GOAWAY, timeout=5, skip=(w.DELIVER, w.PING))  # the bench takes it back
    t.eq(f["code"], w.E_REPLACED, "the bench's reconnect replaced the thief")
    out, err = p.communicate(timeout=60)
    r = json.loads(out)["results"]
    t.note("replaced run: %s" % json.dumps(r)[:300])
    t.check(r["reconnects"] >= 1, "the bench reconnected: %r" % r)
    t.check(r["errors"] >= 1, "the lost connection is counted as an error")
    t.check(r["delivered"] > 0 and r["sent"] > 0, "the run went on")
    t.eq(p.returncode, 1, "exit 1 after a broken connection")


@test("life: idle for 2 x keepalive -> ERROR IDLE_TIMEOUT (CLOSING); PINGs keep it open",
      timeout=40)
def _(t):
    d = t.daemon(keepalive_min=1, keepalive=1)
    idle = t.client(d, "alice", hello={"keepalive": 1}, auto_pong=False)
    t.eq(idle.welcome["keepalive"], 1, "WELCOME keepalive")
    busy = t.client(d, "bob", hello={"keepalive": 1})
    t0 = time.monotonic()
    checked_early = False
    while time.monotonic() - t0 < 3.5:
        busy.ping()
        if not checked_early and time.monotonic() - t0 > 1.2:
            checked_early = True
            try:
                f = idle.read(0.01)
                while f.type == w.PING:  # the server MAY ping; this client stays silent
                    f = idle.read(0.01)
                fail("idle client got %r after %.1fs, before 2 x keepalive" % (
                    f, time.monotonic() - t0))
            except w.FrameTimeout:
                pass
            except w.Closed as e:
                fail("idle client closed (%s) after %.1fs, before 2 x keepalive" % (
                    e.how, time.monotonic() - t0))
        time.sleep(0.4)
    idle.expect_error(w.E_IDLE_TIMEOUT, True, timeout=3, skip=(w.PING,))
    busy.ping()


# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sealpushd", default=os.environ.get("SEALPUSHD"))
    ap.add_argument("--sealpush-ca", default=os.environ.get("SEALPUSH_CA"))
    ap.add_argument("--sealpush-bench", default=os.environ.get("SEALPUSH_BENCH"))
    ap.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER", "redis-server"))
    ap.add_argument("-k", dest="pattern", help="only tests whose name contains this")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("-v", "--verbose", action="store_true", help="show notes of passing tests")
    args = ap.parse_args()
    tests = [x for x in TESTS if not args.pattern or args.pattern in x[0]]
    if args.list:
        for name, _, _ in tests:
            print(name)
        return 0
    for what, path in (("--sealpushd", args.sealpushd), ("--sealpush-ca", args.sealpush_ca)):
        if not path or not os.access(path, os.X_OK):
            print("Bail out! %s: %r is not an executable" % (what, path))
            return 1
    if not shutil.which(args.redis_server):
        print("Bail out! %s not found (Debian: apt-get install redis-server)" % args.redis_server)
        return 1
    global BENCH
    BENCH = args.sealpush_bench
    h = Harness(args.sealpushd, args.sealpush_ca, args.redis_server, keep=args.keep)

    return run_tap(h, tests, T, verbose=args.verbose, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
