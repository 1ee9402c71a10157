#!/usr/bin/env python3
"""End-to-end tests of the key directory and its transparency log (issue 16, PROTOCOL.md 15):
the real sealpushd and redis-server, devices speaking frames built by spwire.py, user cards
made and every answer verified here, independently of the C code: RFC 9162 hashing and proofs
with hashlib, signatures with the openssl CLI, device cards by the real `sealpush card` and
`sealpush verify-card`. The test plays a malicious operator by editing the relay's Redis data.

Needs python3, redis-server and the openssl CLI.
"""
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import spwire as w
from harness import Client, cli_args, cli_main, fail, test_registry

TESTS, test = test_registry(default_timeout=90)
OPTS = None


# --- RFC 9162, written from the RFC ---

def leaf_hash(d):
    return hashlib.sha256(b"\x00" + d).digest()


def node_hash(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(m, n, root_m, root_n, proof):
    """RFC 9162 2.1.4.2."""
    if m == 0 or m > n:
        return False
    if m == n:
        return not proof and root_m == root_n
    if m & (m - 1) == 0:
        proof = [root_m] + list(proof)
    if not proof:
        return False
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root_m and sr == root_n


def parse_proof(b):
    n = b[0]
    if len(b) != 1 + 32 * n:
        fail("a proof of %d bytes says %d hashes" % (len(b), n))
    return [b[1 + 32 * i:33 + 32 * i] for i in range(n)]


# --- keys and signatures with the openssl CLI ---

class Keys:
    def __init__(self, directory):
        self.dir = directory
        self.n = 0

    def path(self, suffix):
        self.n += 1
        return os.path.join(self.dir, "k%d%s" % (self.n, suffix))

    def run(self, *args, data=None):
        r = subprocess.run(["openssl"] + list(args), input=data, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        return r

    def new_key(self):
        p = self.path(".pem")
        r = self.run("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", p)
        if r.returncode != 0:
            fail("openssl ecparam: %s" % r.stderr.decode())
        return p

    def spki(self, key_pem):
        r = self.run("pkey", "-in", key_pem, "-pubout", "-outform", "DER")
        return r.stdout

    def sign(self, key_pem, data):
        r = self.run("dgst", "-sha256", "-sign", key_pem, data=data)
        if r.returncode != 0:
            fail("openssl dgst -sign: %s" % r.stderr.decode())
        return r.stdout

    def verify(self, pub_pem, data, sig):
        sp = self.path(".sig")
        with open(sp, "wb") as f:
            f.write(sig)
        r = self.run("dgst", "-sha256", "-verify", pub_pem, "-signature", sp, data=data)
        return r.returncode == 0


def b64(b):
    return base64.b64encode(b).decode()


# --- PROTOCOL.md 15: user cards, log entries, tree heads ---

def ucard_tbs(handle, ukey, devices, issued_at):
    t = b"sealpush/1 user card\x00" + bytes([1, len(handle)]) + handle.encode()
    t += struct.pack(">H", len(ukey)) + ukey + bytes([len(devices)])
    for d in devices:
        t += bytes.fromhex(d["token"]) + hashlib.sha256(base64.b64decode(d["sig"])).digest()
    return t + struct.pack(">Q", issued_at)


def make_ucard(keys, user_key, handle, device_cards, issued_at):
    ukey = keys.spki(user_key)
    sig = keys.sign(user_key, ucard_tbs(handle, ukey, device_cards, issued_at))
    return json.dumps({"v": 1, "handle": handle, "ukey": b64(ukey), "issued_at": issued_at,
                       "devices": device_cards, "sig": b64(sig)}, sort_keys=True).encode()


def parse_entry(e):
    if not e.startswith(b"sealpush/1 log entry\x00"):
        fail("not a log entry: %r" % e[:30])
    hl = e[21]
    handle = e[22:22 + hl].decode()
    cl = struct.unpack(">I", e[22 + hl:26 + hl])[0]
    if len(e) != 26 + hl + cl:
        fail("log entry of the wrong length")
    return handle, e[26 + hl:]


def parse_head(h):
    size, ts = struct.unpack(">QQ", h[:16])
    root = h[16:48]
    sl = struct.unpack(">H", h[48:50])[0]
    if len(h) != 50 + sl:
        fail("tree head of the wrong length")
    return {"size": size, "ts": ts, "root": root, "sig": h[50:], "raw": h}


class Verifier:
    """What a client does with an answer: the head's signature by the log key, the entry's
    inclusion, the user card's signature, every device card (sealpush verify-card), and the
    consistency of every newer head with the last one it kept."""

    def __init__(self, t):
        self.t = t
        self.last = None  # the last head seen

    def head(self, raw):
        h = parse_head(raw)
        tbs = b"sealpush/1 tree head\x00" + raw[:48]
        if not self.t.keys.verify(self.t.log_pub, tbs, h["sig"]):
            fail("the tree head's signature does not hold with the log key")
        return h

    def card(self, entry, want_handle):
        handle, text = parse_entry(entry)
        if handle != want_handle:
            fail("entry for %r, looked up %r" % (handle, want_handle))
        c = json.loads(text)
        if c["handle"] != handle:
            fail("the card's handle is not the entry's")
        ukey = base64.b64decode(c["ukey"])
        pub = os.path.join(self.t.tmp, "ukey-%s.der" % hashlib.sha256(ukey).hexdigest()[:8])
        with open(pub, "wb") as f:
            f.write(ukey)
        pem = pub + ".pem"
        subprocess.run(["openssl", "pkey", "-pubin", "-inform", "DER", "-in", pub, "-out", pem],
                       check=True, capture_output=True)
        ok = self.t.keys.verify(pem, ucard_tbs(handle, ukey, c["devices"], c["issued_at"]),
                                base64.b64decode(c["sig"]))
        return c, ok

    def answer(self, f, want_handle):
        """Checks a DIR_ANSWER to a lookup; returns (card, user_sig_ok)."""
        fl = f.fields
        h = self.head(fl["tree_head"])
        index = struct.unpack(">Q", fl["leaf_index"])[0]
        if not verify_inclusion(index, h["size"], leaf_hash(fl["dir_entry"]),
                                parse_proof(fl["inclusion"]), h["root"]):
            raise Detected("inclusion proof of leaf %d in a tree of %d does not verify" % (
                index, h["size"]))
        self.advance(h, fl.get("consistency"))
        return self.card(fl["dir_entry"], want_handle)

    def advance(self, h, consistency):
        if self.last is not None and h["size"] >= self.last["size"]:
            proof = parse_proof(consistency) if consistency else []
            if not verify_consistency(self.last["size"], h["size"], self.last["root"],
                                      h["root"], proof):
                raise Detected("head of size %d is not consistent with the head of size %d "
                               "seen before: the log was forked" % (h["size"],
                                                                     self.last["size"]))
        elif self.last is not None:
            raise Detected("the log shrank from %d to %d" % (self.last["size"], h["size"]))
        self.last = h


class Detected(Exception):
    """A verifier caught the relay lying."""


class T:
    def __init__(self, h):
        self.h = h
        self.notes = []
        self.cleanups = []
        self.d = None
        self.tmp = tempfile.mkdtemp(dir=h.root)
        self.keys = Keys(self.tmp)
        pki = h.pki
        if "log" not in pki.devices:
            pki.device("log")  # the log key: issued by the relay's CA like any identity
            for name in ("alice2", "bob2", "erin"):
                pki.device(name)
        self.log_key = pki["log"].key
        self.log_pub = os.path.join(self.tmp, "log.pub")
        subprocess.run(["openssl", "x509", "-in", pki["log"].crt, "-pubkey", "-noout", "-out",
                        self.log_pub], check=True, capture_output=True)

    def relay(self, **config):
        cfg = {"directory_log_key": self.log_key}
        cfg.update(config)
        self.d = self.h.start_daemon(cfg)
        return self.d

    def client(self, who, flags=0):
        c = Client(self.d, self.h.pki[who])
        c.connect()
        welcome = c.hello(flags=flags)
        self.h.track_client(c)
        c.welcome = welcome
        return c

    def device_card(self, who):
        """The device's real contact card (sealpush init + sealpush card)."""
        dev = self.h.pki[who]
        cache = os.path.join(self.tmp, who + ".card")
        if os.path.exists(cache):
            with open(cache) as f:
                return json.load(f)
        base = ["--cert", dev.crt, "--key", dev.key]
        if not os.path.exists(dev.key[:-4] + ".seal.key"):
            subprocess.run([OPTS.sealpush, "init"] + base, check=True, capture_output=True)
        r = subprocess.run([OPTS.sealpush, "card"] + base, check=True, capture_output=True)
        with open(cache, "wb") as f:
            f.write(r.stdout)
        return json.loads(r.stdout)

    def publish(self, c, card):
        mid = os.urandom(16)
        c.send_frame(w.DIR_PUBLISH, {"msg_id": mid, "dir_card": card})
        f = c.expect(w.DIR_ANSWER)
        if f.fields["msg_id"] != mid:
            fail("DIR_ANSWER for another request")
        return f

    def lookup(self, c, handle=None, token=None, tree_size=None, head=False):
        mid = os.urandom(16)
        fields = {"msg_id": mid}
        if handle is not None:
            fields["handle"] = handle.encode()
        if token is not None:
            fields["token"] = token
        if tree_size is not None:
            fields["tree_size"] = struct.pack(">Q", tree_size)
        c.send_frame(w.DIR_LOOKUP, fields, flags=w.LOOKUP_HEAD if head else 0)
        f = c.expect(w.DIR_ANSWER)
        if f.fields["msg_id"] != mid:
            fail("DIR_ANSWER for another request")
        return f


def expect_status(f, status, what):
    got = f.fields["status"]
    if got != status:
        fail("%s: status %s (%s), want %s" % (what, w.status_name(got),
                                                f.fields.get("reason", b"").decode(errors="replace"),
                                                w.status_name(status)))


def alice_setup(t, devices=("alice", "alice2"), at=1000):
    """Alice's user key and card with the given devices, published by her first device."""
    if not hasattr(t, "alice_key"):
        t.alice_key = t.keys.new_key()
    card = make_ucard(t.keys, t.alice_key, "alice", [t.device_card(d) for d in devices], at)
    a1 = t.client("alice")
    f = t.publish(a1, card)
    expect_status(f, w.S_DELIVERED, "alice publishes her card")
    return a1, f


# --- Redis, as the operator sees it ---

class RedisRaw:
    """A tiny RESP client on the harness's redis socket (one reply per command)."""

    def __init__(self, redis):
        self.sock_path = redis.sock

    def command(self, *args):
        import socket
        req = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in (x if isinstance(x, bytes) else
                                                      str(x).encode() for x in args))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(self.sock_path)
            s.sendall(req)
            buf = b""
            while True:
                got = self._parse(buf, 0)
                if got is not None:
                    return got[0]
                chunk = s.recv(1 << 16)
                if not chunk:
                    fail("redis closed the connection")
                buf += chunk

    def _parse(self, b, i):
        end = b.find(b"\r\n", i)
        if end < 0:
            return None
        t, line = b[i:i + 1], b[i + 1:end]
        if t in (b"+", b":"):
            return (int(line) if t == b":" else line), end + 2
        if t == b"-":
            fail("redis: %s" % line.decode())
        if t == b"$":
            n = int(line)
            if n < 0:
                return None, end + 2
            if len(b) < end + 2 + n + 2:
                return None
            return b[end + 2:end + 2 + n], end + 4 + n
        if t == b"*":
            n, pos, out = int(line), end + 2, []
            for _ in range(max(n, 0)):
                got = self._parse(b, pos)
                if got is None:
                    return None
                out.append(got[0])
                pos = got[1]
            return out, pos
        fail("redis: unexpected reply %r" % b[:20])


# --- the tests ---

@test("WELCOME has the DIRECTORY capability, not without directory_log_key")
def t_capability(t):
    t.relay()
    c = t.client("alice")
    if not c.welcome.fields.get("capabilities", 0) & w.CAP_DIRECTORY:
        fail("no DIRECTORY bit in WELCOME with directory_log_key set")
    t.d.stop()
    t.d = t.h.start_daemon({})
    c = t.client("bob")
    if c.welcome.fields.get("capabilities", 0) & w.CAP_DIRECTORY:
        fail("DIRECTORY bit without a directory")
    f = t.lookup(c, handle="alice")
    expect_status(f, w.S_FORBIDDEN, "a lookup on a relay without a directory")


@test("publish, then look up by handle and by token: card, inclusion proof, signed head")
def t_publish_lookup(t):
    t.relay()
    a1, f = alice_setup(t)
    h = parse_head(f.fields["tree_head"])
    if h["size"] != 1 or struct.unpack(">Q", f.fields["leaf_index"])[0] != 0:
        fail("first card: leaf %r, head size %d" % (f.fields["leaf_index"], h["size"]))
    b1 = t.client("bob")
    v = Verifier(t)
    c, ok = v.answer(t.lookup(b1, handle="alice"), "alice")
    if not ok:
        fail("alice's user card does not verify")
    tokens = [d["token"] for d in c["devices"]]
    want = [t.h.pki[n].token.hex() for n in ("alice", "alice2")]
    if tokens != want:
        fail("devices %s, want %s" % (tokens, want))
    for d in c["devices"]:
        p = os.path.join(t.tmp, "dc.json")
        with open(p, "w") as fh:
            json.dump(d, fh)
        r = subprocess.run([OPTS.sealpush, "verify-card", p], capture_output=True)
        if r.returncode != 0 or r.stdout.decode().strip() != d["token"]:
            fail("sealpush verify-card refused a device card: %s" % r.stderr.decode())
    c2, ok = v.answer(t.lookup(b1, token=t.h.pki["alice2"].token), "alice")
    if not ok or c2 != c:
        fail("lookup by alice2's token gave another card")
    expect_status(t.lookup(b1, handle="nobody"), w.S_BAD_DEVICE_TOKEN, "unknown handle")
    expect_status(t.lookup(b1, token=t.h.pki["carol"].token), w.S_BAD_DEVICE_TOKEN,
                  "unknown token")
    expect_status(t.lookup(b1, handle="ali"), w.S_BAD_DEVICE_TOKEN, "a prefix is no match")


@test("the relay refuses unsigned, foreign, stale and disallowed cards")
def t_refusals(t):
    t.relay(directory_handle_pattern="^[a-z]{3,16}$")
    a1, _ = alice_setup(t)
    b1 = t.client("bob")
    bob_key = t.keys.new_key()
    # A card that does not list the publishing device.
    card = make_ucard(t.keys, bob_key, "bob", [t.device_card("bob2")], 1000)
    expect_status(t.publish(b1, card), w.S_FORBIDDEN, "a card without the publisher")
    # A card whose signature does not hold.
    bad = json.loads(make_ucard(t.keys, bob_key, "bob", [t.device_card("bob")], 1000))
    bad["issued_at"] = 1001
    expect_status(t.publish(b1, json.dumps(bad).encode()), w.S_FORBIDDEN, "a forged signature")
    # bob claims alice's handle with his own user key.
    card = make_ucard(t.keys, bob_key, "alice", [t.device_card("bob")], 5000)
    f = t.publish(b1, card)
    expect_status(f, w.S_FORBIDDEN, "another user key for alice's handle")
    # bob lists alice's device.
    card = make_ucard(t.keys, bob_key, "bob", [t.device_card("bob"), t.device_card("alice2")],
                      1000)
    expect_status(t.publish(b1, card), w.S_FORBIDDEN, "a device of another handle")
    # A replay of an older card of alice's.
    old = make_ucard(t.keys, t.alice_key, "alice", [t.device_card("alice")], 999)
    expect_status(t.publish(a1, old), w.S_FORBIDDEN, "an older card")
    # The operator's handle pattern.
    card = make_ucard(t.keys, bob_key, "bo", [t.device_card("bob")], 1000)
    expect_status(t.publish(b1, card), w.S_FORBIDDEN, "a handle outside the pattern")
    expect_status(t.publish(b1, b"{not json"), w.S_FORBIDDEN, "not JSON")
    card = make_ucard(t.keys, bob_key, "bob", [t.device_card("bob")], 1000)
    expect_status(t.publish(b1, card), w.S_DELIVERED, "bob's own card")
    m = t.d.admin_get("/metrics")[1]
    for want in ('sealpush_directory_publishes_total{result="ok"} 2',
                 'sealpush_directory_publishes_total{result="refused"} 3',
                 'sealpush_directory_publishes_total{result="invalid"} 4'):
        if want not in m:
            fail("metrics lack %r: %s" % (want, [l for l in m.splitlines() if "directory" in l]))


@test("a device added by the operator (Redis edited) is refused by senders")
def t_operator_adds_device(t):
    t.relay()
    alice_setup(t)
    r = RedisRaw(t.h.redis)
    idx = int(r.command("HGET", "sp:{dir}:handle", "alice"))
    entry = r.command("HGET", "sp:{dir}:leaf", str(idx))
    handle, text = parse_entry(entry)
    card = json.loads(text)
    card["devices"].append(t.device_card("carol"))  # the operator's own device
    forged_text = json.dumps(card).encode()
    forged = (entry[:22 + len(handle)] + struct.pack(">I", len(forged_text)) + forged_text)
    b1 = t.client("bob")
    v = Verifier(t)
    v.answer(t.lookup(b1, handle="alice"), "alice")  # the honest answer first
    # 1. Only the leaf rewritten: the inclusion proof no longer holds.
    r.command("HSET", "sp:{dir}:leaf", str(idx), forged)
    try:
        v.answer(t.lookup(b1, handle="alice"), "alice")
        fail("a forged leaf passed the inclusion check")
    except Detected as e:
        t.notes.append("leaf only: %s" % e)
    # 2. The operator also rebuilds the tree around it and signs a new head with the log key
    # (it has it): the proofs hold, but alice's signature does not cover carol.
    r.command("DEL", *["sp:{dir}:" + k for k in ("size", "sth", "node", "leaf", "handle", "tok",
                                                  "htok", "hist", "ukey", "iat")])
    # re-publish through the relay itself is impossible (its checks refuse the forged card),
    # so the operator writes the log directly, with the relay's own log key:
    write_log(t, [forged])
    v2 = Verifier(t)
    card2, ok = v2.answer(t.lookup(b1, handle="alice"), "alice")
    if ok:
        fail("a card with a device alice did not sign verified")
    if t.device_card("carol")["token"] not in [d["token"] for d in card2["devices"]]:
        fail("the forged card did not come back")
    t.notes.append("rebuilt log: user signature refused")
    # And a client that kept the earlier head sees the history rewritten.
    try:
        v.answer(t.lookup(b1, handle="alice"), "alice")
        fail("a rewritten log went unnoticed by a client that kept a head")
    except Detected as e:
        t.notes.append("kept head: %s" % e)


def write_log(t, entries):
    """The operator writes a log of its own into Redis: leaves, nodes, indexes and a head
    signed with the log key, as sp_dirlog would (PROTOCOL.md 15.5)."""
    r = RedisRaw(t.h.redis)
    hashes = [leaf_hash(e) for e in entries]
    n = len(hashes)
    level = hashes
    lv = 0
    while level:
        for i, h in enumerate(level):
            r.command("HSET", "sp:{dir}:node", "%d:%d" % (lv, i), h)
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        lv += 1
    for i, e in enumerate(entries):
        handle, text = parse_entry(e)
        r.command("HSET", "sp:{dir}:leaf", str(i), e)
        r.command("HSET", "sp:{dir}:handle", handle, str(i))
        for d in json.loads(text)["devices"]:
            r.command("HSET", "sp:{dir}:tok", bytes.fromhex(d["token"]), handle)

    def mth(a, k):
        if k == 1:
            return hashes[a]
        s = 1 << ((k - 1).bit_length() - 1)
        return node_hash(mth(a, s), mth(a + s, k - s))

    body = struct.pack(">QQ", n, int(time.time() * 1000)) + mth(0, n)
    sig = t.keys.sign(t.log_key, b"sealpush/1 tree head\x00" + body)
    r.command("SET", "sp:{dir}:sth", body + struct.pack(">H", len(sig)) + sig)
    r.command("SET", "sp:{dir}:size", str(n))


@test("a forked log (two heads that are not consistent) is detected by a client that saw "
      "the other branch")
def t_fork(t):
    t.relay()
    alice_setup(t)
    b1 = t.client("bob")
    bob_key = t.keys.new_key()
    expect_status(t.publish(b1, make_ucard(t.keys, bob_key, "bob", [t.device_card("bob")], 1)),
                  w.S_DELIVERED, "bob's card")
    seen = Verifier(t)  # bob's view: the honest branch, size 2
    seen.answer(t.lookup(b1, handle="alice"), "alice")
    # The operator shows another branch: the same first leaf, then a different second one
    # (carol's card as "bob"), a third to make it longer, a head signed with the log key.
    r = RedisRaw(t.h.redis)
    e0 = r.command("HGET", "sp:{dir}:leaf", "0")
    carol_key = t.keys.new_key()
    other = make_ucard(t.keys, carol_key, "bob", [t.device_card("carol")], 1)
    e1 = b"sealpush/1 log entry\x00" + bytes([3]) + b"bob" + struct.pack(">I", len(other)) + other
    third = make_ucard(t.keys, carol_key, "carol", [t.device_card("dave")], 1)
    e2 = (b"sealpush/1 log entry\x00" + bytes([5]) + b"carol" + struct.pack(">I", len(third)) +
          third)
    r.command("DEL", *["sp:{dir}:" + k for k in ("size", "sth", "node", "leaf", "handle", "tok",
                                                  "htok", "hist", "ukey", "iat")])
    write_log(t, [e0, e1, e2])
    # A fresh client believes the fork (it has nothing to compare with)...
    fresh = Verifier(t)
    card, ok = fresh.answer(t.lookup(b1, handle="bob"), "bob")
    if not ok or card["devices"][0]["token"] != t.device_card("carol")["token"]:
        fail("the fork's own view does not verify on its own (test bug)")
    # ... bob, who kept the size-2 head, does not: the relay cannot prove 2 -> 3.
    try:
        seen.answer(t.lookup(b1, handle="alice", tree_size=seen.last["size"]), "alice")
        fail("a forked log went unnoticed")
    except Detected as e:
        t.notes.append(str(e))
    # The head request says the same (and `sealpush log-head` fingerprints differ).
    f = t.lookup(b1, head=True, tree_size=2)
    expect_status(f, w.S_DELIVERED, "head request")
    h = parse_head(f.fields["tree_head"])
    if verify_consistency(2, h["size"], seen.last["root"], h["root"],
                          parse_proof(f.fields["consistency"])):
        fail("a consistency proof from the other branch verified")


@test("a removed device stops resolving; the card without it is what senders get")
def t_remove_device(t):
    t.relay()
    a1, _ = alice_setup(t)
    b1 = t.client("bob")
    v = Verifier(t)
    v.answer(t.lookup(b1, token=t.h.pki["alice2"].token), "alice")
    card = make_ucard(t.keys, t.alice_key, "alice", [t.device_card("alice")], 2000)
    f = t.publish(a1, card)
    expect_status(f, w.S_DELIVERED, "alice removes alice2")
    expect_status(t.lookup(b1, token=t.h.pki["alice2"].token), w.S_BAD_DEVICE_TOKEN,
                  "lookup of the removed device")
    c, ok = v.answer(t.lookup(b1, handle="alice", tree_size=v.last["size"]), "alice")
    if not ok or [d["token"] for d in c["devices"]] != [t.h.pki["alice"].token.hex()]:
        fail("alice's card after the removal lists %s" % [d["token"] for d in c["devices"]])
    hist = RedisRaw(t.h.redis).command("HGET", "sp:{dir}:hist", "alice")
    if hist != b"0,1,":
        fail("alice's history in the log: %r" % hist)


@test("lookups are rate limited per device, counted, and answered with retry_after")
def t_rate_limit(t):
    t.relay(directory_lookup_limit=5, directory_lookup_window="2s")
    alice_setup(t)
    b1 = t.client("bob")
    for i in range(5):
        expect_status(t.lookup(b1, handle="alice"), w.S_DELIVERED, "lookup %d" % i)
    f = t.lookup(b1, handle="alice")
    expect_status(f, w.S_TOO_MANY_REQUESTS, "lookup 6")
    if not 0 < f.fields.get("retry_after", 0) <= 2000:
        fail("retry_after %r" % f.fields.get("retry_after"))
    # Another connection of the same device shares the count; another device does not.
    b1b = t.client("bob", flags=w.SEND_ONLY)
    expect_status(t.lookup(b1b, handle="alice"), w.S_TOO_MANY_REQUESTS, "same device")
    c1 = t.client("carol")
    expect_status(t.lookup(c1, handle="alice"), w.S_DELIVERED, "another device")
    m = t.d.admin_get("/metrics")[1]
    if 'sealpush_directory_lookups_total{result="limited"} 2' not in m:
        fail("limited lookups not counted")
    time.sleep(2.2)
    expect_status(t.lookup(b1, handle="alice"), w.S_DELIVERED, "after the window")


def cli(t, who, *args, expect=0):
    dev = t.h.pki[who]
    env = dict(os.environ, SEALPUSH_LOG_CERT=t.h.pki["log"].crt)
    r = subprocess.run([OPTS.sealpush, "--server", "127.0.0.1:%d" % t.d.port, "--ca",
                        t.h.pki.ca_crt, "--cert", dev.crt, "--key", dev.key] + list(args),
                       capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    out, err = r.stdout.decode(), r.stderr.decode()
    if expect is not None and r.returncode != expect:
        fail("sealpush %s (%s): exit %d, want %d: %s%s" % (" ".join(args), who, r.returncode,
                                                         expect, out, err))
    return out, err


@test("the CLI: user init, device add / list / remove, log-head, audit; a rewritten log and "
      "a card under another user key are caught", timeout=180)
def t_cli(t):
    t.relay()
    for who in ("dave", "alice2", "bob"):
        t.device_card(who)  # sealpush init: their sealing keys
    # dave's device starts the user "dave" (a fresh key file: no earlier user key).
    for suffix in (".user.key", ".user.handle", ".user.card", ".dirhead"):
        p = t.h.pki["dave"].key[:-4] + suffix
        if os.path.exists(p):
            os.unlink(p)
    for suffix in (".dirhead",):
        p = t.h.pki["bob"].key[:-4] + suffix
        if os.path.exists(p):
            os.unlink(p)
    out, _ = cli(t, "dave", "user", "init", "dave")
    t.notes.append(out.strip())
    card_file = os.path.join(t.tmp, "alice2-contact.json")
    with open(card_file, "w") as f:
        json.dump(t.device_card("alice2"), f)
    cli(t, "dave", "device", "add", card_file)
    out, _ = cli(t, "bob", "device", "list", "dave")
    toks = [t.h.pki[n].token.hex() for n in ("dave", "alice2")]
    if not all(x in out for x in toks):
        fail("device list lacks a device: %s" % out)
    out, _ = cli(t, "bob", "device", "list", toks[1])
    if "user dave" not in out:
        fail("lookup by token: %s" % out)
    out, _ = cli(t, "bob", "log-head")
    if not out.startswith("size 2\n") or "fingerprint " not in out:
        fail("log-head: %r" % out)
    cli(t, "dave", "device", "remove", toks[1])
    out, _ = cli(t, "bob", "device", "list", "dave")
    if toks[1] in out or toks[0] not in out:
        fail("after remove: %s" % out)
    out, _ = cli(t, "bob", "log-head")
    if not out.startswith("size 3\n"):
        fail("log-head after the removal: %r" % out)
    out, _ = cli(t, "dave", "audit")
    if "audit ok" not in out:
        fail("audit: %r" % out)
    # The operator replaces dave's card with one of its own user key (carol's device), in a
    # log it rebuilds and signs with the log key: a fork for everyone who kept a head.
    carol_key = t.keys.new_key()
    entries = []
    for at in (5, 6, 7, 8):
        forged = make_ucard(t.keys, carol_key, "dave", [t.device_card("carol")], at)
        entries.append(b"sealpush/1 log entry\x00" + bytes([4]) + b"dave" +
                       struct.pack(">I", len(forged)) + forged)
    r = RedisRaw(t.h.redis)
    r.command("DEL", *["sp:{dir}:" + k for k in ("size", "sth", "node", "leaf", "handle", "tok",
                                                  "htok", "hist", "ukey", "iat")])
    write_log(t, entries)
    _, err = cli(t, "bob", "log-head", expect=65)
    if "WARNING" not in err or "forked" not in err:
        fail("log-head after a rewrite: %r" % err)
    _, err = cli(t, "dave", "audit", expect=65)
    if "WARNING" not in err:
        fail("audit after a rewrite: %r" % err)
    # A device that never saw a head (its head file gone) is not told of a fork, but audit
    # still sees that the card is not under dave's user key.
    os.unlink(t.h.pki["dave"].key[:-4] + ".dirhead")
    _, err = cli(t, "dave", "audit", expect=65)
    if "ANOTHER user key" not in err:
        fail("audit of a card under another key: %r" % err)
    t.notes.append("audit: %s" % err.strip().splitlines()[0])


def fresh_user_files(t, who):
    for suffix in (".user.key", ".user.handle", ".user.card", ".dirhead"):
        p = t.h.pki[who].key[:-4] + suffix
        if os.path.exists(p):
            os.unlink(p)


@test("audit checks every log entry of the user's handle: an entry the operator slipped in "
      "(and hid from lookups) is caught", timeout=180)
def t_audit_history(t):
    t.relay()
    for who in ("erin", "carol", "bob"):
        t.device_card(who)
    fresh_user_files(t, "erin")
    p = t.h.pki["bob"].key[:-4] + ".dirhead"  # a head of another test's log
    if os.path.exists(p):
        os.unlink(p)
    cli(t, "erin", "user", "init", "erin")
    out, _ = cli(t, "erin", "audit")
    if "1 log entry for erin" not in out:
        fail("audit of a new user: %r" % out)
    # The history is the device's own handle only: no handle or token names another's.
    b1 = t.client("bob")
    mid = os.urandom(16)
    b1.send_frame(w.DIR_LOOKUP, {"msg_id": mid}, flags=w.LOOKUP_HISTORY)
    expect_status(b1.expect(w.DIR_ANSWER), w.S_BAD_DEVICE_TOKEN, "history of a device no "
                  "handle lists")
    b1.send_frame(w.DIR_LOOKUP, {"msg_id": mid, "handle": b"erin"}, flags=w.LOOKUP_HISTORY)
    expect_status(b1.expect(w.DIR_ANSWER), w.S_FORBIDDEN, "history naming a handle")
    # The operator: for one moment erin's handle takes its own user key, its own device
    # (carol) publishes a card for "erin" through the relay's ordinary path (a valid leaf and
    # a head signed with the log key), then the indexes are put back so that lookups of erin
    # show her own card again. Only the log remembers.
    r = RedisRaw(t.h.redis)
    keys = ("handle", "ukey", "htok", "iat")
    saved = {k: r.command("HGET", "sp:{dir}:" + k, "erin") for k in keys}
    evil = t.keys.new_key()
    r.command("HSET", "sp:{dir}:ukey", "erin", hashlib.sha256(t.keys.spki(evil)).digest())
    c1 = t.client("carol")
    card = make_ucard(t.keys, evil, "erin", [t.device_card("carol")], int(time.time()) + 100)
    expect_status(t.publish(c1, card), w.S_DELIVERED, "the operator's card for erin")
    for k in keys:
        r.command("HSET", "sp:{dir}:" + k, "erin", saved[k])
    r.command("HDEL", "sp:{dir}:tok", t.h.pki["carol"].token)
    r.command("HSET", "sp:{dir}:tok", t.h.pki["erin"].token, "erin")
    if r.command("HGET", "sp:{dir}:hist", "erin") != b"0,1,":
        fail("erin's history: %r" % r.command("HGET", "sp:{dir}:hist", "erin"))
    # A lookup shows erin's own card: the old audit's check of the current card passes...
    out, _ = cli(t, "bob", "device", "list", "erin")
    if t.h.pki["carol"].token.hex() in out or t.h.pki["erin"].token.hex() not in out:
        fail("lookup after the operator's restore: %s" % out)
    # ... but the history holds the operator's entry: audit warns and exits 65.
    out, err = cli(t, "erin", "audit", expect=65)
    if "WARNING: log entry 1 for erin is signed by ANOTHER user key" not in err:
        fail("audit did not name the slipped-in entry: %r %r" % (out, err))
    t.notes.append(err.strip().splitlines()[0])


@test("two users with two devices each talk with send --to-user: every device of both ends up "
      "with the conversation", timeout=180)
def t_to_user(t):
    t.relay()
    for who in ("alice", "alice2", "bob", "bob2"):
        t.device_card(who)
        for suffix in (".user.key", ".user.handle", ".user.card", ".dirhead"):
            p = t.h.pki[who].key[:-4] + suffix
            if os.path.exists(p):
                os.unlink(p)
    cli(t, "alice", "user", "init", "ann")
    cli(t, "bob", "user", "init", "ben")
    for owner, dev in (("alice", "alice2"), ("bob", "bob2")):
        path = os.path.join(t.tmp, dev + "-contact.json")
        with open(path, "w") as f:
            json.dump(t.device_card(dev), f)
        cli(t, owner, "device", "add", path)
    # The second devices learn whose they are (send --to-user copies to our user's others).
    for dev, handle in (("alice2", "ann"), ("bob2", "ben")):
        with open(t.h.pki[dev].key[:-4] + ".user.handle", "w") as f:
            f.write(handle + "\n")
    want = {"alice": 1, "alice2": 2, "bob": 1, "bob2": 2}
    env = dict(os.environ, SEALPUSH_LOG_CERT=t.h.pki["log"].crt)
    listeners = {}
    for who, count in want.items():
        dev = t.h.pki[who]
        listeners[who] = subprocess.Popen(
            [OPTS.sealpush, "--server", "127.0.0.1:%d" % t.d.port, "--ca", t.h.pki.ca_crt,
             "--cert", dev.crt, "--key", dev.key, "listen", "--count", str(count),
             "--timeout", "60"] + (["--users"] if who == "bob" else []),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    time.sleep(1.0)
    out, _ = cli(t, "alice", "send", "--to-user", "ben", "--message", "hello ben, from ann")
    t.notes.append("ann -> ben: " + " | ".join(out.strip().splitlines()))
    if len(out.strip().splitlines()) != 3:
        fail("ann's message went to %d devices, want 3 (ben's two, ann's other)" % (
            len(out.strip().splitlines())))
    out, _ = cli(t, "bob", "send", "--to-user", "ann", "--message", "hello ann, from ben")
    if len(out.strip().splitlines()) != 3:
        fail("ben's message went to %d devices, want 3" % len(out.strip().splitlines()))
    got = {}
    for who, p in listeners.items():
        try:
            o, e = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
        got[who] = o.decode()
        if p.returncode != 0:
            fail("%s's listen exited %d: %s" % (who, p.returncode, e.decode()))
    expect = {"alice": ["hello ann, from ben"],
              "alice2": ["hello ben, from ann", "hello ann, from ben"],
              "bob": ["hello ben, from ann"],
              "bob2": ["hello ben, from ann", "hello ann, from ben"]}
    for who, texts in expect.items():
        for text in texts:
            if text not in got[who]:
                fail("%s did not get %r: %r" % (who, text, got[who]))
    # listen --users names the sender's user, as the directory (verified) says.
    if "ann:%s " % t.h.pki["alice"].token.hex() not in got["bob"]:
        fail("bob's listen --users does not name ann: %r" % got["bob"])
    # The removed device gets no new messages.
    cli(t, "bob", "device", "remove", t.h.pki["bob2"].token.hex())
    out, _ = cli(t, "alice", "send", "--to-user", "ben", "--message", "after the removal")
    if t.h.pki["bob2"].token.hex() in out or len(out.strip().splitlines()) != 2:
        fail("a send after bob2's removal went to: %r" % out)


def main():
    global OPTS
    OPTS = cli_args(__doc__)
    return cli_main(OPTS, TESTS, T)


if __name__ == "__main__":
    sys.exit(main())
