#!/usr/bin/env python3
"""End-to-end tests of device enrollment (issue 18, PROTOCOL.md 16): the real sealpushd and
redis-server, codes made by the real sealpush-ca (and the admin endpoint), devices enrolled by
the real `sealpush enroll`, CSRs made with the openssl CLI (and tampered with here), then the
enrolled devices speaking frames built by spwire.py over mutual TLS.

Needs python3, redis-server and the openssl CLI.
"""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

import spwire as w
from harness import (LOOPBACK, PKI, Client, Device, cli_args, cli_main, fail, free_port,
                     test_registry, try_refused)

TESTS, test = test_registry(default_timeout=90)
OPTS = None


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class T:
    def __init__(self, h):
        self.h = h
        self.notes = []
        self.cleanups = []
        self.d = None
        self.pport = None
        self.dir = tempfile.mkdtemp(dir=h.root)

    def note(self, msg):
        self.notes.append(msg)

    def eq(self, got, want, what):
        if got != want:
            fail("%s: got %r, want %r" % (what, got, want))

    def ok(self, cond, what):
        if not cond:
            fail(what)

    def intermediate(self):
        """The PKI's intermediate CA (made once per run), for the relay's enroll_ca_*."""
        pki = self.h.pki
        if not os.path.exists(os.path.join(pki.dir, "intermediate.crt")):
            pki.run("intermediate", pki.dir, "--days", "30")
        return (os.path.join(pki.dir, "intermediate.crt"),
                os.path.join(pki.dir, "intermediate.key"))

    def relay(self, **config):
        crt, key = self.intermediate()
        self.pport = free_port()
        cfg = {"provider_listen": "%s:%d" % (LOOPBACK, self.pport),
               "enroll_ca_cert": crt, "enroll_ca_key": key}
        cfg.update(config)
        self.d = self.h.start_daemon(cfg)
        return self.d

    def code(self, *args):
        r = subprocess.run([self.h.sealpush_ca, "enroll-code", "--redis", self.h.redis.url] +
                           list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20)
        self.eq(r.returncode, 0, "sealpush-ca enroll-code: %s" % r.stderr.decode())
        code = r.stdout.decode().strip()
        self.ok(re.fullmatch(r"[A-Za-z0-9_-]{24}", code), "a code of 24 base64url: %r" % code)
        return code

    def cli(self, *args, timeout=30):
        return subprocess.run([OPTS.sealpush] + [str(a) for a in args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def enroll(self, name, code, expect=0):
        """`sealpush enroll` for a new device name; returns (Device or None, result)."""
        crt = os.path.join(self.dir, name + ".crt")
        key = os.path.join(self.dir, name + ".key")
        r = self.cli("--server", "%s:%d" % (LOOPBACK, self.pport), "--ca", self.h.pki.ca_crt,
                     "--cert", crt, "--key", key, "enroll", "--code", code)
        self.eq(r.returncode, expect, "sealpush enroll exit status (stderr: %s)" %
                r.stderr.decode().strip())
        if expect != 0:
            self.ok(not os.path.exists(key), "a refused enrollment leaves no key behind")
            return None, r
        tok = r.stdout.decode().strip()
        dev = Device(name, crt, key, w.token_of_cert_file(crt), tok)
        self.eq(dev.token.hex(), tok, "the token enroll printed is the certificate's")
        return dev, r

    def post(self, body, path="/enroll", method="POST"):
        """(status, text) of one request to the provider door over HTTPS."""
        ctx = ssl.create_default_context(cafile=self.h.pki.ca_crt)
        c = http.client.HTTPSConnection(LOOPBACK, self.pport, context=ctx, timeout=10)
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode(errors="replace")
        c.close()
        return r.status, text

    def csr(self, *req_args, key_args=("-newkey", "ec", "-pkeyopt",
                                       "ec_paramgen_curve:P-256")):
        """A CSR (DER) made by the openssl CLI."""
        out = os.path.join(self.dir, "r%d.der" % len(os.listdir(self.dir)))
        if "-subj" not in req_args:
            req_args = req_args + ("-subj", "/CN=device")
        subprocess.run(["openssl", "req", "-new", *key_args, "-nodes", "-keyout",
                        out + ".key", "-outform", "DER", "-out", out, *req_args],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(out, "rb") as f:
            return f.read()

    def refusals(self, reason):
        st, body = self.d.admin_get("/metrics")
        m = re.search(r'^sealpush_enroll_refusals_total\{reason="%s"\} (\d+)$' % reason, body,
                      re.M)
        return int(m.group(1)) if m else None

    def metric(self, name):
        st, body = self.d.admin_get("/metrics")
        m = re.search(r"^%s (\d+)$" % name, body, re.M)
        return int(m.group(1)) if m else None

    def connect(self, dev):
        c = Client(self.d, dev)
        c.connect()
        c.hello()
        self.h.track_client(c)
        return c


def receives(t, dev):
    """dev connects over mTLS, alice sends to its token, dev gets it."""
    c = t.connect(dev)
    a = t.connect(t.h.pki["alice"])
    mid = a.send_msg([dev.token], blob=b"hello enrolled")
    f = c.expect(w.DELIVER)
    t.eq(f["blob"], b"hello enrolled", "the enrolled device's DELIVER")
    c.ack([f["msg_id"]])
    r = a.collect_results({mid: 1}, 5.0)
    t.eq(r[mid][0], w.S_DELIVERED, "the sender's status")


@test("enroll: from zero (key, CSR, certificate, sealing key, card) with a one-time code; the "
      "device connects and receives; the code cannot be used twice")
def t_from_zero(t):
    t.relay()
    code = t.code("--label", "fleet-a")
    dev, r = t.enroll("new1", code)
    t.ok(os.path.exists(dev.crt + ".card"), "enroll wrote the card")
    v = t.cli("verify-card", dev.crt + ".card")
    t.eq(v.returncode, 0, "the card verifies")
    t.eq(v.stdout.decode().strip(), dev.token.hex(), "the card is of the enrolled token")
    pem = open(dev.crt).read()
    t.eq(pem.count("BEGIN CERTIFICATE"), 2, "cert file holds the chain (device, intermediate)")
    st = os.stat(dev.key).st_mode & 0o777
    t.eq(st, 0o600, "the key's mode")
    receives(t, dev)
    _, r2 = t.enroll("new2", code, expect=75)
    t.ok(b"unknown or used" in r2.stderr, "second use refused: %s" % r2.stderr)
    t.eq(t.refusals("code"), 1, "refusals{reason=code}")
    t.eq(t.metric("sealpush_enroll_issued_total"), 1, "sealpush_enroll_issued_total")
    t.ok(any("label=\"fleet-a\"" in ln for ln in t.d.log_lines("enrolled")),
         "the enrollment is logged with the code's label")


@test("enroll: a code with --uses 2 enrolls two devices, then no more; an expired code is "
      "refused; a code only the Lua expiry check sees as expired is refused as expired")
def t_uses_expiry(t):
    t.relay()
    code = t.code("--uses", "2")
    t.enroll("u1", code)
    t.enroll("u2", code)
    t.enroll("u3", code, expect=75)
    short = t.code("--expires", "1s")
    time.sleep(2.2)
    _, r = t.enroll("e1", short, expect=75)
    t.ok(b"unknown or used" in r.stderr or b"expired" in r.stderr, r.stderr)
    # A record whose exp has passed while the key lives on (Redis expiry is lazy).
    late = t.code("--expires", "1h")
    import hashlib
    key = "sp:enroll:code:" + hashlib.sha256(late.encode()).hexdigest()
    t.h.redis.command("HSET", key, "exp", str(int(time.time()) - 5))
    _, r = t.enroll("e2", late, expect=75)
    t.ok(b"expired" in r.stderr, "refused as expired: %s" % r.stderr)
    t.eq(t.refusals("code_expired"), 1, "refusals{reason=code_expired}")
    t.eq(t.h.redis.command("EXISTS", key), b":0\r\n", "the expired record is deleted")


@test("enroll: the stored code is only a hash (no plaintext code in Redis)")
def t_hashed(t):
    t.relay()
    code = t.code()
    import hashlib
    key = "sp:enroll:code:" + hashlib.sha256(code.encode()).hexdigest()
    keys = t.h.redis.command("KEYS", "sp:enroll:*")
    t.ok(key.encode() in keys, "the code's record is under its SHA-256: %r" % keys)
    t.ok(code.encode() not in keys, "no key holds the plaintext code")
    vals = t.h.redis.command("HGETALL", key)
    t.ok(b"uses" in vals and code.encode() not in vals, "the record holds no plaintext code")
    t.ok(int(t.h.redis.command("PTTL", key)[1:-2]) > 0, "the record expires in Redis too")


@test("enroll: bad CSRs are refused with a clear reason and counted (tampered signature, RSA "
      "key, P-384 key, extension request, extra subject, a CN naming a token, not DER)")
def t_bad_csr(t):
    t.relay()
    code = t.code("--uses", "20")
    good = t.csr("-subj", "/CN=phone")
    # Tampered: the signed subject changed (the signature no longer verifies).
    tampered = good.replace(b"phone", b"phonf")
    cases = [
        ("signature", tampered, "does not verify"),
        ("key_type", t.csr("-subj", "/CN=x", key_args=("-newkey", "rsa:2048")), "key type"),
        ("key_size", t.csr("-subj", "/CN=x", key_args=(
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384")), "key size"),
        ("extensions", t.csr("-subj", "/CN=x", "-addext", "basicConstraints=CA:TRUE"),
         "extension"),
        ("subject", t.csr("-subj", "/CN=x/O=evil"), "subject"),
        ("subject", t.csr("-subj", "/CN=" + "ab" * 32), "cannot pick a token"),
        ("csr_der", good + b"\x00", "not a CSR"),
    ]
    for reason, der, text in cases:
        before = t.refusals(reason) or 0
        st, body = t.post(json.dumps({"code": code, "csr": b64u(der)}))
        t.eq(st, 400, "%s: status (%s)" % (reason, body.strip()))
        t.ok(text in body, "%s: reason %r in %r" % (reason, text, body))
        t.eq(t.refusals(reason), before + 1, "refusals{reason=%s}" % reason)
    st, body = t.post("not json")
    t.eq(st, 400, "not JSON")
    st, body = t.post(json.dumps({"code": code, "csr": b64u(good)}), method="PUT")
    t.eq(st, 405, "PUT")
    # None of that used the code: a good CSR still enrolls.
    st, body = t.post(json.dumps({"code": code, "csr": b64u(good)}))
    t.eq(st, 201, "the good CSR (%s)" % body)
    j = json.loads(body)
    t.eq(len(j["token"]), 64, "token")
    t.ok("BEGIN CERTIFICATE" in j["certificate"], "certificate")
    # The certificate is the relay's choice: CN = token, no CA, clientAuth.
    crt = os.path.join(t.dir, "good.crt")
    open(crt, "w").write(j["certificate"])
    text = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-text"],
                          stdout=subprocess.PIPE, check=True).stdout.decode()
    subj = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-subject", "-nameopt",
                           "RFC2253"], stdout=subprocess.PIPE, check=True).stdout.decode()
    t.eq(subj.strip(), "subject=CN=" + j["token"], "subject CN is the token")
    t.ok("CA:FALSE" in text and "TLS Web Client Authentication" in text, text)


@test("enroll: rate limit per source address (enroll_rate_per_addr), counted")
def t_rate_addr(t):
    t.relay(enroll_rate_per_addr=3)
    code = t.code("--uses", "10")
    good = t.csr()
    got = []
    for _ in range(4):
        st, body = t.post(json.dumps({"code": code, "csr": b64u(good)}))
        got.append(st)
    t.eq(got, [201, 201, 201, 429], "statuses")
    t.eq(t.refusals("rate_addr"), 1, "refusals{reason=rate_addr}")


@test("enroll: rate limit per code (enroll_rate_per_code), counted")
def t_rate_code(t):
    t.relay(enroll_rate_per_code=2)
    code = t.code("--uses", "10")
    good = t.csr()
    got = [t.post(json.dumps({"code": code, "csr": b64u(good)}))[0] for _ in range(3)]
    t.eq(got, [201, 201, 429], "statuses")
    t.eq(t.refusals("rate_code"), 1, "refusals{reason=rate_code}")


@test("enroll: the admin endpoint POST /enroll-codes makes a code an app backend can hand out")
def t_admin(t):
    t.relay()
    c = http.client.HTTPConnection(LOOPBACK, t.d.admin_port, timeout=5)
    c.request("POST", "/enroll-codes?uses=2&expires=10m&label=backend")
    r = c.getresponse()
    j = json.loads(r.read())
    t.eq(r.status, 201, "status")
    t.eq((j["uses"], j["label"]), (2, "backend"), "the answer")
    c.request("GET", "/enroll-codes")
    r = c.getresponse()
    r.read()
    t.eq(r.status, 405, "GET")
    c.request("POST", "/enroll-codes?uses=0")
    r = c.getresponse()
    r.read()
    t.eq(r.status, 400, "uses=0")
    c.close()
    t.enroll("a1", j["code"])
    t.enroll("a2", j["code"])
    t.enroll("a3", j["code"], expect=75)
    t.eq(t.metric("sealpush_enroll_codes_made_total"), 1, "codes made")


@test("enroll: off without enroll_ca_cert (404, counted); a relay refuses to start with "
      "enroll_ca_cert but no key")
def t_off(t):
    t.pport = free_port()
    t.d = t.h.start_daemon({"provider_listen": "%s:%d" % (LOOPBACK, t.pport)})
    st, body = t.post(json.dumps({"code": "x" * 24, "csr": "AA"}))
    t.eq(st, 404, "status")
    t.eq(t.refusals("disabled"), 1, "refusals{reason=disabled}")
    crt, _ = t.intermediate()
    r = subprocess.run([t.h.sealpushd, "--enroll-ca-cert", crt, "--provider-listen",
                        "%s:%d" % (LOOPBACK, free_port()), "--tls-cert", t.h.pki.server_crt,
                        "--tls-key", t.h.pki.server_key, "--client-ca", t.h.pki.ca_crt,
                        "--check-config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    t.ok(r.returncode != 0 and b"enroll_ca_key" in r.stderr, r.stderr)


@test("enroll: a revoked intermediate stops new enrollments and its devices' handshakes after "
      "reload (SIGHUP), and its connected devices get GOAWAY CERT_REVOKED; a new intermediate "
      "enrolls again", timeout=120)
def t_revoked_intermediate(t):
    # A PKI of its own: revoking its intermediate must not touch the other tests'.
    pki = PKI(os.path.join(t.dir, "pki2"), t.h.sealpush_ca).init()
    alice = pki.device("alice2")
    im_serial = pki.run("intermediate", pki.dir).strip()
    saved = t.h.pki
    t.h.pki = pki
    t.cleanups.append(lambda: setattr(t.h, "pki", saved))
    t.relay()
    dev, _ = t.enroll("r1", t.code())
    c = t.connect(dev)
    pki.run("revoke-serial", pki.dir, im_serial)
    t.d.signal(signal.SIGHUP)
    # Connected through the revoked intermediate: cut at the reload, like a revoked device.
    c.expect_goaway(w.E_CERT_REVOKED, timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not t.d.log_lines("enroll_ca_unusable"):
        time.sleep(0.05)
    t.ok(t.d.log_lines("enroll_ca_unusable"), "the relay saw its intermediate revoked")
    _, r = t.enroll("r2", t.code(), expect=75)
    t.ok(b"unusable" in r.stderr, r.stderr)
    t.eq(t.refusals("ca"), 1, "refusals{reason=ca}")
    how, where = try_refused(t.d, dev)
    t.note("the device of the revoked intermediate: refused at the %s (%s)" % (where, how))
    # The root's own devices are unaffected.
    t.connect(alice)
    # Rotation: a new intermediate (the relay's files replaced), SIGHUP, enrollment again.
    pki.run("intermediate", pki.dir)
    t.d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(t.d.log_lines("enroll_reloaded")) < 1:
        time.sleep(0.05)
    dev3, _ = t.enroll("r3", t.code())
    t.connect(dev3)


def der_csr_of(t, keyfile, subj="/CN=device"):
    out = keyfile + ".csr.der"
    subprocess.run(["openssl", "req", "-new", "-key", keyfile, "-subj", subj, "-outform", "DER",
                    "-out", out], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return open(out, "rb").read()


@test("renew: a device whose certificate is close to expiry renews by itself during a long "
      "`sealpush listen` (RENEW over its connection), keeps its token and its queue, and "
      "reconnects with the new certificate", timeout=120)
def t_renew_listen(t):
    t.relay()
    pki = t.h.pki
    pki.run("device", pki.dir, "renewer", "--days", "10", "--backdate", "9")
    crt = os.path.join(t.dir, "renewer.crt")
    key = os.path.join(t.dir, "renewer.key")
    shutil.copy(os.path.join(pki.dir, "renewer.crt"), crt)
    shutil.copy(os.path.join(pki.dir, "renewer.key"), key)
    old_serial = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-serial"],
                                stdout=subprocess.PIPE, check=True).stdout
    dev = Device("renewer", crt, key, w.token_of_cert_file(crt), "")
    a = t.connect(t.h.pki["alice"])
    m1 = a.send_msg([dev.token], blob=b"queued-before", ttl=600)
    r = a.collect_results({m1: 1}, 5.0)
    t.eq(r[m1][0], w.S_QUEUED, "the first message is queued while the device is away")
    p = subprocess.Popen([OPTS.sealpush, "--server", "%s:%d" % (LOOPBACK, t.d.port), "--ca",
                          pki.ca_crt, "--cert", crt, "--key", key, "listen", "--count", "2",
                          "--timeout", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    t.cleanups.append(lambda: p.kill() if p.poll() is None else None)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not t.d.log_lines("renewed"):
        time.sleep(0.05)
    t.ok(t.d.log_lines("renewed"), "the relay renewed the certificate")
    t.ok("same_key=yes" in t.d.log_lines("renewed")[0], t.d.log_lines("renewed")[0])
    # The file is replaced once RENEWED is in; then a second message, on the same connection.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and open(crt).read().count("BEGIN CERTIFICATE") < 2:
        time.sleep(0.05)
    m2 = a.send_msg([dev.token], blob=b"sent-after", ttl=600)
    out, err = p.communicate(timeout=40)
    t.eq(p.returncode, 0, "listen exit status (%s)" % err.decode())
    t.ok(b"queued-before" in out and b"sent-after" in out, "both messages: %r" % out)
    t.ok(b"renewed the certificate" in err, "listen reports the renewal: %r" % err)
    pem = open(crt).read()
    t.eq(pem.count("BEGIN CERTIFICATE"), 2, "the new file is the chain")
    t.eq(w.token_of_cert_file(crt), dev.token, "the token stays (same key)")
    new_serial = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-serial"],
                                stdout=subprocess.PIPE, check=True).stdout
    t.ok(new_serial != old_serial, "a new certificate")
    end = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-checkend",
                          str(20 * 86400)], stdout=subprocess.PIPE)
    t.eq(end.returncode, 0, "the new certificate is valid for weeks (enroll_cert_days, "
         "never past the 30-day intermediate)")
    t.eq(t.metric("sealpush_enroll_renewed_total"), 1, "sealpush_enroll_renewed_total")
    c = t.connect(Device("renewer", crt, key, dev.token, ""))
    c.ping()


@test("renew: the renewal point comes while `sealpush listen` is connected (the timer, not the "
      "connect): it renews then, on the same connection, and keeps receiving", timeout=120)
def t_renew_timer(t):
    # Enrolled for one day: notBefore 300 s ago, notAfter in a day. --renew-at puts the
    # renewal point about 12 s after the enrollment.
    t.relay(enroll_cert_days=1)
    dev, _ = t.enroll("timer1", t.code())
    share = (300.0 + 12.0) / (86400.0 + 300.0)
    a = t.connect(t.h.pki["alice"])
    p = subprocess.Popen([OPTS.sealpush, "--server", "%s:%d" % (LOOPBACK, t.d.port), "--ca",
                          t.h.pki.ca_crt, "--cert", dev.crt, "--key", dev.key, "listen",
                          "--count", "2", "--timeout", "60", "--renew-at", "%.6f" % share],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    t.cleanups.append(lambda: p.kill() if p.poll() is None else None)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            "conn_ready" in ln and dev.token.hex()[:8] in ln for ln in t.d.log_lines()):
        time.sleep(0.05)
    t0 = time.monotonic()
    m1 = a.send_msg([dev.token], blob=b"before-renewal", ttl=600)
    t.ok(not t.d.log_lines("renewed"), "not renewed at connect (the point is ahead)")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not t.d.log_lines("renewed"):
        time.sleep(0.1)
    took = time.monotonic() - t0
    t.ok(t.d.log_lines("renewed"), "renewed while connected")
    t.ok(took > 3, "renewed by the timer, %.1fs after connecting" % took)
    t.note("renewed %.1f s after the connection was ready" % took)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if open(dev.crt).read().count("BEGIN CERTIFICATE") == 2 and \
                w.token_of_cert_file(dev.crt) == dev.token:
            break
        time.sleep(0.05)
    a.send_msg([dev.token], blob=b"after-renewal", ttl=600)
    out, err = p.communicate(timeout=40)
    t.eq(p.returncode, 0, "listen exit status (%s)" % err.decode())
    t.ok(b"before-renewal" in out and b"after-renewal" in out, "both messages: %r" % out)
    t.ok(b"renewed the certificate" in err, err)
    t.eq(len([ln for ln in t.d.log_lines("conn_ready") if dev.token.hex()[:8] in ln]), 1,
         "one connection throughout")


@test("renew: over raw frames: same key (token kept), a new key (a new token), a bad CSR and "
      "a second RENEW too soon are refused with non-fatal errors; off without enrollment")
def t_renew_frames(t):
    t.relay(renew_min_interval="30s")
    bob = t.h.pki["bob"]
    c = t.connect(bob)
    t.ok(c.welcome.get("capabilities", 0) & w.CAP_RENEW, "WELCOME offers renewal")
    rid = os.urandom(16)
    c.send_frame(w.RENEW, {"msg_id": rid, "csr": der_csr_of(t, bob.key)})
    f = c.expect(w.RENEWED)
    t.eq(f["msg_id"], rid, "msg_id")
    t.eq(f["token"], bob.token, "same key: the same token")
    t.ok(f["not_after"] > time.time() + 20 * 86400, "not_after: the intermediate's (30 days)")
    t.ok(b"BEGIN CERTIFICATE" in f["cert_chain"], "a PEM chain")
    c.send_frame(w.RENEW, {"msg_id": os.urandom(16), "csr": der_csr_of(t, bob.key)})
    e = c.expect(w.ERROR)
    t.eq(e["code"], w.E_RENEW_REFUSED, "too soon")
    c.ping()
    # Another connection: a new key, and a CSR that was tampered with.
    carol = t.h.pki["carol"]
    c2 = t.connect(carol)
    newkey = os.path.join(t.dir, "new.key")
    subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out",
                    newkey], check=True)
    bad = der_csr_of(t, newkey, "/CN=phone").replace(b"phone", b"phonf")
    c2.send_frame(w.RENEW, {"msg_id": os.urandom(16), "csr": bad})
    e = c2.expect(w.ERROR)
    t.eq((e["code"], e.get("frame_type")), (w.E_RENEW_REFUSED, w.RENEW), "tampered CSR")
    t.ok(not (e.flags & w.CLOSING), "non-fatal")
    c2.send_frame(w.RENEW, {"msg_id": os.urandom(16), "csr": der_csr_of(t, newkey)})
    f = c2.expect(w.RENEWED)
    t.ok(f["token"] != carol.token, "a new key: a new token")
    c2.ping()
    t.eq(t.refusals("signature"), 1, "refusals{reason=signature}")
    t.eq(t.refusals("renew_rate"), 1, "refusals{reason=renew_rate}")


@test("renew: a relay without enrollment neither offers nor serves RENEW")
def t_renew_off(t):
    t.d = t.h.start_daemon({})
    c = Client(t.d, t.h.pki["dave"])
    c.connect()
    c.hello()
    t.h.track_client(c)
    t.ok(not (c.welcome.get("capabilities", 0) & w.CAP_RENEW), "no capability 0x04")
    c.send_frame(w.RENEW, {"msg_id": os.urandom(16), "csr": der_csr_of(t, t.h.pki["dave"].key)})
    e = c.expect(w.ERROR)
    t.eq(e["code"], w.E_RENEW_UNAVAILABLE, "RENEW_UNAVAILABLE")
    c.ping()


def main():
    global OPTS
    OPTS = cli_args(__doc__)
    return cli_main(OPTS, TESTS, T)


if __name__ == "__main__":
    sys.exit(main())
