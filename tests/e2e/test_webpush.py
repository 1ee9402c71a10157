#!/usr/bin/env python3
"""End-to-end tests of the Web Push provider door (issue 15): the real sealpushd and
redis-server, pushes made with curl over HTTP/2 and HTTP/1.1, received by devices speaking
frames built by spwire.py.

Subscriptions are written into Redis here as the relay stores them (PROTOCOL.md 14: the
record sp:wp:cap:<sha256 of the capability> with the device's token and the subscription's
id, and the device's set sp:{<token>}:wp:subs), so these tests do not depend on the
subscription frames.

Needs python3, redis-server and curl (with HTTP/2); skips without curl.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import spwire as w
from harness import LOOPBACK, Client, Harness, fail, free_port, run_tap

TESTS = []
NPM_TESTS = []
WEB_PUSH_VERSION = "3.6.7"  # pinned: the npm registry's web-push, installed into the build dir
OPTS = None


def test(name, timeout=60, npm=False):
    def deco(fn):
        (NPM_TESTS if npm else TESTS).append((name, fn, timeout))
        return fn
    return deco


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def fake_body(n=40, rs=4096):
    """An aes128gcm body of the right shape (RFC 8188 header, key id a P-256 point): the relay
    checks only the shape, never decrypts."""
    return (os.urandom(16) + rs.to_bytes(4, "big") + bytes([65, 4]) + os.urandom(64) +
            os.urandom(max(n, 17)))


class Vapid:
    """An application server's VAPID key (P-256, made with the openssl CLI) and its JWTs."""

    def __init__(self, directory):
        self.pem = tempfile.mktemp(dir=directory, suffix=".pem")
        subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout",
                        "-out", self.pem], check=True, stdout=subprocess.DEVNULL)
        der = subprocess.run(["openssl", "ec", "-in", self.pem, "-pubout", "-outform", "DER"],
                             check=True, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout
        self.pub = der[-65:]

    def jwt(self, aud, exp=None, alg="ES256"):
        if exp is None:
            exp = int(time.time()) + 3600
        h = b64u(json.dumps({"typ": "JWT", "alg": alg}).encode())
        c = b64u(json.dumps({"aud": aud, "exp": exp, "sub": "mailto:ops@example.org"}).encode())
        inp = ("%s.%s" % (h, c)).encode()
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.pem], input=inp,
                             check=True, stdout=subprocess.PIPE).stdout
        # ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } -> r || s, 32 bytes each
        i = 2 if der[1] < 0x80 else 3
        rl = der[i + 1]
        r = der[i + 2:i + 2 + rl]
        j = i + 2 + rl
        sl = der[j + 1]
        s_ = der[j + 2:j + 2 + sl]
        sig = r[-32:].rjust(32, b"\0") + s_[-32:].rjust(32, b"\0")
        return "%s.%s" % (inp.decode(), b64u(sig))

    def header(self, aud, exp=None, key=None):
        return "Authorization: vapid t=%s, k=%s" % (self.jwt(aud, exp), b64u(key or self.pub))


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self):
        return "<%s %r %r>" % (self.status, self.headers, self.body[:80])


class T:
    def __init__(self, h):
        self.h = h
        self.notes = []
        self.cleanups = []
        self.d = None
        self.pport = None

    def relay(self, **config):
        self.pport = free_port()
        cfg = {"provider_listen": "%s:%d" % (LOOPBACK, self.pport),
               "provider_origin": "https://%s:%d" % (LOOPBACK, self.pport)}
        cfg.update(config)
        self.d = self.h.start_daemon(cfg)
        return self.d

    @property
    def origin(self):
        return "https://%s:%d" % (LOOPBACK, self.pport)

    def client(self, who):
        c = Client(self.d, self.h.pki[who])
        c.connect()
        c.hello()
        self.h.track_client(c)
        return c

    def subscribe(self, who, ask=None):
        """A subscription for device who, written into Redis: (capability, sub id)."""
        raw = os.urandom(32)
        cap = b64u(raw)
        sub = os.urandom(16)
        tok = self.h.pki[who].token
        args = ["HSET", "sp:wp:cap:" + hashlib.sha256(raw).hexdigest(), "token", tok,
                "sub", sub]
        if ask:
            args += ["ask", ask]
        self.h.redis.command(*args)
        self.h.redis.command("SADD", "sp:{%s}:wp:subs" % tok.hex(), sub.hex())
        return cap, sub

    def curl(self, path, headers=(), body=None, http="--http2", method="POST", timeout=15):
        """(status, headers, body) of one request made with curl."""
        hdir = tempfile.mkdtemp(dir=self.h.root)
        hfile = os.path.join(hdir, "h")
        argv = ["curl", "-sS", http, "--cacert", self.h.pki.ca_crt, "-X", method, "-D", hfile,
                "-o", os.path.join(hdir, "b"), "-w", "%{http_code}", "--max-time", str(timeout)]
        for k in headers:
            argv += ["-H", k]
        if body is not None:
            bfile = os.path.join(hdir, "in")
            with open(bfile, "wb") as f:
                f.write(body)
            argv += ["--data-binary", "@" + bfile]
        argv.append(self.origin + path)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout + 5)
        hs = {}
        try:
            with open(hfile, errors="replace") as f:
                for ln in f.read().splitlines():
                    if ":" in ln and not ln.startswith("HTTP/"):
                        k, v = ln.split(":", 1)
                        hs[k.strip().lower()] = v.strip()
                    elif ln.startswith("HTTP/"):
                        hs[":proto"] = ln.split(" ")[0]
        except OSError:
            pass
        try:
            with open(os.path.join(hdir, "b"), "rb") as f:
                b = f.read().decode(errors="replace")
        except OSError:
            b = ""
        shutil.rmtree(hdir, ignore_errors=True)
        code = r.stdout.decode().strip()
        return Resp(int(code) if code.isdigit() else 0, hs, b + r.stderr.decode())

    def push(self, cap, body=None, ttl="60", extra=(), http="--http2", **kw):
        hs = list(extra)
        if ttl is not None:
            hs.append("TTL: %s" % ttl)
        if body is None:
            body = fake_body()
        if body:
            hs.append("Content-Encoding: aes128gcm")
        return self.curl("/push/" + cap, hs, body, http=http, **kw)

    def push_async(self, *a, **kw):
        out = {}
        th = threading.Thread(target=lambda: out.setdefault("r", self.push(*a, **kw)))
        th.start()
        return th, out

    def metric(self, name):
        st, body = self.d.admin_get("/metrics")
        for ln in body.splitlines():
            if ln.startswith(name + " ") or ln.startswith(name + "{") and False:
                return float(ln.split()[-1])
        vals = [float(ln.split()[-1]) for ln in body.splitlines() if ln.startswith(name)]
        return sum(vals)

    def note(self, msg):
        self.notes.append(str(msg))

    def eq(self, got, want, what):
        if got != want:
            fail("%s: got %r, want %r" % (what, got, want))

    def check(self, cond, msg):
        if not cond:
            fail(msg)


HTTPS = ("--http2", "--http1.1")


@test("push: a live device gets the body as DELIVER ('W' | sub id | body); 201 Created with "
      "Location and TTL after its ACK, over HTTP/2 and HTTP/1.1")
def t_live(t):
    t.relay()
    cap, sub = t.subscribe("alice")
    c = t.client("alice")
    for http in HTTPS:
        body = fake_body(100)
        th, out = t.push_async(cap, body, ttl="120", extra=["Urgency: high"], http=http)
        f = c.expect(w.DELIVER, timeout=10)
        t.eq(f["blob"], b"W" + sub + body, "DELIVER blob")
        t.eq(f.get("priority"), 10, "Urgency high -> priority 10")
        time.sleep(0.2)
        t.check("r" not in out, "the answer came before the device's ACK")
        c.ack([f["msg_id"]])
        th.join(10)
        r = out["r"]
        t.eq(r.status, 201, "status (%s) %r" % (http, r))
        t.check(r.headers.get("location", "").startswith(t.origin + "/m/"), "Location %r" % r)
        t.eq(r.headers.get("ttl"), "120", "TTL answered")
        t.eq(r.headers.get(":proto"), "HTTP/2" if http == "--http2" else "HTTP/1.1", "protocol")


@test("push: an offline device gets it later (201, TTL held = min(TTL, max_ttl)); a second "
      "message with the same Topic replaces the queued one")
def t_offline_topic(t):
    t.relay(max_ttl=3600)
    cap, sub = t.subscribe("bob")
    b1, b2, b3 = fake_body(20), fake_body(30), fake_body(40)
    r = t.push(cap, b1, ttl="999999999", extra=["Topic: news"])
    t.eq(r.status, 201, "first push %r" % r)
    t.eq(r.headers.get("ttl"), "3600", "TTL held is max_ttl")
    r = t.push(cap, b2, ttl="60", extra=["Topic: news"], http="--http1.1")
    t.eq(r.status, 201, "second push %r" % r)
    r = t.push(cap, b3, ttl="60", extra=["Urgency: low"])
    t.eq(r.status, 201, "third push %r" % r)
    c = t.client("bob")
    got = []
    for _ in range(2):
        f = c.expect(w.DELIVER, timeout=10)
        t.check(f.flags & w.DELIVER_STORED if hasattr(w, "DELIVER_STORED") else True,
                "STORED flag")
        got.append(f["blob"])
        c.ack([f["msg_id"]])
    t.eq(got, [b"W" + sub + b2, b"W" + sub + b3], "the queue after the topic replaced the first")
    c.expect_nothing(0.5)


@test("push: TTL 0 to an offline device is dropped (201, TTL: 0)")
def t_ttl0(t):
    t.relay()
    cap, _ = t.subscribe("carol")
    r = t.push(cap, ttl="0")
    t.eq((r.status, r.headers.get("ttl")), (201, "0"), "TTL 0 offline %r" % r)


@test("errors: 400 (no TTL, bad TTL, bad Urgency, bad Topic, bad aes128gcm header), 404, 405, "
      "410, 413, 415, over HTTP/2 and HTTP/1.1, each with a short reason")
def t_errors(t):
    t.relay()
    cap, _ = t.subscribe("dave")
    gone_raw = os.urandom(32)
    t.h.redis.command("HSET", "sp:wp:cap:" + hashlib.sha256(gone_raw).hexdigest(), "gone", "1")
    gone = b64u(gone_raw)
    for http in HTTPS:
        cases = [
            ("no TTL", t.push(cap, ttl=None, http=http), 400, "TTL"),
            ("bad TTL", t.push(cap, ttl="-5", http=http), 400, "TTL"),
            ("bad Urgency", t.push(cap, extra=["Urgency: asap"], http=http), 400, "Urgency"),
            ("bad Topic", t.push(cap, extra=["Topic: no spaces"], http=http), 400, "Topic"),
            ("long Topic", t.push(cap, extra=["Topic: " + "a" * 33], http=http), 400, "Topic"),
            ("short body", t.push(cap, body=b"x" * 50, http=http), 400, "aes128gcm"),
            ("bad key id", t.push(cap, body=fake_body()[:20] + b"\x41\x05" + os.urandom(80),
                                  http=http), 400, "aes128gcm"),
            ("two records", t.push(cap, body=fake_body(200, rs=100), http=http), 400,
             "aes128gcm"),
            ("unknown cap", t.push(b64u(os.urandom(32)), http=http), 404, "subscription"),
            ("malformed cap", t.push("short", http=http), 404, "subscription"),
            ("other path", t.curl("/nothing", ["TTL: 5"], b"", http=http), 404, "resource"),
            ("GET", t.curl("/push/" + cap, http=http, method="GET"), 405, "POST"),
            ("gone", t.push(gone, http=http), 410, "removed"),
            ("too large", t.push(cap, body=fake_body(5000, rs=8192), http=http), 413, "large"),
            ("gzip", t.curl("/push/" + cap, ["TTL: 5", "Content-Encoding: gzip"], b"x" * 100,
                            http=http), 415, "aes128gcm"),
        ]
        for what, r, st, word in cases:
            t.eq(r.status, st, "%s (%s): %r" % (what, http, r))
            t.check(word.lower() in r.body.lower(), "%s (%s): reason %r names %s" % (
                what, http, r.body, word))
    t.check(t.metric('sealpush_provider_responses_total{status="400"}') >= 16,
            "400s counted in /metrics")


@test("errors: 429 with Retry-After when the device's queue is full")
def t_429(t):
    t.relay(max_queue=1)
    cap, _ = t.subscribe("alice")
    t.eq(t.push(cap).status, 201, "first")
    for http in HTTPS:
        r = t.push(cap, http=http)
        t.eq(r.status, 429, "queue full (%s) %r" % (http, r))
        t.check(r.headers.get("retry-after", "").isdigit(), "Retry-After %r" % r)


@test("VAPID: a subscription made with an application server key takes only that key: 201 "
      "with it, 401 without, 403 for another key, an expired or far JWT, a wrong aud")
def t_vapid(t):
    t.relay()
    app, other = Vapid(t.h.root), Vapid(t.h.root)
    cap, sub = t.subscribe("alice", ask=app.pub)
    for http in HTTPS:
        r = t.push(cap, extra=[app.header(t.origin)], http=http)
        t.eq(r.status, 201, "right key (%s) %r" % (http, r))
        r = t.push(cap, http=http)
        t.eq(r.status, 401, "no vapid (%s) %r" % (http, r))
        r = t.push(cap, extra=[other.header(t.origin)], http=http)
        t.eq(r.status, 403, "another key (%s) %r" % (http, r))
        r = t.push(cap, extra=[app.header(t.origin, exp=int(time.time()) - 60)], http=http)
        t.eq(r.status, 403, "expired JWT (%s) %r" % (http, r))
        r = t.push(cap, extra=[app.header(t.origin, exp=int(time.time()) + 3 * 86400)],
                   http=http)
        t.eq(r.status, 403, "exp beyond 24 h (%s) %r" % (http, r))
        r = t.push(cap, extra=[app.header("https://elsewhere.example")], http=http)
        t.eq(r.status, 403, "wrong aud (%s) %r" % (http, r))
        r = t.push(cap, extra=[app.header(t.origin, key=other.pub)], http=http)
        t.eq(r.status, 403, "k not the signer (%s) %r" % (http, r))
    ucap, _ = t.subscribe("bob")
    t.eq(t.push(ucap).status, 201, "unrestricted, no vapid")
    t.eq(t.push(ucap, extra=[other.header(t.origin)]).status, 201, "unrestricted, any key")


@test("VAPID: a header that verified is remembered on its connection (counted: one ES256 "
      "verification for five pushes) until its JWT's exp, then refused (403)")
def t_vapid_memo(t):
    t.relay()
    app = Vapid(t.h.root)
    cap, _ = t.subscribe("carol", ask=app.pub)
    exp = int(time.time()) + 3
    hdr = app.header(t.origin, exp=exp)
    ctx = ssl.create_default_context(cafile=t.h.pki.ca_crt)
    ctx.set_alpn_protocols(["http/1.1"])
    s_ = ctx.wrap_socket(socket.create_connection((LOOPBACK, t.pport), timeout=10),
                         server_hostname=LOOPBACK)
    buf = [b""]

    def one():
        body = fake_body(40)
        s_.sendall(("POST /push/%s HTTP/1.1\r\nHost: x\r\nTTL: 60\r\n%s\r\n"
                    "Content-Encoding: aes128gcm\r\nContent-Length: %d\r\n\r\n" % (
                        cap, hdr, len(body))).encode() + body)
        while b"\r\n\r\n" not in buf[0]:
            d = s_.recv(65536)
            if not d:
                fail("the door closed the connection")
            buf[0] += d
        head, rest = buf[0].split(b"\r\n\r\n", 1)
        n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                 if ln.lower().startswith(b"content-length:")][0])
        while len(rest) < n:
            rest += s_.recv(65536)
        buf[0] = rest[n:]
        return int(head.split(b" ")[1])

    for i in range(5):
        t.eq(one(), 201, "push %d" % i)
    t.eq(t.metric('sealpush_provider_vapid_total{result="verified"}'), 1, "verified once")
    t.eq(t.metric('sealpush_provider_vapid_total{result="remembered"}'), 4, "remembered")
    time.sleep(max(0, exp - time.time()) + 1.1)
    t.eq(one(), 403, "the same header after its exp")
    s_.close()


@test("VAPID: provider_require_key refuses pushes to unrestricted subscriptions (403)")
def t_require_key(t):
    t.relay(provider_require_key=True)
    app = Vapid(t.h.root)
    ucap, _ = t.subscribe("bob")
    r = t.push(ucap, extra=[app.header(t.origin)])
    t.eq(r.status, 403, "unrestricted under provider_require_key %r" % r)
    cap, _ = t.subscribe("alice", ask=app.pub)
    t.eq(t.push(cap, extra=[app.header(t.origin)]).status, 201, "restricted")


SEND_JS = r"""
// One sendNotification with the real web-push package; prints {status, headers, body}.
const webpush = require('web-push');
const a = JSON.parse(process.argv[process.argv.length - 1]);
webpush.sendNotification(a.subscription, a.payload, {
  vapidDetails: { subject: 'mailto:ops@example.org', publicKey: a.vapid.publicKey,
                  privateKey: a.vapid.privateKey },
  TTL: a.ttl, urgency: a.urgency, topic: a.topic, timeout: 10000,
}).then(r => console.log(JSON.stringify({status: r.statusCode, headers: r.headers,
                                          body: r.body})),
        e => console.log(JSON.stringify({status: e.statusCode || 0, headers: e.headers || {},
                                          body: String(e.body || e.message)})));
"""

KEYS_JS = "console.log(JSON.stringify(require('web-push').generateVAPIDKeys()));"


def npm_ready():
    """Installs web-push@WEB_PUSH_VERSION into OPTS.npm_dir once; returns its node_modules."""
    d = OPTS.npm_dir
    mod = os.path.join(d, "node_modules", "web-push", "package.json")
    if os.path.exists(mod):
        with open(mod) as f:
            if json.load(f).get("version") == WEB_PUSH_VERSION:
                return d
    os.makedirs(d, exist_ok=True)
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", d,
                        "web-push@" + WEB_PUSH_VERSION], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=240)
    if r.returncode != 0 or not os.path.exists(mod):
        fail("npm install web-push@%s failed: %s" % (WEB_PUSH_VERSION, r.stdout.decode()[-500:]))
    return d


def node(t, script, *args):
    env = dict(os.environ, NODE_PATH=os.path.join(npm_ready(), "node_modules"),
               NODE_EXTRA_CA_CERTS=t.h.pki.ca_crt)
    r = subprocess.run(["node", "-e", script] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=30)
    if r.returncode != 0:
        fail("node failed: %s" % r.stderr.decode()[-800:])
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def ua_keys():
    """A user agent's RFC 8291 keys, made with the cryptography package or the openssl CLI."""
    d = tempfile.mkdtemp()
    pem = os.path.join(d, "k.pem")
    subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out",
                    pem], check=True, stdout=subprocess.DEVNULL)
    der = subprocess.run(["openssl", "ec", "-in", pem, "-outform", "DER"], check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    shutil.rmtree(d, ignore_errors=True)
    # ECPrivateKey: SEQUENCE { 1, OCTET STRING(32) priv, [0] params, [1] BIT STRING pub }
    i = der.index(b"\x04\x20")
    priv = der[i + 2:i + 34]
    pub = der[-65:]
    return {"priv": b64u(priv), "p256dh": b64u(pub), "auth": b64u(os.urandom(16))}


def web_push(t, cap, keys, vapid, payload, ttl=60, urgency=None, topic=None):
    sub = {"endpoint": t.origin + "/push/" + cap,
           "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}
    a = {"subscription": sub, "payload": payload, "vapid": vapid, "ttl": ttl}
    if urgency:
        a["urgency"] = urgency
    if topic:
        a["topic"] = topic
    return node(t, SEND_JS, json.dumps(a))


def open_msg(t, keys, sub, blob):
    """The device's side: the DELIVER blob ('W' | sub id | body), opened by libsealpush."""
    t.eq(blob[:1], b"W", "Web Push blob marker")
    t.eq(blob[1:17], sub, "subscription id in the blob")
    r = subprocess.run([OPTS.probe, keys["priv"], keys["p256dh"], keys["auth"],
                        blob[17:].hex()], stdout=subprocess.PIPE, timeout=10)
    out = r.stdout.decode().rstrip("\n")
    t.eq(r.returncode, 0, "libsealpush opens the web-push message (%s)" % out)
    return out


def cli(t, who, *args, timeout=30):
    dev = t.h.pki[who]
    argv = [OPTS.sealpush, "--server", "%s:%d" % (LOOPBACK, t.d.port), "--ca", t.h.pki.ca_crt,
            "--cert", dev.crt, "--key", dev.key] + list(args)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


@test("web-push %s: `sealpush subscribe --app-server-key` prints a browser-shaped subscription; "
      "sendNotification with VAPID, TTL, urgency and topic; `sealpush listen` prints the "
      "plaintext (libsealpush, RFC 8291); 201 after its ACK; `subscriptions`, `unsubscribe` "
      "-> 410" % WEB_PUSH_VERSION, 120, npm=True)
def t_npm_live(t):
    t.relay()
    vapid = node(t, KEYS_JS)
    r = cli(t, "alice", "subscribe", "--app-server-key", vapid["publicKey"])
    t.eq(r.returncode, 0, "sealpush subscribe: %s" % r.stderr.decode())
    subj = json.loads(r.stdout.decode())
    t.check(subj["endpoint"].startswith(t.origin + "/push/") and
            set(subj["keys"]) == {"p256dh", "auth"}, "subscription JSON %r" % subj)
    cap = subj["endpoint"].rsplit("/", 1)[1]
    keys = subj["keys"]
    dev = t.h.pki["alice"]
    lst = subprocess.Popen([OPTS.sealpush, "--server", "%s:%d" % (LOOPBACK, t.d.port), "--ca",
                            t.h.pki.ca_crt, "--cert", dev.crt, "--key", dev.key, "listen",
                            "--count", "1", "--timeout", "30"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    t.cleanups.append(lambda: lst.kill())
    time.sleep(1.0)  # listen is connected
    marker = "plaintext-marker-%s" % os.urandom(6).hex()
    r = web_push(t, cap, keys, vapid, marker, ttl=300, urgency="high", topic="greeting")
    out, err = lst.communicate(timeout=30)
    line = out.decode().strip()
    t.eq(lst.returncode, 0, "sealpush listen: %s" % err.decode())
    t.check(line.startswith("webpush %s " % subj["subscription_id"]) and
            line.endswith(" " + marker), "listen printed %r" % line)
    t.check(r is not None, "web-push did not finish")
    t.eq(r["status"], 201, "web-push status %r" % r)
    t.eq(str(r["headers"].get("ttl")), "300", "TTL answered")
    # Another application server's key is refused (403) by web-push's own request.
    other = node(t, KEYS_JS)
    r = web_push(t, cap, keys, other, "nope")
    t.eq(r["status"], 403, "another VAPID key %r" % r)
    r = cli(t, "alice", "subscriptions")
    t.check(subj["subscription_id"] in r.stdout.decode() and subj["endpoint"] in
            r.stdout.decode(), "subscriptions: %r" % r.stdout)
    r = cli(t, "alice", "unsubscribe", subj["subscription_id"])
    t.eq(r.returncode, 0, "unsubscribe: %s" % r.stderr.decode())
    r = web_push(t, cap, keys, vapid, "after")
    t.eq(r["status"], 410, "push after unsubscribe %r" % r)
    # The marker appears nowhere the operator can look.
    dump = subprocess.run(["redis-cli", "-s", t.h.redis.sock, "--no-raw", "KEYS", "*"],
                          stdout=subprocess.PIPE).stdout if shutil.which("redis-cli") else b""
    st, metrics = t.d.admin_get("/metrics")
    t.check(marker not in t.d.log() and marker not in metrics and
            marker.encode() not in dump, "plaintext marker leaked")


@test("web-push %s: an offline device gets its messages later; a second message with the same "
      "topic replaces the queued one; plaintext markers appear nowhere in Redis, logs or "
      "metrics" % WEB_PUSH_VERSION, 120, npm=True)
def t_npm_offline(t):
    t.relay()
    vapid = node(t, KEYS_JS)
    keys = ua_keys()
    cap, sub = t.subscribe("bob", ask=base64.urlsafe_b64decode(vapid["publicKey"] + "=="))
    m = ["marker-%d-%s" % (i, os.urandom(6).hex()) for i in range(3)]
    for payload, topic in ((m[0], "score"), (m[1], "score"), (m[2], None)):
        r = web_push(t, cap, keys, vapid, payload, ttl=600, topic=topic)
        t.eq(r["status"], 201, "queued %r" % r)
    raw = b""
    for k in ("*",):
        keys_reply = t.h.redis.command("KEYS", k)
        raw += keys_reply
    for name in [x for x in raw.split(b"\r\n") if x.startswith(b"sp:")]:
        for cmd in (("LRANGE", name, 0, -1), ("HGETALL", name), ("ZRANGE", name, 0, -1),
                    ("SMEMBERS", name), ("GET", name)):
            raw += t.h.redis.command(*cmd)
    c = t.client("bob")
    got = []
    for _ in range(2):
        f = c.expect(w.DELIVER, timeout=10)
        got.append(open_msg(t, keys, sub, f["blob"]))
        c.ack([f["msg_id"]])
    t.eq(got, [m[1], m[2]], "the second 'score' replaced the first; order kept")
    c.expect_nothing(0.5)
    st, metrics = t.d.admin_get("/metrics")
    for x in m:
        t.check(x.encode() not in raw, "marker %s in Redis" % x)
        t.check(x not in t.d.log(), "marker %s in the log" % x)
        t.check(x not in metrics, "marker %s in /metrics" % x)


# --- subscriptions over the device's connection (PROTOCOL.md 14.5) -------------------------

def sub_req(c, flags=0, **fields):
    mid = os.urandom(16)
    fields["msg_id"] = mid
    c.send_frame(w.SUBSCRIBE, fields, flags=flags)
    f = c.expect(w.SUBSCRIPTION, timeout=10)
    if f["msg_id"] != mid:
        fail("SUBSCRIPTION for another request")
    return f


@test("subscriptions: WELCOME says SP_CAP_WEBPUSH; SUBSCRIBE answers an endpoint with a fresh "
      "capability (not the token) and a sub id; a push to it arrives; LIST names it; REMOVE "
      "makes it 410; a restricted one takes only its key")
def t_subscribe(t):
    t.relay()
    c = Client(t.d, t.h.pki["carol"])
    c.connect()
    wf = c.hello()
    t.h.track_client(c)
    t.check(wf.get("capabilities", 0) & w.CAP_WEBPUSH, "WELCOME capabilities %r" % wf)
    f = sub_req(c)
    t.eq(f["status"], 0, "subscribe status %r" % f)
    ep = f["endpoint"].decode()
    t.check(ep.startswith(t.origin + "/push/"), "endpoint %r" % ep)
    cap = ep.rsplit("/", 1)[1]
    t.check(t.h.pki["carol"].token.hex() not in ep and len(cap) == 43, "capability %r" % cap)
    sub = f["sub_id"]
    f2 = sub_req(c)
    t.check(f2["endpoint"] != f["endpoint"] and f2["sub_id"] != sub, "two distinct subscriptions")
    body = fake_body(64)
    th, out = t.push_async(cap, body)
    d = c.expect(w.DELIVER, timeout=10)
    t.eq(d["blob"], b"W" + sub + body, "DELIVER through the new subscription")
    c.ack([d["msg_id"]])
    th.join(10)
    t.eq(out["r"].status, 201, "push %r" % out["r"])
    lst = sub_req(c, flags=w.LIST)
    ids = lst["sub_ids"]
    t.eq(sorted(ids), sorted([sub, f2["sub_id"]]), "LIST")
    rm = sub_req(c, flags=w.REMOVE, sub_id=sub)
    t.eq(rm["status"], 0, "REMOVE %r" % rm)
    for http in HTTPS:
        t.eq(t.push(cap, http=http).status, 410, "push after REMOVE (%s)" % http)
    t.eq(sub_req(c, flags=w.REMOVE, sub_id=sub)["status"], w.S_BAD_DEVICE_TOKEN, "REMOVE twice")
    t.eq(sub_req(c, flags=w.LIST)["sub_ids"], [f2["sub_id"]], "LIST after REMOVE")
    app, other = Vapid(t.h.root), Vapid(t.h.root)
    f3 = sub_req(c, app_key=app.pub)
    t.eq(f3["app_key"], app.pub, "restricted subscription echoes its key")
    cap3 = f3["endpoint"].decode().rsplit("/", 1)[1]
    t.eq(t.push(cap3, extra=[other.header(t.origin)]).status, 403, "other key")
    t.eq(t.push(cap3, ttl="0").status, 401, "no vapid")
    raw = t.h.redis.command("KEYS", "*")
    t.check(cap.encode() not in raw and cap3.encode() not in raw, "capabilities stored hashed")


@test("subscriptions: provider_require_key refuses SUBSCRIBE without an app_key (FORBIDDEN); "
      "a relay without the door answers FORBIDDEN and no capability bit")
def t_subscribe_refusals(t):
    t.relay(provider_require_key=True)
    c = t.client("dave")
    f = sub_req(c)
    t.eq(f["status"], w.S_FORBIDDEN, "no app_key %r" % f)
    t.eq(sub_req(c, app_key=Vapid(t.h.root).pub)["status"], 0, "with app_key")
    t.d.stop()
    t.d = t.h.start_daemon({})
    c2 = Client(t.d, t.h.pki["dave"])
    c2.connect()
    wf = c2.hello()
    t.h.track_client(c2)
    t.check(not wf.get("capabilities", 0) & w.CAP_WEBPUSH, "no door, no capability bit")
    t.eq(sub_req(c2)["status"], w.S_FORBIDDEN, "no door")


@test("subscriptions: provider_max_subscriptions per device: past it QUOTA_EXCEEDED (counted), "
      "also for SUBSCRIBEs sent at once; a REMOVE makes room")
def t_sub_limit(t):
    t.relay(provider_max_subscriptions=3)
    c = t.client("alice")
    mids = [os.urandom(16) for _ in range(5)]
    for mid in mids:  # all at once: the limit is checked in the same Redis step as the write
        c.send_frame(w.SUBSCRIBE, {"msg_id": mid})
    got = {}
    for _ in mids:
        f = c.expect(w.SUBSCRIPTION, timeout=10)
        got[f["msg_id"]] = f
    t.eq(sorted(got), sorted(mids), "every SUBSCRIBE answered")
    ok = [f for f in got.values() if f["status"] == 0]
    t.eq(len(ok), 3, "subscriptions made %r" % [f["status"] for f in got.values()])
    t.eq(sorted(f["status"] for f in got.values() if f["status"]), [w.S_QUOTA_EXCEEDED] * 2,
         "the two past the limit")
    t.eq(len(sub_req(c, flags=w.LIST)["sub_ids"]), 3, "LIST")
    t.eq(t.metric('sealpush_provider_refusals_total{limit="subscriptions"}'), 2, "counted")
    t.eq(sub_req(c)["status"], w.S_QUOTA_EXCEEDED, "still full")
    t.eq(sub_req(c, flags=w.REMOVE, sub_id=ok[0]["sub_id"])["status"], 0, "REMOVE")
    t.eq(sub_req(c)["status"], 0, "room again after a REMOVE")
    t.eq(t.metric('sealpush_provider_refusals_total{limit="subscriptions"}'), 3, "counted")


@test("subscriptions: with Redis stopped (SIGSTOP) every SUBSCRIBE, REMOVE and LIST is answered "
      "TRY_LATER and a push 503 within store_timeout (counted); with Redis killed at once; "
      "both work again when Redis is back")
def t_store_down(t):
    t.relay(store_timeout="500ms")
    c = Client(t.d, t.h.pki["bob"])
    c.connect()
    c.hello(flags=w.SEND_ONLY)
    t.h.track_client(c)
    f = sub_req(c)
    t.eq(f["status"], 0, "subscribe with Redis up %r" % f)
    cap, sub = f["endpoint"].decode().rsplit("/", 1)[1], f["sub_id"]

    def all_three(timeout):
        reqs = {}
        for flags, fields in ((0, {}), (w.LIST, {}), (w.REMOVE, {"sub_id": sub})):
            mid = os.urandom(16)
            reqs[mid] = flags
            c.send_frame(w.SUBSCRIBE, dict(fields, msg_id=mid), flags=flags)
        got = {}
        end = time.monotonic() + timeout
        while len(got) < 3 and time.monotonic() < end:
            fr = c.expect(w.SUBSCRIPTION, timeout=max(0.1, end - time.monotonic()))
            got[fr["msg_id"]] = fr["status"]
        t.eq(sorted(got), sorted(reqs), "every request answered (%r)" % got)
        return got

    pid = t.h.redis.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        got = all_three(5)
        took = time.monotonic() - t0
        t.eq(set(got.values()), {w.S_TRY_LATER}, "statuses with Redis stopped")
        t.check(took < 3, "answered after %.1f s (store_timeout 0.5 s)" % took)
        r = t.push(cap, timeout=8)
        t.eq(r.status, 503, "push with Redis stopped %r" % r)
    finally:
        os.kill(pid, signal.SIGCONT)
    t.check(t.metric('sealpush_provider_refusals_total{limit="store_timeout"}') >= 1,
            "store timeouts counted")
    t.h.redis.proc.kill()
    t.h.redis.proc.wait()
    got = all_three(5)
    t.eq(set(got.values()), {w.S_TRY_LATER}, "statuses with Redis gone")
    t.eq(t.push(cap).status, 503, "push with Redis gone")
    t.h.redis.start()
    end = time.monotonic() + 10
    st = None
    while time.monotonic() < end and st != 0:
        time.sleep(0.3)
        st = sub_req(c)["status"]
    t.eq(st, 0, "SUBSCRIBE once Redis is back")


@test("cache: pushes to a busy subscription are answered from the workers' capability caches "
      "(counted); a REMOVE through this relay is 410 at once on every worker; a removal made "
      "by another relay (written straight into Redis) is 410 here within provider_cache_ttl")
def t_cache(t):
    def door_sub(ttl):
        t.relay(provider_cache_ttl=ttl)
        c = Client(t.d, t.h.pki["carol"])
        c.connect()
        c.hello(flags=w.SEND_ONLY)  # no receiver: pushes are queued (201 without an ACK)
        t.h.track_client(c)
        f = sub_req(c)
        return c, f["endpoint"].decode().rsplit("/", 1)[1], f["sub_id"]

    def warm(cap):
        # each curl is a new connection: SO_REUSEPORT spreads them over both workers
        for i in range(10):
            r = t.push(cap, http=HTTPS[i % 2])
            t.eq(r.status, 201, "warm-up push %d %r" % (i, r))

    c, cap, sub = door_sub("60s")
    warm(cap)
    hits = t.metric('sealpush_provider_cache_total{result="hit"}')
    t.check(hits >= 6, "cache hits %r after 10 pushes to one subscription" % hits)
    t.eq(sub_req(c, flags=w.REMOVE, sub_id=sub)["status"], 0, "REMOVE")
    for i in range(8):
        r = t.push(cap, http=HTTPS[i % 2])
        t.eq(r.status, 410, "push %d right after REMOVE through this relay %r" % (i, r))
    t.check(t.metric('sealpush_provider_cache_total{result="stale"}') >= 1, "stale counted")
    t.d.stop()
    # another relay's REMOVE: the same writes, but not through this relay's epoch
    c, cap2, _ = door_sub("1500ms")
    warm(cap2)
    kh = hashlib.sha256(base64.urlsafe_b64decode(cap2 + "=")).hexdigest()
    t.h.redis.command("DEL", "sp:wp:cap:" + kh)
    t.h.redis.command("HSET", "sp:wp:cap:" + kh, "gone", "1")
    gone_at = time.monotonic()
    seen = []
    while time.monotonic() - gone_at < 1.5 + 0.3:
        seen.append(t.push(cap2, http=HTTPS[len(seen) % 2]).status)
    t.check(set(seen) <= {201, 410}, "statuses %r" % seen)
    for i in range(6):
        t.eq(t.push(cap2, http=HTTPS[i % 2]).status, 410, "after provider_cache_ttl (%d)" % i)
    t.note("another relay's removal: %d of %d pushes in the first 1.8 s answered 201 (cached)" %
           (seen.count(201), len(seen)))


@test("door: SIGHUP after the server certificate is rotated: new door connections get the "
      "new certificate (verified against the CA), and the door keeps answering")
def t_door_reload(t):
    d = t.relay()

    def door_cert():
        ctx = ssl.create_default_context(cafile=t.h.pki.ca_crt)
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection((LOOPBACK, t.pport), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=LOOPBACK) as ss:
                return ss.getpeercert(binary_form=True)

    before = door_cert()
    t.h.pki.run("server", t.h.pki.dir, "--name", "localhost", "--ip", LOOPBACK)
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    after = before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.1)
        after = door_cert()
    t.check(after != before, "the door still shows the old certificate 5 s after SIGHUP")
    t.check(d.alive(), "sealpushd died on SIGHUP")


# --- limits -------------------------------------------------------------------------------

def h2_conn(t):
    """A raw TLS connection negotiating h2, for hand-made HTTP/2 frames."""
    ctx = ssl.create_default_context(cafile=t.h.pki.ca_crt)
    ctx.set_alpn_protocols(["h2"])
    s = socket.create_connection((LOOPBACK, t.pport), timeout=5)
    ss = ctx.wrap_socket(s, server_hostname=LOOPBACK)
    t.eq(ss.selected_alpn_protocol(), "h2", "ALPN")
    ss.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b""))
    return ss


def h2_frame(ftype, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + \
        payload


def hpack_literal(name, value):
    """A literal header field without indexing, new name (RFC 7541 6.2.2), no Huffman."""
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name.encode()) + s(value.encode())


def h2_headers(path, extra=()):
    block = b"".join(hpack_literal(k, v) for k, v in [(":method", "POST"), (":scheme", "https"),
                                                         (":path", path),
                                                         (":authority", "127.0.0.1")] +
                     list(extra))
    return block


def h2_read_frames(ss, duration):
    """Frames (type, flags, sid, payload) read for up to duration seconds (or until EOF)."""
    buf = b""
    out = []
    end = time.monotonic() + duration
    ss.settimeout(0.2)
    while time.monotonic() < end:
        try:
            d = ss.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            break
        if not d:
            break
        buf += d
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            out.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF,
                        buf[9:9 + n]))
            buf = buf[9 + n:]
    return out


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


@test("limits: a stream flood past provider_max_streams is refused with RST_STREAM "
      "REFUSED_STREAM and counted; the connection and others keep working")
def t_stream_flood(t):
    t.relay(provider_max_streams=10)
    cap, _ = t.subscribe("alice")
    ss = h2_conn(t)
    hb = h2_headers("/push/" + cap, [("ttl", "60"), ("content-encoding", "aes128gcm")])
    # 200 streams whose bodies never come: END_HEADERS (4), no END_STREAM.
    ss.sendall(b"".join(h2_frame(1, 4, 2 * i + 1, hb) for i in range(200)))
    frames = h2_read_frames(ss, 1.5)
    refused = [f for f in frames if f[0] == 3 and f[3] == (7).to_bytes(4, "big")]
    t.check(len(refused) >= 150, "REFUSED_STREAM resets: %d of 190" % len(refused))
    t.eq(t.push(cap).status, 201, "another connection still pushes")
    t.check(t.metric('sealpush_provider_refusals_total{limit="streams"}') >= 150,
            "stream refusals counted")
    ss.close()


@test("limits: slow clients that never finish their bodies: bounded memory, cut after "
      "provider_request_timeout (h2 RST_STREAM, h1.1 408), others unaffected")
def t_slow(t):
    t.relay(provider_request_timeout="1s", provider_max_connections=200,
            provider_max_streams=50)
    cap, _ = t.subscribe("alice")
    before = rss_kib(t.d.proc.pid)
    conns = []
    hb = h2_headers("/push/" + cap, [("ttl", "60"), ("content-encoding", "aes128gcm"),
                                     ("content-length", "4000")])
    for _ in range(40):
        ss = h2_conn(t)
        ss.sendall(b"".join(h2_frame(1, 4, 2 * i + 1, hb) + h2_frame(0, 0, 2 * i + 1,
                                                                       b"x" * 1000)
                            for i in range(50)))
        conns.append(ss)
    h1 = []
    for _ in range(20):
        ctx = ssl.create_default_context(cafile=t.h.pki.ca_crt)
        ctx.set_alpn_protocols(["http/1.1"])
        s = ctx.wrap_socket(socket.create_connection((LOOPBACK, t.pport), timeout=5),
                            server_hostname=LOOPBACK)
        s.sendall(("POST /push/%s HTTP/1.1\r\nHost: x\r\nTTL: 5\r\nContent-Encoding: "
                   "aes128gcm\r\nContent-Length: 4000\r\n\r\n" % cap).encode() + b"y" * 100)
        h1.append(s)
    time.sleep(0.3)
    during = rss_kib(t.d.proc.pid)
    t0 = time.monotonic()
    r = t.push(cap)
    t.eq(r.status, 201, "a normal push meanwhile %r" % r)
    t.check(time.monotonic() - t0 < 3, "the normal push was slow")
    # 2000 half-sent streams of at most 4 KiB each: about 8 MiB at most, plus TLS buffers.
    t.note("RSS %d KiB before, %d KiB with 2000 slow streams and 20 slow HTTP/1.1 bodies" % (
        before, during))
    t.check(during - before < 64 * 1024, "memory grew %d KiB" % (during - before))
    frames = h2_read_frames(conns[0], 2.5)
    cancels = [f for f in frames if f[0] == 3 and f[3] == (8).to_bytes(4, "big")]
    t.check(len(cancels) >= 50, "RST_STREAM CANCEL after the request timeout: %d" % len(cancels))
    h1[0].settimeout(3)
    got = h1[0].recv(4096)
    t.check(got.startswith(b"HTTP/1.1 408"), "HTTP/1.1 slow body: %r" % got[:40])
    t.check(t.metric('sealpush_provider_refusals_total{limit="request_timeout"}') >= 2000,
            "request timeouts counted")
    for s_ in conns + h1:
        s_.close()


@test("limits: provider_max_connections refuses more connections (counted); header bytes "
      "over provider_max_header answer 431")
def t_conn_header_limits(t):
    t.relay(provider_max_connections=3, provider_max_header="2k")
    cap, _ = t.subscribe("alice")
    held = [h2_conn(t) for _ in range(3)]
    r = t.push(cap)
    t.check(r.status == 0, "a fourth connection was served: %r" % r)
    t.check(t.metric('sealpush_provider_refusals_total{limit="connections"}') >= 1, "counted")
    for s_ in held:
        s_.close()
    time.sleep(0.3)
    for http in HTTPS:
        r = t.push(cap, extra=["X-Big: " + "a" * 3000], http=http)
        t.eq(r.status, 431, "big headers (%s) %r" % (http, r))


@test("HTTP/1.1: ten pipelined pushes of 4 KiB in one write (more than one head and body) are "
      "all answered, in order, on the same connection")
def t_h1_pipeline(t):
    t.relay()
    cap, _ = t.subscribe("bob")
    ctx = ssl.create_default_context(cafile=t.h.pki.ca_crt)
    ctx.set_alpn_protocols(["http/1.1"])
    s_ = ctx.wrap_socket(socket.create_connection((LOOPBACK, t.pport), timeout=10),
                         server_hostname=LOOPBACK)
    req = b""
    for i in range(10):
        body = fake_body(4000 - 86, rs=4096)
        req += ("POST /push/%s HTTP/1.1\r\nHost: x\r\nTTL: 60\r\nTopic: t%d\r\n"
                "Content-Encoding: aes128gcm\r\nContent-Length: %d\r\n\r\n" % (
                    cap, i, len(body))).encode() + body
    s_.sendall(req)
    got = b""
    end = time.monotonic() + 15
    while got.count(b"HTTP/1.1 ") < 10 and time.monotonic() < end:
        d = s_.recv(65536)
        if not d:
            break
        got += d
    t.eq(got.count(b"HTTP/1.1 201 Created"), 10, "pipelined answers %r" % got[-200:])
    s_.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sealpushd", default=os.environ.get("SEALPUSHD"))
    ap.add_argument("--sealpush-ca", default=os.environ.get("SEALPUSH_CA"))
    ap.add_argument("--sealpush", default=os.environ.get("SEALPUSH"))
    ap.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER", "redis-server"))
    ap.add_argument("--npm", action="store_true", help="the web-push (npm) tests")
    ap.add_argument("--npm-dir", default=os.path.join(tempfile.gettempdir(), "sp-webpush-npm"))
    ap.add_argument("--probe", help="sp_wp_probe (libsealpush's RFC 8291 decryption)")
    ap.add_argument("-k", dest="pattern")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    global OPTS
    OPTS = args
    tests = [x for x in (NPM_TESTS if args.npm else TESTS)
             if not args.pattern or args.pattern in x[0]]
    need = (args.redis_server, "node", "npm") if args.npm else (args.redis_server, "curl")
    for tool in need:
        if not shutil.which(tool):
            print("1..0 # SKIP %s not found" % tool)
            return 0
    h = Harness(args.sealpushd, args.sealpush_ca, args.redis_server, keep=args.keep)
    return run_tap(h, tests, T, verbose=args.verbose, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
