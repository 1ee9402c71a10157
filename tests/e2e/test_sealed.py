#!/usr/bin/env python3
"""End-to-end tests of sealed sender (issue 17, PROTOCOL.md 17): the real sealpushd and
redis-server; the recipient registers its access-key verifier with ACCESS_SET over its mutual
TLS connection; senders connect to the anonymous door (TLS without a client certificate) and
SEND with one access key per recipient, in frames built by spwire.py.

What the relay must not learn is checked where it could have kept it: its log (at debug
level), /metrics, every key of Redis (redis-cli --scan, then DUMP of each) and the relay's
memory (/proc/PID/mem over its heap and anonymous mappings), each searched for the senders'
tokens and certificate fingerprints, with a positive control: an identified sender's token is
found by the same searches.

Needs python3, redis-server and redis-cli.
"""
import argparse
import hashlib
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time

import spwire as w
from harness import LOOPBACK, Client, Harness, HandshakeRefused, client_context, fail, \
    free_port, run_tap

TESTS = []
OPTS = None


def test(name, timeout=120):
    def deco(fn):
        TESTS.append((name, fn, timeout))
        return fn
    return deco


class T:
    def __init__(self, h):
        self.h = h
        self.notes = []
        self.cleanups = []
        self.anon_port = None

    def note(self, msg):
        self.notes.append(msg)

    def eq(self, got, want, what):
        if got != want:
            fail("%s: got %r, want %r" % (what, got, want))

    def relay(self, flush=True, **config):
        self.anon_port = free_port()
        cfg = {"anon_listen": "%s:%d" % (LOOPBACK, self.anon_port)}
        cfg.update(config)
        d = self.h.start_daemon(cfg, flush=flush)
        d.anon_port = self.anon_port
        return d


class AnonClient(Client):
    """A connection to the anonymous door: TLS 1.3, the server verified, no certificate."""

    def __init__(self, daemon, name="anon", session=None, **kw):
        super().__init__(daemon, None, name=name, **kw)
        self.session = session

    def connect(self, timeout=10.0):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(timeout)
        raw.connect((LOOPBACK, self.d.anon_port))
        ctx = getattr(self, "ctx", None) or client_context(None, self.alpn, None,
                                                           self.d.h.pki.ca_crt)
        s = ctx.wrap_socket(raw, server_hostname=self.server_hostname,
                            do_handshake_on_connect=False, suppress_ragged_eofs=False,
                            session=self.session)
        self.sock = s
        try:
            s.do_handshake()
        except (ssl.SSLError, OSError) as e:
            how = w.classify_close(e)
            self.close()
            raise HandshakeRefused(how)
        self.reader = w.FrameReader(s)
        return self

    def hello_anon(self):
        f = self.hello(flags=w.SEND_ONLY)
        if f["token"] != bytes(32):
            fail("%s: anonymous WELCOME token %s, want all zero" % (self.name, f["token"].hex()))
        if not f.get("capabilities", 0) & w.CAP_ANONYMOUS:
            fail("%s: anonymous WELCOME without the ANONYMOUS capability: %r" % (self.name, f))
        return f

    def send_anon(self, recipients, keys, blob=b"sealed", msg_id=None, **fields):
        fields["access_keys"] = list(keys)
        return self.send_msg(recipients, blob=blob, msg_id=msg_id, **fields)


def access_set(c, mode, keys=(), verifiers=None):
    """ACCESS_SET over identified connection c; returns the ACCESS_STATE."""
    mid = os.urandom(16)
    fields = {"msg_id": mid, "anon_mode": mode}
    vs = verifiers if verifiers is not None else [hashlib.sha256(k).digest() for k in keys]
    if vs:
        fields["access_verifiers"] = vs
    c.send_frame(w.ACCESS_SET, fields)
    f = c.expect(w.ACCESS_STATE, what="ACCESS_STATE")
    if f["msg_id"] != mid:
        fail("ACCESS_STATE for another msg_id: %r" % f)
    return f


def receiver(t, d, dev):
    c = Client(d, dev, name=dev.name)
    c.connect_hello()
    if not c.welcome.get("capabilities", 0) & w.CAP_ANONYMOUS:
        fail("WELCOME of an identified connection lacks ANONYMOUS: %r" % c.welcome)
    return c


def one_result(c, mid, n=1):
    return c.collect_results({mid: n})[mid]


def metric(d, name, labels=None):
    st, body = d.admin_get("/metrics")
    if st != 200:
        fail("/metrics: %s %s" % (st, body))
    lab = "" if not labels else "{" + ",".join('%s="%s"' % kv for kv in labels.items()) + "}"
    m = re.search(r"^%s%s (\d+)$" % (re.escape(name), re.escape(lab)), body, re.M)
    if not m:
        fail("/metrics has no %s%s" % (name, lab))
    return int(m.group(1))


def cert_fingerprints(dev):
    """SHA-256 of the device's certificate (DER), raw and hex: what a relay could log."""
    pem = open(dev.crt).read()
    b64 = "".join(ln for ln in pem.splitlines() if ln and not ln.startswith("-----"))
    import base64
    der = base64.b64decode(b64.split("-----")[0])
    fp = hashlib.sha256(der).digest()
    return [fp, fp.hex().encode(), fp.hex().upper().encode()]


def needles(dev):
    """What would name dev: its token raw, in hex (full and the logs' 8-character short
    form), and its certificate's fingerprint."""
    tok = dev.token
    return [("token", tok), ("token hex", tok.hex().encode()),
            ("short token", tok.hex()[:8].encode())] + [
        ("cert fingerprint", x) for x in cert_fingerprints(dev)]


def redis_dump(h):
    """Every key of the relay's Redis (redis-cli --scan) and its DUMP, concatenated."""
    keys = subprocess.run(["redis-cli", "-s", h.redis.sock, "--scan"], stdout=subprocess.PIPE,
                          check=True, timeout=30).stdout.split(b"\n")
    out = []
    for k in keys:
        if k:
            out.append(k)
            out.append(h.redis.command("DUMP", k))
    return b"\n".join(out), len([k for k in keys if k])


def memory_dump(pid, limit=256 << 20):
    """The relay's writable memory: [heap] and anonymous read-write mappings (up to limit
    bytes each: the sanitizers' shadow mappings are skipped), read from /proc/PID/mem."""
    chunks = []
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5] if len(parts) > 5 else ""
            if not parts[1].startswith("rw") or hi - lo > limit:
                continue
            if path not in ("", "[heap]", "[stack]") and not path.startswith("[anon"):
                continue
            try:
                mem.seek(lo)
                chunks.append(mem.read(hi - lo))
            except OSError:
                continue
    return b"".join(chunks)


# --- tests --------------------------------------------------------------------------------


@test("door: no certificate asked, token zero, ANONYMOUS capability; HELLO without "
      "SEND_ONLY, ACCESS_SET, SUBSCRIBE, ACK refused (ERROR ANONYMOUS)")
def t_door(t):
    d = t.relay()
    a = AnonClient(d)
    a.connect()
    f = a.hello_anon()
    t.note("anonymous WELCOME: max_recipients %d, capabilities 0x%x" % (
        f["max_recipients"], f["capabilities"]))
    a.ping()
    for ftype, fields in ((w.ACCESS_SET, {"msg_id": os.urandom(16), "anon_mode": 1}),
                          (w.SUBSCRIBE, {"msg_id": os.urandom(16)}),
                          (w.ACK, {"msg_ids": [os.urandom(16)]})):
        a = AnonClient(d)
        a.connect_hello(flags=w.SEND_ONLY)
        a.send_frame(ftype, fields)
        a.expect_error(w.E_ANONYMOUS, True, frame_type=ftype)
        a.expect_closed()
    a = AnonClient(d)
    a.connect()
    a.send_frame(w.HELLO, {"version": 1})
    a.expect_error(w.E_ANONYMOUS, True, frame_type=w.HELLO)
    t.eq(metric(d, "sealpush_anon_refused_frames_total"), 3, "refused frames counted")
    # The device door still requires a certificate.
    c = Client(d, None, name="nocert-device-door")
    try:
        c.connect()
        c.send_frame(w.HELLO, {"version": 1})
        c.read(3)
        fail("the device door took a connection without a certificate")
    except HandshakeRefused:
        pass
    except w.Closed:
        pass


@test("door: a TLS session of the device door does not resume on the anonymous door")
def t_no_resume(t):
    d = t.relay()
    alice = t.h.pki["alice"]
    ctx = client_context(alice, (w.ALPN_V1,), None, t.h.pki.ca_crt)
    c = Client(d, alice)
    c.connect = None  # connect by hand with ctx, to keep its session
    raw = socket.create_connection((LOOPBACK, d.port), 10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    c.sock, c.reader = s, w.FrameReader(s)
    c.hello()
    c.ping()
    sess = s.session
    if sess is None or not sess.has_ticket:
        fail("the device door issued no ticket to resume with")
    a = AnonClient(d, session=sess)
    a.ctx = ctx  # the same context (with alice's certificate loaded), the same session
    a.connect()
    if a.sock.session_reused:
        fail("the anonymous door resumed a session of the device door")
    f = a.hello_anon()
    t.note("full handshake on the anonymous door; WELCOME token %s" % f["token"].hex()[:8])


@test("sealed sender: several anonymous senders reach one recipient; logs (debug), /metrics, "
      "Redis and the relay's memory hold no sender token or certificate fingerprint "
      "(positive control: an identified sender is found)", timeout=240)
def t_no_sender_trace(t):
    d = t.relay()
    h = t.h
    bob = h.pki["bob"]
    senders = [h.pki[n] for n in ("alice", "carol", "dave")]
    key = os.urandom(32)
    r = receiver(t, d, bob)
    st = access_set(r, 1, [key])
    t.eq(st["status"], w.S_DELIVERED, "ACCESS_SET status")
    t.eq(st.get("anon_mode"), 1, "ACCESS_STATE anon_mode")
    # Online delivery and offline queueing, from three senders, two messages each.
    got = []
    for i, s in enumerate(senders):
        a = AnonClient(d, name="anon-" + s.name)
        a.connect()
        a.hello_anon()
        for k in range(2):
            blob = os.urandom(307)  # a sealed envelope's size: opaque to the relay
            mid = a.send_anon([bob], [key], blob=blob, ttl=3600)
            f = r.expect(w.DELIVER, what="DELIVER of an anonymous message")
            t.eq(f["blob"], blob, "delivered blob")
            r.ack([f["msg_id"]])
            t.eq(one_result(a, mid), {0: w.S_DELIVERED}, "anonymous SEND result")
            got.append(mid)
        a.close()
    r.close()
    time.sleep(0.3)
    a = AnonClient(d, name="anon-offline")
    a.connect()
    a.hello_anon()
    mid = a.send_anon([bob], [key], blob=os.urandom(307), ttl=3600)
    t.eq(one_result(a, mid), {0: w.S_QUEUED}, "anonymous SEND to an offline recipient")
    a.close()
    t.eq(metric(d, "sealpush_anon_sends_total", {"result": "accepted"}), 7, "accepted count")
    time.sleep(0.5)

    def traces(dev):
        found = []
        log = open(d.log_path, "rb").read()
        met = d.admin_get("/metrics")[1].encode()
        rd, nkeys = redis_dump(h)
        mem = memory_dump(d.proc.pid)
        for what, needle in needles(dev):
            for where, hay in (("log", log), ("metrics", met), ("redis", rd), ("memory", mem)):
                if what == "short token" and where in ("redis", "memory"):
                    continue  # 4 bytes of hex text: found by chance in megabytes
                if needle in hay:
                    found.append("%s in %s" % (what, where))
        return found, nkeys, len(mem)

    for s in senders:
        found, nkeys, memlen = traces(s)
        if found:
            fail("the relay kept a trace of anonymous sender %s: %s" % (s.name, found))
    t.note("no trace of %d anonymous senders in the debug log, /metrics, %d Redis keys and "
           "%.1f MiB of relay memory" % (len(senders), nkeys, memlen / 1048576.0))
    # Positive control: an identified send by alice (over her own certificate) is found.
    ident = Client(d, senders[0], name="identified-alice")
    ident.connect_hello(flags=w.SEND_ONLY)
    mid = ident.send_msg([bob], blob=os.urandom(307), ttl=3600)
    t.eq(one_result(ident, mid), {0: w.S_QUEUED}, "identified SEND")
    found, _, _ = traces(senders[0])
    if not any(x.endswith("in memory") for x in found) or "short token in log" not in found:
        fail("positive control: the identified sender was not found (%s): the searches are "
             "blind" % found)
    t.note("positive control (identified send by alice): %s" % ", ".join(found))
    ident.close()


@test("refusals: wrong key, old key after rotation, no key, a recipient that refuses and one "
      "that never registered all get ACCESS_DENIED, alike (no existence oracle)")
def t_denied(t):
    d = t.relay()
    h = t.h
    bob, carol = h.pki["bob"], h.pki["carol"]
    k1, k2 = os.urandom(32), os.urandom(32)
    rb = receiver(t, d, bob)
    t.eq(access_set(rb, 1, [k1])["status"], w.S_DELIVERED, "ACCESS_SET k1")
    rc = receiver(t, d, carol)
    t.eq(access_set(rc, 0)["status"], w.S_DELIVERED, "ACCESS_SET refuse")
    a = AnonClient(d)
    a.connect()
    a.hello_anon()
    mid = a.send_anon([bob], [k1])
    f = rb.expect(w.DELIVER)
    rb.ack([f["msg_id"]])
    t.eq(one_result(a, mid, 1), {0: w.S_DELIVERED}, "k1 before rotation")
    # Rotation: k2 replaces k1.
    t.eq(access_set(rb, 1, [k2])["status"], w.S_DELIVERED, "ACCESS_SET k2 (rotation)")
    nobody = os.urandom(32)
    cases = [("old key", bob.token, k1), ("wrong key", bob.token, os.urandom(32)),
             ("recipient refuses", carol.token, k1),
             ("never registered", nobody, k1)]
    frames = {}
    lat = {}
    for what, tok, key in cases:
        samples = []
        for _ in range(15):
            t0 = time.monotonic()
            mid = a.send_anon([tok], [key])
            f = a.expect(w.SEND_RESULT, what="SEND_RESULT (%s)" % what)
            samples.append(time.monotonic() - t0)
            t.eq(f["msg_id"], mid, "msg_id")
            t.eq(f["results"], [(0, w.S_ACCESS_DENIED)], "status for " + what)
            if "retry_after" in f:
                fail("%s: ACCESS_DENIED with retry_after: %r" % (what, f))
            frames[what] = sorted(f.fields)
        lat[what] = statistics.median(samples) * 1000
    if len({tuple(v) for v in frames.values()}) != 1:
        fail("the refusals differ in their fields: %s" % frames)
    t.note("median answer time (ms, loaded machine): %s" % ", ".join(
        "%s %.2f" % kv for kv in lat.items()))
    # No access_keys at all: ACCESS_DENIED too.
    mid = a.send_msg([bob.token])
    t.eq(one_result(a, mid), {0: w.S_ACCESS_DENIED}, "SEND without access_keys")
    # The new key works, in a SEND with a denied recipient beside it.
    mid = a.send_anon([nobody, bob.token], [k2, k2])
    f = rb.expect(w.DELIVER)
    rb.ack([f["msg_id"]])
    res = one_result(a, mid, 2)
    t.eq(res, {0: w.S_ACCESS_DENIED, 1: w.S_DELIVERED}, "mixed SEND after rotation")
    # An access_keys count that does not match the recipients: a protocol error.
    a.send_frame(w.SEND, {"msg_id": os.urandom(16), "recipients": [bob.token, carol.token],
                          "access_keys": [k2], "blob": b"x"})
    a.expect_error(w.E_BAD_FIELD, True, frame_type=w.SEND)
    t.eq(metric(d, "sealpush_anon_sends_total", {"result": "denied"}), 4 * 15 + 2,
         "denied count")


@test("limits: a flood of anonymous sends is limited per access key and per recipient "
      "(TOO_MANY_REQUESTS, counted); identified traffic is unaffected",
      timeout=180)
def t_flood(t):
    # The cache off: every recipient is checked and counted by one script in Redis, so the
    # limits are exact over the two workers (with the cache, t_cache_limits).
    d = t.relay(anon_key_rate=40, anon_recipient_rate=60, anon_rate_window="60s",
                send_rate=100000, send_burst=100000, anon_cache_ttl=0)
    h = t.h
    bob = h.pki["bob"]
    k1, k2 = os.urandom(32), os.urandom(32)
    rb = receiver(t, d, bob)
    t.eq(access_set(rb, 1, [k1, k2])["status"], w.S_DELIVERED, "ACCESS_SET two keys")
    rb.close()  # offline: everything accepted is QUEUED
    floods = [anon(d, "flood%d" % i) for i in range(4)]
    counts = flood(floods, bob, k1, 100)  # 40 pass: the key's limit
    t.eq(counts.get(w.S_QUEUED), 40, "k1 queued under anon_key_rate")
    flood(floods, bob, k2, 100, counts)  # 20 more pass: the recipient's limit of 60
    t.eq(counts.get(w.S_QUEUED), 60, "queued under anon_recipient_rate")
    t.eq(counts.get(w.S_TOO_MANY_REQUESTS), 140, "refused")
    t.eq(metric(d, "sealpush_anon_sends_total", {"result": "rate_key"}), 60, "rate_key")
    t.eq(metric(d, "sealpush_anon_sends_total", {"result": "rate_recipient"}), 80,
         "rate_recipient")
    # Identified traffic to the same recipient is not limited by any of it.
    alice = Client(d, h.pki["alice"], name="alice")
    alice.connect_hello(flags=w.SEND_ONLY)
    mids = [alice.send_msg([bob], ttl=3600) for _ in range(100)]
    res = alice.collect_results({m: 1 for m in mids})
    bad = [r for r in res.values() if r[0] != w.S_QUEUED]
    if bad:
        fail("identified sends were refused during the anonymous flood: %s" % bad[:3])
    t.note("anonymous: 60 of 200 accepted (40 per key, 60 per recipient); identified: 100 of "
           "100 queued")


def anon(d, name):
    a = AnonClient(d, name=name)
    a.connect()
    a.hello_anon()
    return a


def flood(senders, to, key, n, counts=None):
    """n anonymous sends to device `to` with access key `key`, round robin over senders;
    returns (adds to) the count of each status."""
    counts = {} if counts is None else counts
    sent = {a: [] for a in senders}
    for i in range(n):
        a = senders[i % len(senders)]
        sent[a].append(a.send_anon([to], [key], ttl=3600))
    for a, mids in sent.items():
        res = a.collect_results({m: 1 for m in mids})
        for m in mids:
            counts[res[m][0]] = counts.get(res[m][0], 0) + 1
    return counts


@test("cache: an ACCESS_SET drops the cached recipient at once on its relay; another relay "
      "on the same Redis uses what it cached until anon_cache_ttl, then the new key")
def t_cache_rotation(t):
    cfg = dict(anon_cache_ttl="3s", anon_flush_interval="50ms")
    d1 = t.relay(**cfg)
    d2 = t.relay(flush=False, **cfg)
    bob = t.h.pki["bob"]
    k1, k2 = os.urandom(32), os.urandom(32)
    rb = receiver(t, d1, bob)
    t.eq(access_set(rb, 1, [k1])["status"], w.S_DELIVERED, "ACCESS_SET k1")
    a1, a2 = anon(d1, "a1"), anon(d2, "a2")

    def send(a, key, want, what):
        mid = a.send_anon([bob], [key], ttl=3600)
        if want == w.S_DELIVERED:
            f = rb.expect(w.DELIVER)
            rb.ack([f["msg_id"]])
        t.eq(one_result(a, mid), {0: want}, what)
    send(a1, k1, w.S_DELIVERED, "k1 through relay 1")
    send(a2, k1, w.S_QUEUED, "k1 through relay 2")  # bob is not connected to relay 2
    t0 = time.monotonic()
    t.eq(access_set(rb, 1, [k2])["status"], w.S_DELIVERED, "ACCESS_SET k2 (rotation)")
    send(a1, k1, w.S_ACCESS_DENIED, "old key on the relay of the rotation, at once")
    send(a1, k2, w.S_DELIVERED, "new key on the relay of the rotation, at once")
    send(a2, k1, w.S_QUEUED, "old key on the other relay, within anon_cache_ttl")
    send(a2, k2, w.S_ACCESS_DENIED, "new key on the other relay, within anon_cache_ttl")
    if time.monotonic() - t0 > 2.5:
        fail("the sends within anon_cache_ttl took too long to prove anything")
    time.sleep(max(0, 3.3 - (time.monotonic() - t0)))
    send(a2, k1, w.S_ACCESS_DENIED, "old key on the other relay, after anon_cache_ttl")
    send(a2, k2, w.S_QUEUED, "new key on the other relay, after anon_cache_ttl")
    for d in (d1, d2):
        if metric(d, "sealpush_anon_cache_total", {"result": "stale"}) < 1:
            fail("no stale cache entry counted")
        if metric(d, "sealpush_anon_cache_total", {"result": "hit"}) < 1:
            fail("no cache hit counted")
    t.note("relay 1: the rotation took effect at once; relay 2: after anon_cache_ttl (3 s)")


@test("cache: the limits with the cache are exact for one worker, and the counts reach Redis "
      "within anon_flush_interval, where another relay finds them")
def t_cache_limits(t):
    cfg = dict(workers=1, anon_key_rate=10, anon_recipient_rate=15, anon_rate_window="60s",
               anon_cache_ttl="10s", anon_flush_interval="50ms")
    d1 = t.relay(**cfg)
    d2 = t.relay(flush=False, **cfg)
    bob = t.h.pki["bob"]
    k1, k2 = os.urandom(32), os.urandom(32)
    rb = receiver(t, d1, bob)
    t.eq(access_set(rb, 1, [k1, k2])["status"], w.S_DELIVERED, "ACCESS_SET two keys")
    rb.close()
    floods = [anon(d1, "f%d" % i) for i in range(3)]
    t.eq(flood(floods, bob, k1, 30), {w.S_QUEUED: 10, w.S_TOO_MANY_REQUESTS: 20},
         "k1 under anon_key_rate")
    t.eq(flood(floods, bob, k2, 30), {w.S_QUEUED: 5, w.S_TOO_MANY_REQUESTS: 25},
         "k2 under the recipient's")
    time.sleep(0.5)
    aw = "sp:{%s}:aw" % bob.token.hex()
    t.eq(t.h.redis.command("HGET", aw, "*"), b"$2\r\n15\r\n", "the recipient's count in Redis")
    t.eq(t.h.redis.command("HGET", aw, hashlib.sha256(k1).digest()), b"$2\r\n10\r\n",
         "k1's count")
    if metric(d1, "sealpush_anon_flushes_total", {"result": "ok"}) < 1:
        fail("no flush counted")
    # Redis forgets its scripts: relay 2's first fetch gets NOSCRIPT and goes again as EVAL
    t.eq(t.h.redis.command("SCRIPT", "FLUSH"), b"+OK\r\n", "SCRIPT FLUSH")
    a3 = anon(d2, "other relay")
    mid = a3.send_anon([bob], [k2], ttl=3600)
    t.eq(one_result(a3, mid), {0: w.S_TOO_MANY_REQUESTS},
         "the other relay sees the count (its script sent again after NOSCRIPT)")
    t.note("15 of 60 accepted on relay 1 (10 for k1, 15 in all); relay 2 refused the next")


@test("pad_block: a SEND whose blob is not 51 + k * pad_block bytes is BAD_SIZE on both doors "
      "(counted); one on a bucket passes")
def t_pad_block(t):
    d = t.relay(pad_block=256)
    h = t.h
    bob = h.pki["bob"]
    key = os.urandom(32)
    rb = receiver(t, d, bob)
    t.eq(access_set(rb, 1, [key])["status"], w.S_DELIVERED, "ACCESS_SET")
    a = anon(d, "anon")
    alice = Client(d, h.pki["alice"], name="alice")
    alice.connect_hello(flags=w.SEND_ONLY)
    refused = 0
    for n in (0, 1, 50, 51, 52, 306, 308, 51 + 256 * 3 + 1):
        mid = a.send_anon([bob], [key], blob=b"\0" * n)
        t.eq(one_result(a, mid), {0: w.S_BAD_SIZE}, "anonymous blob of %d bytes" % n)
        mid = alice.send_msg([bob, bob.token[:31] + b"x"], blob=b"\0" * n)
        t.eq(one_result(alice, mid, 2), {0: w.S_BAD_SIZE, 1: w.S_BAD_SIZE},
             "identified blob of %d bytes" % n)
        refused += 2
    for n in (307, 51 + 256 * 4):
        mid = a.send_anon([bob], [key], blob=b"\1" * n)
        f = rb.expect(w.DELIVER)
        rb.ack([f["msg_id"]])
        t.eq(len(f["blob"]), n, "delivered blob")
        t.eq(one_result(a, mid), {0: w.S_DELIVERED}, "anonymous blob of %d bytes" % n)
    t.eq(metric(d, "sealpush_limit_hits_total", {"limit": "pad_block"}), refused, "counted")
    t.eq(metric(d, "sealpush_send_results_total", {"status": "BAD_SIZE"}), refused + 8,
         "results counted")


@test("switch: anon_mode 2 (anyone) accepts any key; 0 refuses again; ACCESS_SET over the "
      "limit of anon_max_keys is refused")
def t_switch(t):
    d = t.relay(anon_max_keys=2)
    bob = t.h.pki["bob"]
    rb = receiver(t, d, bob)
    a = AnonClient(d)
    a.connect()
    a.hello_anon()
    t.eq(access_set(rb, 2)["status"], w.S_DELIVERED, "ACCESS_SET anyone")
    mid = a.send_anon([bob], [os.urandom(32)])
    f = rb.expect(w.DELIVER)
    rb.ack([f["msg_id"]])
    t.eq(one_result(a, mid), {0: w.S_DELIVERED}, "open recipient, any key")
    t.eq(access_set(rb, 0)["status"], w.S_DELIVERED, "ACCESS_SET refuse")
    mid = a.send_anon([bob], [os.urandom(32)])
    t.eq(one_result(a, mid), {0: w.S_ACCESS_DENIED}, "refusing recipient")
    st = access_set(rb, 1, [os.urandom(32) for _ in range(3)])
    t.eq(st["status"], w.S_QUOTA_EXCEEDED, "3 verifiers over anon_max_keys 2")
    t.eq(metric(d, "sealpush_anon_access_sets_total", {"result": "refused"}), 1, "counted")
    _, body = d.admin_get("/metrics")
    for m in ("sealpush_anon_connections_total", "sealpush_anon_sends_total",
              "sealpush_anon_access_sets_total", "sealpush_anon_refused_frames_total"):
        if m not in body:
            fail("/metrics lacks %s" % m)


class Probe:
    """tests/e2e/sp_client_probe (libsealpush) as an anonymous sender, line by line."""

    def __init__(self, t, d, dev=None):
        """Anonymous on the door of d, or with dev: dev's identified connection (receiving)."""
        import harness
        if dev is None:
            argv = [OPTS.probe, "--server", "%s:%d" % (LOOPBACK, d.anon_port), "--ca",
                    t.h.pki.ca_crt, "--anonymous"]
        else:
            argv = [OPTS.probe, "--server", "%s:%d" % (LOOPBACK, d.port), "--ca",
                    t.h.pki.ca_crt, "--cert", dev.crt, "--key", dev.key]
        self.p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        harness._children.append(self.p)
        t.cleanups.append(self.kill)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()

    def cmd(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def expect(self, pattern, timeout=10.0):
        """The next line matching pattern (lines before it are skipped). Reads the pipe with
        os.read into a buffer of its own: two lines in one read must not leave the second in
        a file object's buffer where select() cannot see it."""
        import select
        deadline = time.monotonic() + timeout
        seen = []
        fd = self.p.stdout.fileno()
        buf = getattr(self, "buf", b"")
        while True:
            while b"\n" in buf:
                ln, buf = buf.split(b"\n", 1)
                ln = ln.decode(errors="replace")
                seen.append(ln)
                m = re.search(pattern, ln)
                if m:
                    self.buf = buf
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
        self.buf = buf
        fail("probe: no line matching %r (saw %r)" % (pattern, seen[-6:]))


@test("libsealpush: an anonymous client (sp_client_config.anonymous) sends with access keys; "
      "the recipient gets the message, a wrong key is ACCESS_DENIED")
def t_library(t):
    if not OPTS.probe:
        t.note("skipped: no --probe")
        return
    d = t.relay()
    bob = t.h.pki["bob"]
    key = os.urandom(32)
    rb = receiver(t, d, bob)
    t.eq(access_set(rb, 1, [key])["status"], w.S_DELIVERED, "ACCESS_SET")
    p = Probe(t, d)
    m = p.expect(r"^connected .*token=([0-9a-f]+)")
    t.eq(m.group(1), "00" * 32, "the library's anonymous token")
    p.cmd("asend %s %s hello-anon" % (bob.token.hex(), key.hex()))
    p.expect(r"^queued id=([0-9a-f]+) rc=0$")
    f = rb.expect(w.DELIVER, what="DELIVER from the library's anonymous send")
    t.eq(f["blob"], b"hello-anon", "blob")
    rb.ack([f["msg_id"]])
    p.expect(r"^result id=[0-9a-f]+ DELIVERED$")
    p.cmd("asend %s %s nope" % (bob.token.hex(), os.urandom(32).hex()))
    p.expect(r"^queued id=[0-9a-f]+ rc=0$")
    p.expect(r"^result id=[0-9a-f]+ ACCESS_DENIED$")
    p.cmd("send %s no-key" % bob.token.hex())
    p.expect(r"^queued id=[0-9a-f]+ rc=-22$")  # EINVAL: an anonymous send needs its keys
    t.eq(metric(d, "sealpush_anon_sends_total", {"result": "accepted"}), 1, "accepted")


@test("libsealpush: the recipient registers its access key through the library "
      "(sp_client_access_set), receives anonymous messages from the library and the wire, "
      "rotates (the old key is ACCESS_DENIED), refuses, and is told of a quota refusal")
def t_library_access_set(t):
    if not OPTS.probe:
        t.note("skipped: no --probe")
        return
    d = t.relay(anon_max_keys=3)
    bob = t.h.pki["bob"]
    k1, k2 = os.urandom(32), os.urandom(32)
    rp = Probe(t, d, bob)
    m = rp.expect(r"^connected .*token=([0-9a-f]+)")
    t.eq(m.group(1), bob.token.hex(), "the receiving probe's token")

    def access(line, status, mode):
        rp.cmd("access " + line)
        q = rp.expect(r"^access_queued id=(\S+) rc=(-?\d+)$")
        t.eq(q.group(2), "0", "sp_client_access_set rc for %r" % line)
        a = rp.expect(r"^access id=([0-9a-f]+) status=(\S+) mode=(\S+)$")
        t.eq(a.group(1), q.group(1), "ACCESS_STATE id")
        t.eq((a.group(2), a.group(3)), (status, mode), "ACCESS_STATE for %r" % line)

    access("1 " + k1.hex(), "DELIVERED", "1")
    sp = Probe(t, d)
    sp.expect(r"^connected ")
    sp.cmd("asend %s %s from-the-library" % (bob.token.hex(), k1.hex()))
    sp.expect(r"^queued id=[0-9a-f]+ rc=0$")
    rp.expect(r"^message id=[0-9a-f]+ stored=0 len=16 blob=from-the-library$")
    sp.expect(r"^result id=[0-9a-f]+ DELIVERED$")
    a = AnonClient(d)
    a.connect()
    a.hello_anon()
    mid = a.send_anon([bob], [k1], blob=b"from-the-wire")
    rp.expect(r"^message id=%s stored=0 len=13 blob=from-the-wire$" % mid.hex())
    t.eq(one_result(a, mid), {0: w.S_DELIVERED}, "wire anonymous SEND")
    # Rotation: k2 alone; k1 is locked out.
    access("1 " + k2.hex(), "DELIVERED", "1")
    sp.cmd("asend %s %s old-key" % (bob.token.hex(), k1.hex()))
    sp.expect(r"^queued id=[0-9a-f]+ rc=0$")
    sp.expect(r"^result id=[0-9a-f]+ ACCESS_DENIED$")
    sp.cmd("asend %s %s new-key" % (bob.token.hex(), k2.hex()))
    sp.expect(r"^queued id=[0-9a-f]+ rc=0$")
    rp.expect(r"^message id=[0-9a-f]+ stored=0 len=7 blob=new-key$")
    sp.expect(r"^result id=[0-9a-f]+ DELIVERED$")
    # Over anon_max_keys (3): refused, nothing changes (k2 still works).
    access("1 " + ",".join(os.urandom(32).hex() for _ in range(4)), "QUOTA_EXCEEDED", "-")
    sp.cmd("asend %s %s still" % (bob.token.hex(), k2.hex()))
    sp.expect(r"^queued id=[0-9a-f]+ rc=0$")
    rp.expect(r"^message id=[0-9a-f]+ stored=0 len=5 blob=still$")
    sp.expect(r"^result id=[0-9a-f]+ DELIVERED$")
    # Refuse: k2 is denied too. Bad arguments are refused locally.
    access("0", "DELIVERED", "0")
    sp.cmd("asend %s %s refused" % (bob.token.hex(), k2.hex()))
    sp.expect(r"^queued id=[0-9a-f]+ rc=0$")
    sp.expect(r"^result id=[0-9a-f]+ ACCESS_DENIED$")
    for line in ("1", "3 " + k1.hex()):
        rp.cmd("access " + line)
        rp.expect(r"^access_queued id=- rc=-22$")
    sp.cmd("access 1 " + k1.hex())  # an anonymous client registers nothing
    sp.expect(r"^access_queued id=- rc=-22$")
    t.eq(metric(d, "sealpush_anon_access_sets_total", {"result": "refused"}), 1,
         "quota refusal counted")
    t.note("ACCESS_SET through libsealpush: register, rotate, quota, refuse")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sealpushd", default=os.environ.get("SEALPUSHD"))
    ap.add_argument("--sealpush-ca", default=os.environ.get("SEALPUSH_CA"))
    ap.add_argument("--sealpush", default=os.environ.get("SEALPUSH"))
    ap.add_argument("--probe", help="tests/e2e/sp_client_probe (libsealpush)")
    ap.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER", "redis-server"))
    ap.add_argument("-k", dest="pattern")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    global OPTS
    OPTS = args
    tests = [x for x in TESTS if not args.pattern or args.pattern in x[0]]
    for tool in (args.redis_server, "redis-cli"):
        if not shutil.which(tool):
            print("1..0 # SKIP %s not found" % tool)
            return 0
    h = Harness(args.sealpushd, args.sealpush_ca, args.redis_server, keep=args.keep)
    return run_tap(h, tests, T, verbose=args.verbose, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
