#!/usr/bin/env python3
"""End-to-end tests of libsealpush and the sealpush CLI: the real sealpushd, a real
redis-server, real mutual TLS; the CLI (client/sealpush-cli.c) and a small program over the
library (tests/e2e/sp_client_probe.c) as the clients.

    test_client.py --sealpushd BUILD/server/sealpushd --sealpush-ca BUILD/tools/sealpush-ca \\
                   --sealpush BUILD/client/sealpush --probe BUILD/tests/e2e/sp_client_probe
    test_client.py ... -k listen    # only tests whose name contains "listen"
    test_client.py ... --keep       # keep the temp dir

Prints TAP; exits 1 if a test failed. Each test starts its own sealpushd.
"""

import argparse
import base64
import json
import os
import queue
import re
import shutil
import socket
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import spwire as w  # noqa: E402
from harness import (Client, Cluster, Harness, TestFailure, fail, run_tap, spawn,  # noqa: E402
                     stop_process, LOOPBACK)

TESTS = []
CLI = None
PROBE = None

# Exit codes of the CLI (client/README.md).
EX_OK, EX_TIMEOUT, EX_USAGE, EX_VERIFY, EX_NOINPUT = 0, 1, 64, 65, 66
EX_CONNECT, EX_INTERNAL, EX_TLS, EX_REFUSED, EX_CONFIG = 69, 70, 71, 75, 78


def test(name, timeout=30):
    def deco(fn):
        TESTS.append((name, fn, timeout))
        return fn
    return deco


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self):
        return "exit %d, stdout %r, stderr %r" % (self.rc, self.out[:400], self.err[:400])


class T:
    def __init__(self, h):
        self.h = h
        self.notes = []
        self.cleanups = []
        self.home = os.path.join(h.root, "home")  # an empty HOME: no user config file
        os.makedirs(self.home, exist_ok=True)

    def daemon(self, **config):
        return self.h.start_daemon(config)

    def dev(self, name):
        return self.h.pki[name]

    def note(self, msg):
        self.notes.append(str(msg))

    def env(self, extra=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("SEALPUSH_")}
        e["HOME"] = self.home
        e.pop("XDG_CONFIG_HOME", None)
        e.update(extra or {})
        return e

    def idargs(self, d, who, ca=None):
        dev = self.dev(who) if isinstance(who, str) else who
        args = ["--cert", dev.crt, "--key", dev.key, "--ca", ca or self.h.pki.ca_crt]
        if d is not None:
            args += ["--server", "%s:%d" % (LOOPBACK, d.port)]
        return args

    def cli(self, *args, stdin=None, env=None, timeout=30):
        """Runs the CLI to completion."""
        r = subprocess.run([CLI] + [str(a) for a in args], input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, env=self.env(env))
        res = Result(r.returncode, r.stdout.decode(errors="replace"),
                     r.stderr.decode(errors="replace"))
        if "Sanitizer" in res.err or "runtime error:" in res.err:
            fail("sanitizer report from sealpush %s:\n%s" % (" ".join(map(str, args)), res.err))
        return res

    def cli_bg(self, *args, env=None):
        """Starts the CLI in the background; returns a Proc."""
        p = Proc([CLI] + [str(a) for a in args], self.env(env))
        self.cleanups.append(p.kill)
        return p

    def probe(self, d, who, *extra):
        p = Proc([PROBE] + self.idargs(d, who) + list(extra), self.env(), stdin=True)
        self.cleanups.append(p.kill)
        return p

    def send(self, d, who, to, *args, **kw):
        return self.cli("send", *self.idargs(d, who), *sum((["--to", x] for x in to), []),
                        *args, **kw)

    def expect_rc(self, res, rc, what, stderr_re=None):
        if res.rc != rc:
            fail("%s: want exit %d, got %r" % (what, rc, res))
        if stderr_re is not None:
            lines = [ln for ln in res.err.splitlines() if ln.strip()]
            if len(lines) != 1 or not re.search(stderr_re, lines[0]):
                fail("%s: want one stderr line matching %r, got %r" % (what, stderr_re, res.err))


class Proc:
    """A child whose stdout and stderr lines are collected by threads."""

    def __init__(self, argv, env, stdin=False):
        self.argv = argv
        self.p = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        harness._children.append(self.p)  # killed at exit whatever happens
        self.out = queue.Queue()
        self.lines = []
        self.err_lines = []
        self.err_event = threading.Condition()
        threading.Thread(target=self._pump, args=(self.p.stdout, self.out), daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self, f, q):
        for ln in iter(f.readline, b""):
            q.put(ln.decode(errors="replace").rstrip("\n"))
        q.put(None)

    def _pump_err(self):
        for ln in iter(self.p.stderr.readline, b""):
            with self.err_event:
                self.err_lines.append(ln.decode(errors="replace").rstrip("\n"))
                self.err_event.notify_all()

    def wait_err(self, pattern, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.err_event:
            while True:
                for ln in self.err_lines:
                    if re.search(pattern, ln):
                        return ln
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("%s: no stderr line matching %r within %.0fs; stderr: %r" % (
                        os.path.basename(self.argv[0]), pattern, timeout, self.err_lines))
                self.err_event.wait(left)

    def expect(self, pattern, timeout=10.0, skip=None):
        """The next stdout line, which must match pattern (lines matching skip are passed
        over). Returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ln = self.out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                fail("%s: no line matching %r within %.0fs (had: %r; stderr %r)" % (
                    os.path.basename(self.argv[0]), pattern, timeout, self.lines[-8:],
                    self.err_lines[-5:]))
            if ln is None:
                fail("%s: exited (%s) while waiting for %r (had: %r; stderr %r)" % (
                    os.path.basename(self.argv[0]), self.p.wait(), pattern, self.lines[-8:],
                    self.err_lines[-5:]))
            self.lines.append(ln)
            if skip and re.search(skip, ln):
                continue
            m = re.search(pattern, ln)
            if not m:
                fail("%s: want a line matching %r, got %r" % (
                    os.path.basename(self.argv[0]), pattern, ln))
            return m

    def rest(self):
        out = []
        while True:
            try:
                ln = self.out.get(timeout=10)
            except queue.Empty:
                break
            if ln is None:
                break
            out.append(ln)
        return out

    def cmd(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def wait(self, timeout=15.0):
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("%s did not exit within %.0fs" % (os.path.basename(self.argv[0]), timeout))
        time.sleep(0.05)
        if any(("Sanitizer" in ln or "runtime error:" in ln) for ln in self.err_lines):
            fail("sanitizer report:\n" + "\n".join(self.err_lines))
        return rc

    def kill(self):
        stop_process(self.p, signal.SIGKILL, timeout=2)


def restart_same_port(d, kill=False):
    """Stops sealpushd (SIGTERM, drain; or kill -9) and starts it again on the same ports and
    config."""
    if kill:
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(timeout=10)
    else:
        d.stop()
    d.stopped = False
    log = open(d.log_path, "ab")
    log.write(b"--- restart ---\n")
    log.flush()
    d.proc = spawn([d.binary, "-c", d.cfg_path] + d.extra_args, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if d.log().split("--- restart ---")[-1].find("event=ready") >= 0:
            return
        if d.proc.poll() is not None:
            fail("sealpushd did not start again: exit %s" % d.proc.returncode)
        time.sleep(0.05)
    fail("sealpushd not ready again within 15s")


def listen_line(line):
    m = re.fullmatch(r"(\S+) ([0-9a-f]{32}) (\d+) (.*)", line)
    if not m:
        fail("listen printed %r, want \"SENDER MSG_ID LEN PAYLOAD\"" % line)
    return m.group(1), m.group(2), int(m.group(3)), m.group(4)


# ---------------------------------------------------------------------------------------
# small commands, usage, config

@test("cli: token prints SHA-256 of the certificate's SPKI (as sealpush-ca does)")
def _(t):
    for name in ("alice", "bob"):
        r = t.cli("token", "--cert", t.dev(name).crt)
        t.expect_rc(r, 0, "token")
        if r.out != t.dev(name).token.hex() + "\n":
            fail("token of %s: got %r, want %s" % (name, r.out, t.dev(name).token.hex()))


@test("cli: usage errors exit 64 with one line on stderr")
def _(t):
    d = None
    cases = [
        ((), r"no command"),
        (("frobnicate",), r"unknown command"),
        (("token", "--bogus"), r"unknown option --bogus"),
        (("send", "--to"), r"--to needs a value"),
        (("token", "--count", "3", "--cert", t.dev("alice").crt), r"--count is not an option "
                                                                   r"of token"),
        (("send", "--to", t.dev("bob").token.hex(), "--message", "x",
          *t.idargs(None, "alice")), r"send needs --server"),
        (("send", "--to", t.dev("bob").token.hex(), "--message", "x", "--server",
          "127.0.0.1:1", *t.idargs(None, "alice")), r"bare token takes only --raw"),
        (("send", "--raw", "--message", "x", "--server", "127.0.0.1:1",
          *t.idargs(None, "alice")), r"at least one --to"),
        (("send", "--raw", "--to", "ab", "--priority", "7", "--message", "x"),
         r"--priority wants 10, 5 or 1"),
        (("send", "--raw", "--to", t.dev("bob").token.hex(), "--id", "xyz", "--message", "x",
          "--server", "127.0.0.1:1", *t.idargs(None, "alice")), r"--id wants 32 hex"),
        (("listen", "--count", "0"), r"--count wants a whole number"),
        (("listen", "--timeout", "soon"), r"--timeout wants a number of seconds"),
        (("verify-card",), r"verify-card takes one FILE"),
        (("token",), r"token needs --cert"),
        (("send", "--raw", "--to", t.dev("bob").token.hex(), "--message", "x",
          "--server", "nocolon", *t.idargs(d, "alice")), r"bad server address"),
    ]
    for args, pattern in cases:
        t.expect_rc(t.cli(*args), EX_USAGE, "sealpush %s" % " ".join(args), pattern)
    r = t.cli("--help")
    t.expect_rc(r, 0, "--help")
    for word in ("SEALPUSH_SERVER", "config file", "Exit status", "64 usage", "71 TLS"):
        if word not in r.out:
            fail("--help does not mention %r" % word)


@test("cli: settings come from the flags, else the config file, else the environment")
def _(t):
    a, b, c = (t.dev(n) for n in ("alice", "bob", "carol"))
    cfgdir = os.path.join(t.h.root, "cfg")
    os.makedirs(cfgdir, exist_ok=True)
    shutil.copy(b.crt, os.path.join(cfgdir, "bob.crt"))
    cfg = os.path.join(cfgdir, "config")
    with open(cfg, "w") as f:
        f.write("# sealpush config\n\ncert = bob.crt   \nkey=%s\n" % b.key)
    env = {"SEALPUSH_CERT": a.crt}

    def token(*args, env=env):
        r = t.cli("token", *args, env=env)
        t.expect_rc(r, 0, "token %s" % " ".join(args))
        return r.out.strip()

    t_flag = token("--config", cfg, "--cert", c.crt)
    t_cfg = token("--config", cfg)
    t_env = token()
    if (t_flag, t_cfg, t_env) != (c.token.hex(), b.token.hex(), a.token.hex()):
        fail("precedence: flag/config/env gave %s/%s/%s, want carol/bob/alice" % (
            t_flag[:8], t_cfg[:8], t_env[:8]))
    # $SEALPUSH_CONFIG names the file; the default file is $HOME/.config/sealpush/config.
    if token(env=dict(env, SEALPUSH_CONFIG=cfg)) != b.token.hex():
        fail("SEALPUSH_CONFIG was not read")
    os.makedirs(os.path.join(t.home, ".config", "sealpush"), exist_ok=True)
    with open(os.path.join(t.home, ".config", "sealpush", "config"), "w") as f:
        f.write("cert = %s\n" % c.crt)
    try:
        if token() != c.token.hex():
            fail("~/.config/sealpush/config was not read")
    finally:
        os.unlink(os.path.join(t.home, ".config", "sealpush", "config"))
    # A server from the config file beats a wrong one in the environment; a flag beats both.
    d = t.daemon()
    good = "%s:%d" % (LOOPBACK, d.port)
    with open(cfg, "w") as f:
        f.write("server = %s\nca = %s\ncert = %s\nkey = %s\n" % (good, t.h.pki.ca_crt, a.crt,
                                                                 a.key))
    r = t.cli("send", "--config", cfg, "--raw", "--to", b.token.hex(), "--message", "cfg",
              env={"SEALPUSH_SERVER": "127.0.0.1:1"})
    t.expect_rc(r, EX_OK, "send with the server from the config file")
    r = t.cli("send", "--config", cfg, "--server", "127.0.0.1:1", "--raw", "--to",
              b.token.hex(), "--message", "flag")
    t.expect_rc(r, EX_CONNECT, "send with a wrong --server over a good config file",
                r"127\.0\.0\.1:1.*(refused|connect)")
    # Everything from the environment alone.
    r = t.cli("send", "--raw", "--to", b.token.hex(), "--message", "env",
              env={"SEALPUSH_SERVER": good, "SEALPUSH_CA": t.h.pki.ca_crt,
                   "SEALPUSH_CERT": a.crt, "SEALPUSH_KEY": a.key})
    t.expect_rc(r, EX_OK, "send with everything from the environment")
    # Malformed config files: exit 78, naming the line.
    for text, pattern in (("colour = blue\n", r"config:1: unknown key \"colour\""),
                          ("server\n", r"config:1: want \"key = value\""),
                          ("cert =\n", r"config:1: cert has no value")):
        with open(cfg, "w") as f:
            f.write(text)
        t.expect_rc(t.cli("token", "--config", cfg), EX_CONFIG, "config %r" % text, pattern)
    t.expect_rc(t.cli("token", "--config", cfg + ".missing"), EX_CONFIG, "missing --config",
                r"cannot read the config file")


@test("cli: unreadable files exit 66")
def _(t):
    t.expect_rc(t.cli("token", "--cert", "/nonexistent.crt"), EX_NOINPUT, "token",
                r"cannot read the certificate /nonexistent\.crt")
    t.expect_rc(t.cli("token", "--cert", t.dev("alice").key), EX_NOINPUT, "token of a key",
                r"not a PEM certificate")
    d = t.daemon()
    r = t.cli("send", "--server", "%s:%d" % (LOOPBACK, d.port), "--ca", t.h.pki.ca_crt,
              "--cert", t.dev("alice").crt, "--key", "/nonexistent.key", "--raw", "--to",
              t.dev("bob").token.hex(), "--message", "x")
    t.expect_rc(r, EX_NOINPUT, "send with a missing key", r"cannot open the key")
    r = t.cli("send", "--server", "%s:%d" % (LOOPBACK, d.port), "--ca", t.h.pki.ca_crt,
              "--cert", t.dev("alice").crt, "--key", t.dev("bob").key, "--raw", "--to",
              t.dev("bob").token.hex(), "--message", "x")
    t.expect_rc(r, EX_NOINPUT, "send with bob's key for alice's certificate",
                r"does not belong to the certificate")
    r = t.send(d, "alice", [t.dev("bob").token.hex()], "--raw", "--file", "/nonexistent")
    t.expect_rc(r, EX_NOINPUT, "send --file missing", r"cannot read --file")


@test("cli: sealed: init, card, verify-card, send to a card; listen opens it and names the "
      "sender; a tampered card is refused (exit 65)")
def _(t):
    d = t.daemon()
    alice, bob = t.dev("alice"), t.dev("bob")
    for dev in (alice, bob):
        t.expect_rc(t.cli("init", "--cert", dev.crt, "--key", dev.key), EX_OK, "init")
    r = t.cli("card", "--cert", bob.crt, "--key", bob.key)
    t.expect_rc(r, EX_OK, "card")
    card = os.path.join(t.h.root, "bob.card")
    with open(card, "w") as f:
        f.write(r.out)
    t.expect_rc(t.cli("verify-card", card), EX_OK, "verify-card of a good card")
    bad = os.path.join(t.h.root, "bad.card")
    with open(bad, "w") as f:
        f.write(r.out.replace(bob.token.hex(), alice.token.hex()))
    r = t.cli("verify-card", bad)
    if r.rc != 65:
        fail("verify-card of a card with another token: want exit 65, got %r" % (r,))
    r = t.send(d, "alice", [card], "--message", "sealed hello")
    t.expect_rc(r, EX_OK, "sealed send")
    if r.out != "%s QUEUED\n" % bob.token.hex():
        fail("send printed %r, want \"TOKEN QUEUED\"" % r.out)
    lp = start_listen(t, d, "bob", "--count", "1")
    sender, mid, n, payload = listen_line(lp.expect(r".", 10).string)
    if (sender, payload) != (alice.token.hex(), "sealed hello"):
        fail("listen printed %r" % lp.lines[-1])
    if lp.wait() != 0:
        fail("listen --count 1 exited %s" % lp.p.returncode)


def anon_accepted(d):
    st, body = d.admin_get("/metrics")
    m = re.search(r'^sealpush_anon_sends_total\{result="accepted"\} (\d+)$', body, re.M)
    if st != 200 or not m:
        fail("/metrics: no sealpush_anon_sends_total accepted: %s" % st)
    return int(m.group(1))


@test("cli: sealed sender: access enable registers a key and prints the card with it; send "
      "goes through the anonymous door by default (--identified does not); listen names the "
      "sender; access rotate locks the old card out (ACCESS_DENIED, exit 75); disable")
def _(t):
    port = harness.free_port()
    d = t.daemon(anon_listen="%s:%d" % (LOOPBACK, port))
    anon = ["--anon-server", "%s:%d" % (LOOPBACK, port)]
    alice, bob = t.dev("alice"), t.dev("bob")
    for dev in (alice, bob):  # the PKI is shared by the tests: an earlier one may have run init
        r = t.cli("init", "--cert", dev.crt, "--key", dev.key)
        if r.rc != EX_OK and "exists already" not in r.err:
            t.expect_rc(r, EX_OK, "init")
    plain = t.cli("card", "--cert", bob.crt, "--key", bob.key)
    if '"access"' in plain.out:
        fail("a card without a registered key carries one: %r" % plain.out)
    r = t.cli("access", "enable", *t.idargs(d, "bob"))
    t.expect_rc(r, EX_OK, "access enable")
    card1 = os.path.join(t.h.root, "bob-access1.card")
    with open(card1, "w") as f:
        f.write(r.out)
    key1 = json.loads(r.out)["access"]
    again = t.cli("card", "--cert", bob.crt, "--key", bob.key)
    if json.loads(again.out).get("access") != key1:
        fail("card after access enable does not carry the registered key: %r" % again.out)
    t.expect_rc(t.cli("verify-card", card1), EX_OK, "verify-card of a card with a key")
    r = t.cli("access", "enable", *t.idargs(d, "bob"))  # keeps the key it has
    t.expect_rc(r, EX_OK, "access enable again")
    if json.loads(r.out)["access"] != key1:
        fail("access enable made a new key although the device had one")
    # An edited key fails verification.
    bad = os.path.join(t.h.root, "bob-badaccess.card")
    c = json.loads(open(card1).read())
    c["access"] = base64.b64encode(os.urandom(32)).decode()
    with open(bad, "w") as f:
        json.dump(c, f)
    t.expect_rc(t.cli("verify-card", bad), EX_VERIFY, "verify-card, access key edited")
    # Anonymous by default; --identified forces the old path; a card without a key, too.
    r = t.send(d, "alice", [card1], "--message", "anon hello", *anon)
    t.expect_rc(r, EX_OK, "send through the anonymous door")
    if anon_accepted(d) != 1:
        fail("the anonymous door did not take the send (accepted %d)" % anon_accepted(d))
    r = t.send(d, "alice", [card1], "--message", "identified hello", "--identified", *anon)
    t.expect_rc(r, EX_OK, "send --identified")
    plain_card = os.path.join(t.h.root, "bob-plain.card")
    with open(plain_card, "w") as f:
        f.write(plain.out)
    r = t.send(d, "alice", [plain_card], "--message", "no key", *anon)
    t.expect_rc(r, EX_OK, "send to a card without a key")
    if anon_accepted(d) != 1:
        fail("--identified or a keyless card went through the anonymous door")
    r = t.cli("listen", *t.idargs(d, "bob"), "--count", "3", "--timeout", "10")
    t.expect_rc(r, EX_OK, "listen")
    got = sorted((listen_line(ln)[0], listen_line(ln)[3]) for ln in r.out.splitlines())
    want = sorted((alice.token.hex(), m) for m in ("anon hello", "identified hello", "no key"))
    if got != want:
        fail("listen printed %r, want %r" % (got, want))
    # Rotation: the old card is locked out, the new one works.
    r = t.cli("access", "rotate", *t.idargs(d, "bob"))
    t.expect_rc(r, EX_OK, "access rotate")
    card2 = os.path.join(t.h.root, "bob-access2.card")
    with open(card2, "w") as f:
        f.write(r.out)
    if json.loads(r.out)["access"] == key1:
        fail("access rotate kept the old key")
    r = t.send(d, "alice", [card1], "--message", "old key", *anon)
    t.expect_rc(r, EX_REFUSED, "send with the old card's key")
    if "ACCESS_DENIED" not in r.out:
        fail("send with the old key printed %r, want ACCESS_DENIED" % r.out)
    r = t.send(d, "alice", [card2], "--message", "new key", *anon)
    t.expect_rc(r, EX_OK, "send with the new card's key")
    if anon_accepted(d) != 2:
        fail("the new key was not accepted anonymously")
    # Disable: refused, the key file removed, the card without it.
    t.expect_rc(t.cli("access", "disable", *t.idargs(d, "bob")), EX_OK, "access disable")
    r = t.send(d, "alice", [card2], "--message", "disabled", *anon)
    t.expect_rc(r, EX_REFUSED, "send after access disable")
    if '"access"' in t.cli("card", "--cert", bob.crt, "--key", bob.key).out:
        fail("the card still carries a key after access disable")
    # A relay without an anonymous door refuses the registration.
    d2 = t.daemon()
    r = t.cli("access", "enable", *t.idargs(d2, "bob"))
    t.expect_rc(r, EX_REFUSED, "access enable on a relay without an anonymous door")
    t.note("access enable/rotate/disable; 2 anonymous sends accepted, old key ACCESS_DENIED")
@test("cli: sealed sender: a receipt goes back through the anonymous door with the access key "
      "the sender sealed in (REPLY_ACCESS); identified when the recipient has no anonymous "
      "door or the sender no access key", timeout=90)
def _(t):
    port = harness.free_port()
    d = t.daemon(anon_listen="%s:%d" % (LOOPBACK, port))
    anon = ["--anon-server", "%s:%d" % (LOOPBACK, port)]
    alice, bob = t.dev("alice"), t.dev("bob")
    for dev in (alice, bob):
        r = t.cli("init", "--cert", dev.crt, "--key", dev.key)
        if r.rc != EX_OK and "exists already" not in r.err:
            t.expect_rc(r, EX_OK, "init")
    cards = {}
    for who in ("alice", "bob"):
        r = t.cli("access", "enable", *t.idargs(d, who))
        t.expect_rc(r, EX_OK, "access enable (%s)" % who)
        cards[who] = os.path.join(t.h.root, "%s-rcpt.card" % who)
        with open(cards[who], "w") as f:
            f.write(r.out)

    def round_trip(what, bob_args, want_anon):
        a0 = anon_accepted(d)
        res = send_json(t, d, "alice", [cards["bob"]], "--receipt", "--message", what, *anon)
        if res[0]["status"] != "QUEUED" or anon_accepted(d) != a0 + 1:
            fail("%s: alice's send: %r (anonymous accepted %d, was %d)" % (
                what, res, anon_accepted(d), a0))
        r = t.cli("listen", "-v", *t.idargs(d, "bob"), "--count", "1", "--timeout", "10",
                  *bob_args)
        t.expect_rc(r, EX_OK, "%s: bob's listen" % what)
        if not re.search(r"receipt for message %s to %s: QUEUED" % (
                res[0]["msg_id"], alice.token.hex()), r.err) or "warning" in r.err:
            fail("%s: bob's listen did not send the receipt: %r" % (what, r.err))
        if anon_accepted(d) != a0 + 1 + want_anon:
            fail("%s: the receipt went %s, want %s" % (
                what, "anonymously" if anon_accepted(d) > a0 + 1 else "identified",
                "anonymously" if want_anon else "identified"))
        r = t.cli("listen", *t.idargs(d, "alice"), "--count", "1", "--timeout", "10")
        t.expect_rc(r, EX_OK, "%s: alice's listen" % what)
        if r.out != "receipt %s %s received\n" % (bob.token.hex(), res[0]["msg_id"]):
            fail("%s: alice's listen printed %r" % (what, r.out))

    try:
        round_trip("through the door", anon, 1)  # default delay: sent when listen stops
        round_trip("bob has no door", [], 0)
        t.expect_rc(t.cli("access", "disable", *t.idargs(d, "alice")), EX_OK, "disable")
        round_trip("alice has no key", anon + ["--receipt-delay", "0"], 0)
    finally:  # the PKI, and so the keys, are shared with the other tests
        for who in ("alice", "bob"):
            t.cli("access", "disable", *t.idargs(d, who))


@test("cli: a sealed send to several cards writes every copy at once (one round trip, not one "
      "per recipient): three devices that never ACK cost one ack_timeout, not three", timeout=60)
def _(t):
    d = t.daemon(ack_timeout="3s")
    cards = []
    for who in ("alice", "bob", "carol", "dave"):
        dev = t.dev(who)
        if not os.path.exists(dev.key[:-4] + ".seal.key"):  # an earlier case may have made it
            t.expect_rc(t.cli("init", "--cert", dev.crt, "--key", dev.key), EX_OK, "init")
        if who == "alice":
            continue
        r = t.cli("card", "--cert", dev.crt, "--key", dev.key)
        t.expect_rc(r, EX_OK, "card")
        cards.append(os.path.join(t.h.root, who + ".card"))
        with open(cards[-1], "w") as f:
            f.write(r.out)
    silent = []
    for who in ("bob", "carol", "dave"):  # connected, taking DELIVERs, never ACKing
        c = Client(d, t.dev(who))
        c.connect()
        c.hello()
        t.h.track_client(c)
        silent.append(c)
    t0 = time.monotonic()
    r = t.send(d, "alice", cards, "--message", "to three")
    took = time.monotonic() - t0
    t.expect_rc(r, EX_OK, "sealed send to three cards")
    if sorted(r.out.split()) != sorted([t.dev(n).token.hex() for n in ("bob", "carol", "dave")] +
                                       ["QUEUED"] * 3):
        fail("send printed %r" % r.out)
    for c in silent:
        f = c.expect(w.DELIVER, timeout=5)
        if f["msg_id"] is None:
            fail("no DELIVER")
    t.notes.append("three unacknowledged copies answered in %.1f s (ack_timeout 3 s)" % took)
    if took >= 6.0:
        fail("the copies went one after another: %.1f s for three (ack_timeout 3 s)" % took)


# ---------------------------------------------------------------------------------------
# send and listen

def start_listen(t, d, who, *args):
    p = t.cli_bg("listen", "-v", *t.idargs(d, who), *args)
    p.wait_err(r"connected to 127\.0\.0\.1", 10)
    return p


@test("cli: send --raw to a listening device: DELIVERED; listen prints it, ACKs, exits 0")
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    lp = start_listen(t, d, "bob", "--count", "1")
    r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "hello bob")
    t.expect_rc(r, EX_OK, "send to bob")
    if r.out != "%s DELIVERED\n" % bob.token.hex():
        fail("send printed %r, want \"TOKEN DELIVERED\"" % r.out)
    sender, mid, n, payload = listen_line(lp.expect(r".", 10).string)
    if (sender, n, payload) != ("unsealed", 9, "hello bob"):
        fail("listen printed %r" % lp.lines[-1])
    if lp.wait() != 0:
        fail("listen --count 1 exited %s after one message" % lp.p.returncode)
    # DELIVERED means bob ACKed: nothing is left for him.
    r = t.cli("listen", *t.idargs(d, "bob"), "--timeout", "1")
    t.expect_rc(r, EX_TIMEOUT, "a second listen finds nothing")
    if r.out:
        fail("a second listen printed %r" % r.out)


@test("cli: send --raw to an offline device: QUEUED; listen gets it later (stdin message)")
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    r = t.send(d, "alice", [bob.token.hex()], "--raw", stdin=b"from stdin\n")
    t.expect_rc(r, EX_OK, "send to offline bob")
    if r.out != "%s QUEUED\n" % bob.token.hex():
        fail("send printed %r, want QUEUED" % r.out)
    r = t.cli("listen", *t.idargs(d, "bob"), "--count", "1", "--timeout", "10")
    t.expect_rc(r, EX_OK, "listen")
    sender, mid, n, payload = listen_line(r.out.rstrip("\n").split("\n")[0])
    if (n, payload) != (11, "from stdin\n") and not r.out.endswith("from stdin\n\n"):
        fail("listen printed %r, want the 11 bytes from stdin" % r.out)


@test("cli: listen ACKs only what it printed: --count 1 of 3 queued, then the next 2 in order")
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    for i in range(3):
        t.expect_rc(t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "m%d" % i),
                    EX_OK, "send m%d" % i)
    r = t.cli("listen", *t.idargs(d, "bob"), "--count", "1", "--timeout", "10")
    t.expect_rc(r, EX_OK, "listen --count 1")
    got = [listen_line(ln)[3] for ln in r.out.splitlines()]
    if got != ["m0"]:
        fail("first listen printed %r, want m0" % got)
    r = t.cli("listen", *t.idargs(d, "bob"), "--count", "2", "--timeout", "10")
    t.expect_rc(r, EX_OK, "listen --count 2")
    got = [listen_line(ln)[3] for ln in r.out.splitlines()]
    if got != ["m1", "m2"]:
        fail("second listen printed %r, want m1 m2 (m0 was ACKed, only m0)" % got)


@test("cli: listen --json: sender, msg_id, priority, collapse_id, stored, payload")
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    mid = "00112233445566778899aabbccddeeff"
    r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "json \u00e9t\u00e9",
               "--priority", "5", "--collapse", "weather", "--ttl", "600", "--id", mid)
    t.expect_rc(r, EX_OK, "send")
    t.expect_rc(t.send(d, "alice", [bob.token.hex()], "--raw", "--file", "/dev/null"),
                EX_OK, "send an empty message")
    bin_path = os.path.join(t.h.root, "bin")
    with open(bin_path, "wb") as f:
        f.write(b"\xff\x00\xfe")
    t.expect_rc(t.send(d, "alice", [bob.token.hex()], "--raw", "--file", bin_path), EX_OK,
                "send binary")
    r = t.cli("listen", *t.idargs(d, "bob"), "--json", "--count", "3", "--timeout", "10")
    t.expect_rc(r, EX_OK, "listen --json")
    objs = [json.loads(ln) for ln in r.out.splitlines()]
    o = objs[0]
    want = {"kind": "message", "sender": None, "sealed": False, "msg_id": mid, "priority": 5,
            "collapse_id": "weather", "stored": True, "payload": "json \u00e9t\u00e9",
            "length": len("json \u00e9t\u00e9".encode())}
    if o != want:
        fail("listen --json printed %r, want %r" % (o, want))
    if objs[1].get("payload") != "" or objs[1]["length"] != 0:
        fail("the empty message: %r" % objs[1])
    if objs[2].get("payload_base64") != "/wD+" or "payload" in objs[2]:
        fail("binary payload: %r, want payload_base64 /wD+" % objs[2])


@test("cli: send to several --to: a line each; a refused recipient -> exit 75; --json")
def _(t):
    d = t.daemon()
    bob, carol = t.dev("bob"), t.dev("carol")
    lp = start_listen(t, d, "carol", "--count", "1")
    zero = "0" * 64
    r = t.send(d, "alice", [bob.token.hex(), carol.token.hex(), zero], "--raw", "--message",
               "fan-out")
    t.expect_rc(r, EX_REFUSED, "send with the zero token")
    want = ["%s QUEUED" % bob.token.hex(), "%s DELIVERED" % carol.token.hex(),
            "%s BAD_DEVICE_TOKEN" % zero]
    if r.out.splitlines() != want:
        fail("send printed %r, want %r" % (r.out.splitlines(), want))
    lp.wait()
    r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "x", "--json", "--ttl", "0")
    t.expect_rc(r, EX_REFUSED, "ttl 0 to offline bob")
    o = json.loads(r.out)
    res = o["results"]
    if len(res) != 1 or not re.fullmatch(r"[0-9a-f]{32}", res[0].pop("msg_id", "")) or \
            res[0] != {"to": bob.token.hex(), "token": bob.token.hex(), "status": "EXPIRED",
                       "accepted": False}:
        fail("send --json printed %r" % o)


@test("cli: send --id: a retry with the same id is not queued twice")
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    mid = os.urandom(16).hex()
    for _ in range(2):
        r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "once", "--id", mid)
        t.expect_rc(r, EX_OK, "send --id")
        if "QUEUED" not in r.out:
            fail("send printed %r" % r.out)
    r = t.cli("listen", *t.idargs(d, "bob"), "--timeout", "1.5")
    t.expect_rc(r, EX_OK, "listen")
    if len(r.out.splitlines()) != 1 or mid not in r.out:
        fail("listen printed %r, want the message once" % r.out)


@test("cli: a blob over the relay's max_blob is refused PAYLOAD_TOO_LARGE (exit 75)")
def _(t):
    d = t.daemon(max_blob=1000)
    r = t.send(d, "alice", [t.dev("bob").token.hex()], "--raw", stdin=b"x" * 1001)
    t.expect_rc(r, EX_REFUSED, "too large")
    if "PAYLOAD_TOO_LARGE" not in r.out:
        fail("send printed %r" % r.out)


@test("cli: connection errors: refused port -> 69, wrong CA -> 71, foreign cert -> 71, "
      "revoked -> 71, expired -> 71")
def _(t):
    d = t.daemon()
    bob = t.dev("bob").token.hex()
    port = d.port
    r = t.cli("send", "--server", "127.0.0.1:1", "--ca", t.h.pki.ca_crt, "--cert",
              t.dev("alice").crt, "--key", t.dev("alice").key, "--raw", "--to", bob,
              "--message", "x")
    t.expect_rc(r, EX_CONNECT, "port 1", r"cannot connect to 127\.0\.0\.1:1: Connection refused")
    # The relay's certificate does not chain to the CA we were given.
    wrong_ca = t.h.wrong.ca_crt
    r = t.send(d, "alice", [bob], "--raw", "--message", "x", "--ca", wrong_ca)
    t.expect_rc(r, EX_TLS, "wrong --ca", r"TLS.*certificate")
    r = t.cli("listen", *t.idargs(d, "alice", ca=wrong_ca), "--timeout", "5")
    t.expect_rc(r, EX_TLS, "listen with a wrong --ca", r"TLS.*certificate")
    # Our certificate is refused by the relay.
    for who, what in ((t.h.wrong["eve"], "a certificate of another CA"),
                      (t.dev("mallory"), "a revoked certificate"),
                      (t.dev("old"), "an expired certificate")):
        r = t.cli("send", "--server", "%s:%d" % (LOOPBACK, port), "--ca", t.h.pki.ca_crt,
                  "--cert", who.crt, "--key", who.key, "--raw", "--to", bob, "--message", "x")
        t.expect_rc(r, EX_TLS, what, r"TLS")
        t.note("%s: %s" % (what, r.err.strip()))
    # A host name that the relay's certificate does not name.
    r = t.cli("send", "--server", "localhost:%d" % port, "--ca", t.h.pki.ca_crt, "--cert",
              t.dev("alice").crt, "--key", t.dev("alice").key, "--raw", "--to", bob,
              "--message", "x")
    t.expect_rc(r, EX_OK, "localhost (named in the relay's certificate)")
    r = t.cli("send", "--server", "%s:%d" % ("127.0.0.2", port), "--ca", t.h.pki.ca_crt,
              "--cert", t.dev("alice").crt, "--key", t.dev("alice").key, "--raw", "--to", bob,
              "--message", "x")
    if r.rc not in (EX_TLS, EX_CONNECT):
        fail("127.0.0.2 (not in the relay's certificate): want 71 (or 69 if not bound), got "
             "%r" % r)


@test("cli: listen --timeout exits 1 without a message; send --timeout without answers -> 69")
def _(t):
    d = t.daemon()
    t0 = time.monotonic()
    r = t.cli("listen", *t.idargs(d, "bob"), "--timeout", "1")
    took = time.monotonic() - t0
    t.expect_rc(r, EX_TIMEOUT, "listen --timeout 1")
    if not 0.9 <= took < 5:
        fail("listen --timeout 1 took %.1fs" % took)
    # bob is connected but never ACKs: DELIVERED never comes within --timeout 1.
    p = t.probe(d, "bob", "--no-ack")
    p.expect(r"^connected ")
    r = t.send(d, "alice", [t.dev("bob").token.hex()], "--raw", "--message", "x",
               "--timeout", "1")
    p.expect(r"^message ")
    t.expect_rc(r, EX_CONNECT, "send --timeout 1 without an answer", r"no answer|TIMEOUT")
    if r.out != "%s TIMEOUT\n" % t.dev("bob").token.hex():
        fail("send printed %r, want TIMEOUT" % r.out)


@test("cli: two devices exchange messages both ways with listen running", timeout=60)
def _(t):
    d = t.daemon()
    a, b = t.dev("alice"), t.dev("bob")
    la = start_listen(t, d, "alice", "--count", "3")
    lb = start_listen(t, d, "bob", "--count", "3")
    for i in range(3):
        r = t.send(d, "alice", [b.token.hex()], "--raw", "--message", "a->b %d" % i)
        t.expect_rc(r, EX_OK, "alice -> bob %d" % i)
        if "DELIVERED" not in r.out:
            fail("alice -> bob: %r" % r.out)
        r = t.send(d, "bob", [a.token.hex()], "--raw", "--message", "b->a %d" % i)
        t.expect_rc(r, EX_OK, "bob -> alice %d" % i)
        if "DELIVERED" not in r.out:
            fail("bob -> alice: %r" % r.out)
    for p, want in ((la, "b->a"), (lb, "a->b")):
        got = [listen_line(p.expect(r".", 5).string)[3] for _ in range(3)]
        if got != ["%s %d" % (want, i) for i in range(3)]:
            fail("listen printed %r" % got)
        if p.wait() != 0:
            fail("listen exited %s" % p.p.returncode)


# ---------------------------------------------------------------------------------------
# sealed exchange (issue 7): sealing, receipts, ephemeral messages, what the relay sees

def sealed_ids(t, *names):
    """Gives each device a sealing key (sealpush init, once per run: it lives beside the key)
    and returns {name: card file}."""
    cards = {}
    for name in names:
        dev = t.dev(name)
        seal_key = dev.key[:-len(".key")] + ".seal.key"
        if not os.path.exists(seal_key):
            t.expect_rc(t.cli("init", "--cert", dev.crt, "--key", dev.key), EX_OK,
                        "init %s" % name)
        card = os.path.join(t.h.root, name + ".card")
        if not os.path.exists(card):
            r = t.cli("card", "--cert", dev.crt, "--key", dev.key)
            t.expect_rc(r, EX_OK, "card %s" % name)
            with open(card, "w") as f:
                f.write(r.out)
        cards[name] = card
    return cards


def send_json(t, d, who, to, *args, rc=EX_OK):
    """send --json; returns its results (a list of dicts)."""
    r = t.send(d, who, to, "--json", *args)
    t.expect_rc(r, rc, "send %s" % " ".join(map(str, args))[:80])
    return json.loads(r.out)["results"]


def listen_json(p, timeout=10.0):
    return json.loads(p.expect(r"^\{", timeout).string)


@test("sealed: two devices exchange sealed messages both ways: sender tokens, text, binary "
      "(--file) and a payload near the largest that fits max_blob", timeout=90)
def _(t):
    d = t.daemon(max_blob=8192)
    a, b = t.dev("alice"), t.dev("bob")
    cards = sealed_ids(t, "alice", "bob")
    binary = bytes(range(256)) * 4 + b"\n\x00end"
    bin_path = os.path.join(t.h.root, "binary.bin")
    with open(bin_path, "wb") as f:
        f.write(binary)
    # The largest payload sealpush can seal into 8,192 bytes: found by the relay's answers
    # (PAYLOAD_TOO_LARGE above it), then sent and checked byte for byte.
    big_path = os.path.join(t.h.root, "big.bin")

    def try_big(n):
        with open(big_path, "wb") as f:
            f.write(os.urandom(n))
        r = t.send(d, "alice", [cards["bob"]], "--file", big_path, "--ttl", "0")
        return "PAYLOAD_TOO_LARGE" not in r.out
    lo, hi = 4096, 8192  # lo fits, hi does not (the envelope adds its overhead)
    if not try_big(lo) or try_big(hi):
        fail("max_blob 8192: a 4096-byte payload must fit and an 8192-byte one must not")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if try_big(mid) else (lo, mid)
    t.note("largest sealed payload in an 8192-byte blob: %d bytes (overhead %d)" % (
        lo, 8192 - lo))
    # A build with the hybrid suite (pq-seal) seals to a hybrid card with MLKEM768-X25519:
    # its 1,120-byte encapsulation adds 1,088 bytes to the overhead (PROTOCOL.md 13.1).
    hybrid = "pq-seal" in t.cli("--version").out
    lo_ok, hi_ok = (1300, 1700) if hybrid else (200, 600)
    if not 8192 - hi_ok <= lo < 8192 - lo_ok:
        fail("largest sealed payload %d: the overhead %d is out of the expected range" % (
            lo, 8192 - lo))
    # The signature inside is DER ECDSA (70 to 72 bytes, rarely shorter), so the boundary
    # moves by a few bytes from one envelope to the next: stay 16 bytes under it.
    near = os.urandom(lo - 16)
    with open(big_path, "wb") as f:
        f.write(near)
    lb = start_listen(t, d, "bob", "--json", "--count", "3")
    la = start_listen(t, d, "alice", "--json", "--count", "2")
    sends = [("alice", "bob", ["--message", "a->b sealed \u00e9"]),
             ("alice", "bob", ["--file", bin_path]),
             ("alice", "bob", ["--file", big_path]),
             ("bob", "alice", ["--message", "b->a sealed"]),
             ("bob", "alice", ["--file", bin_path])]
    ids = []
    for frm, to, args in sends:
        res = send_json(t, d, frm, [cards[to]], *args)
        if [x["status"] for x in res] != ["DELIVERED"] or res[0]["token"] != \
                t.dev(to).token.hex():
            fail("%s -> %s %s: %r" % (frm, to, args[0], res))
        ids.append(res[0]["msg_id"])
    got_b = [listen_json(lb) for _ in range(3)]
    got_a = [listen_json(la) for _ in range(2)]
    for o, (frm, to, args), mid in zip(got_b + got_a, sends, ids):
        want = {"message": args[1].encode()} if args[0] == "--message" else None
        payload = (want or {}).get("message") or (binary if args[1] == bin_path else near)
        body = o["payload"].encode() if "payload" in o else \
            base64.b64decode(o["payload_base64"])
        if (o["kind"], o["sealed"], o["sender"], o["msg_id"]) != \
                ("message", True, t.dev(frm).token.hex(), mid):
            fail("%s got %r, want a sealed message from %s with id %s" % (to, o, frm, mid))
        if body != payload or o["length"] != len(payload):
            fail("%s -> %s %s: the payload changed (%d bytes, want %d)" % (
                frm, to, args[0], len(body), len(payload)))
    for p in (la, lb):
        if p.wait() != 0:
            fail("listen exited %s" % p.p.returncode)


@test("sealed: receipt round trip: send --receipt, bob's listen answers with a sealed "
      "receipt, alice's listen prints \"receipt BOB MSG_ID received\"; to the relay the "
      "receipt is a message like any other", timeout=60)
def _(t):
    d = t.daemon()
    a, b = t.dev("alice"), t.dev("bob")
    cards = sealed_ids(t, "alice", "bob")
    res = send_json(t, d, "alice", [cards["bob"]], "--receipt", "--message", "please confirm")
    if res[0]["status"] != "QUEUED":
        fail("send --receipt to offline bob: %r" % res)
    mid = res[0]["msg_id"]
    # bob reads it; his listen sends the receipt to alice (offline: the relay queues it).
    r = t.cli("listen", "-v", *t.idargs(d, "bob"), "--count", "1", "--timeout", "10")
    t.expect_rc(r, EX_OK, "bob's listen")
    if listen_line(r.out.rstrip("\n")) != (a.token.hex(), mid, 14, "please confirm"):
        fail("bob's listen printed %r" % r.out)
    if not re.search(r"receipt for message %s to %s: QUEUED" % (mid, a.token.hex()), r.err) \
            or "warning" in r.err:
        fail("bob's listen: no QUEUED receipt on stderr (-v): %r" % r.err)
    # For comparison, an ordinary short sealed message bob -> alice.
    res = send_json(t, d, "bob", [cards["alice"]], "--message", "ok")
    # What the relay hands alice: two DELIVERs alike in every field but msg_id and the
    # (equal-length) blob. Read with a raw protocol client, not acknowledged.
    c = Client(d, a).connect()
    c.hello()
    frames = [c.expect(w.DELIVER, 5) for _ in range(2)]
    c.close()
    shapes = [(sorted(f.fields), f.flags, f.get("priority"), f.get("collapse_id"),
               len(f["blob"]), f["blob"][:3]) for f in frames]
    t.note("receipt DELIVER: %r; message DELIVER: %r" % tuple(shapes))
    if shapes[0] != shapes[1]:
        fail("the relay can tell the receipt from the message: %r vs %r" % tuple(shapes))
    if frames[1]["msg_id"].hex() != res[0]["msg_id"] or frames[0]["msg_id"].hex() == mid:
        fail("DELIVER ids: %r" % [f["msg_id"].hex() for f in frames])
    if len(frames[0]["blob"]) % 256 != (35 + 16) % 256:
        fail("blob of %d bytes: not the padded size of a short message" % len(frames[0]["blob"]))
    # alice's listen prints the receipt as its own kind of line, and the message.
    r = t.cli("listen", *t.idargs(d, "alice"), "--count", "2", "--timeout", "10")
    t.expect_rc(r, EX_OK, "alice's listen")
    lines = r.out.splitlines()
    if lines[0] != "receipt %s %s received" % (b.token.hex(), mid):
        fail("alice's listen printed %r, want \"receipt %s %s received\" first" % (
            lines, b.token.hex()[:8], mid))
    if listen_line(lines[1])[::3] != (b.token.hex(), "ok"):
        fail("alice's listen printed %r" % lines)
    # --json: {"kind": "receipt", ...}; and a receipt is never answered with a receipt.
    res = send_json(t, d, "alice", [cards["bob"]], "--receipt", "--message", "again")
    r = t.cli("listen", *t.idargs(d, "bob"), "--json", "--count", "1", "--timeout", "10")
    t.expect_rc(r, EX_OK, "bob's listen --json")
    o = json.loads(r.out)
    if (o["kind"], o.get("receipt_wanted"), o["payload"]) != ("message", True, "again"):
        fail("bob's listen --json: %r" % o)
    r = t.cli("listen", *t.idargs(d, "alice"), "--json", "--count", "1", "--timeout", "10")
    t.expect_rc(r, EX_OK, "alice's listen --json")
    o = json.loads(r.out)
    want = {"kind": "receipt", "sender": b.token.hex(), "msg_id": res[0]["msg_id"],
            "status": "received"}
    if {k: o.get(k) for k in want} != want or not re.fullmatch(r"[0-9a-f]{32}",
                                                               o.get("receipt_id", "")):
        fail("alice's listen --json printed %r, want %r" % (o, want))
    r = t.cli("listen", *t.idargs(d, "bob"), "--timeout", "1")
    t.expect_rc(r, EX_TIMEOUT, "bob got no receipt for a receipt")
    # --receipt is for sealed messages only.
    t.expect_rc(t.send(d, "alice", [b.token.hex()], "--raw", "--receipt", "--message", "x"),
                EX_USAGE, "--raw --receipt", r"--receipt needs a sealed message")


@test("sealed: receipts wait a random delay (--receipt-delay) before their SEND, and those "
      "still waiting go out when listen stops; 0 sends at once", timeout=90)
def _(t):
    d = t.daemon()
    a, b = t.dev("alice"), t.dev("bob")
    cards = sealed_ids(t, "alice", "bob")
    mids = [send_json(t, d, "alice", [cards["bob"]], "--receipt", "--message", "m%d" % i)[0]
            ["msg_id"] for i in range(4)]
    queued = r"receipt for message (\w+) to %s: QUEUED" % a.token.hex()
    # Up to 60 s each: one second after the last message is printed, at least one of the four
    # receipts is still waiting (all four drawn under ~1.3 s: odds about 1e-7).
    lp = start_listen(t, d, "bob", "--receipt-delay", "60000", "--timeout", "6")
    for i in range(4):
        lp.expect(r" m%d$" % i, 10)
    time.sleep(1.0)
    early = [ln for ln in lp.err_lines if re.search(queued, ln)]
    t.note("receipts sent within 1 s of the last message: %d of 4" % len(early))
    if len(early) >= 4:
        fail("all four receipts went out at once with --receipt-delay 60000: %r" % early)
    if lp.wait() != 0:
        fail("bob's listen exited %s" % lp.p.returncode)
    sent = sorted(re.search(queued, ln).group(1) for ln in lp.err_lines if re.search(queued, ln))
    if sent != sorted(mids) or any("warning" in ln for ln in lp.err_lines):
        fail("bob's listen stopped with receipts for %r, want %r; stderr %r" % (
            sent, sorted(mids), lp.err_lines))
    r = t.cli("listen", *t.idargs(d, "alice"), "--count", "4", "--timeout", "10")
    t.expect_rc(r, EX_OK, "alice's listen")
    got = sorted(ln.split()[2] for ln in r.out.splitlines() if ln.startswith("receipt "))
    if got != sorted(mids):
        fail("alice got receipts for %r, want %r" % (got, sorted(mids)))
    # 0: at once, while listen keeps running.
    mid = send_json(t, d, "alice", [cards["bob"]], "--receipt", "--message", "now")[0]["msg_id"]
    lp = start_listen(t, d, "bob", "--receipt-delay", "0", "--timeout", "30")
    lp.expect(r" now$", 10)
    lp.wait_err(r"receipt for message %s to %s: QUEUED" % (mid, a.token.hex()), 5)
    lp.kill()
    # Bad values are usage errors, from the flag and from the config file alike.
    for v in ("-1", "x", "60001"):
        t.expect_rc(t.cli("listen", *t.idargs(d, "bob"), "--receipt-delay", v, "--timeout", "1"),
                    EX_USAGE, "--receipt-delay %s" % v, r"receipt_delay wants milliseconds")


@test("sealed: ttl 0 (ephemeral): DELIVERED to an online device; EXPIRED for an offline one, "
      "and nothing of it in Redis", timeout=60)
def _(t):
    d = t.daemon()
    b = t.dev("bob")
    cards = sealed_ids(t, "alice", "bob")
    lb = start_listen(t, d, "bob", "--count", "1")
    res = send_json(t, d, "alice", [cards["bob"]], "--ttl", "0", "--message", "typing...")
    if res[0]["status"] != "DELIVERED":
        fail("ttl 0 to online bob: %r" % res)
    sender, mid, n, payload = listen_line(lb.expect(r".", 10).string)
    if (sender, mid, payload) != (t.dev("alice").token.hex(), res[0]["msg_id"], "typing..."):
        fail("bob's listen printed %r" % lb.lines[-1])
    if lb.wait() != 0:
        fail("listen exited %s" % lb.p.returncode)
    before = redis_dump(t.h.redis)
    res = send_json(t, d, "alice", [cards["bob"]], "--ttl", "0", "--message", "typing again",
                    rc=EX_REFUSED)
    if res[0]["status"] != "EXPIRED":
        fail("ttl 0 to offline bob: %r, want EXPIRED" % res)
    after = redis_dump(t.h.redis)
    if after != before:
        fail("the relay stored something for an ephemeral message: %r" % (
            sorted(set(after) ^ set(before)),))
    t.note("Redis keys before/after: %d/%d" % (len(before), len(after)))
    r = t.cli("listen", *t.idargs(d, "bob"), "--timeout", "1")
    t.expect_rc(r, EX_TIMEOUT, "nothing waits for bob")


def resp_read(f):
    """One RESP reply from a file object (bytes); arrays as lists."""
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b":"):
        return rest
    if kind == b"-":
        raise RuntimeError("redis: %s" % rest.decode(errors="replace"))
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [resp_read(f) for _ in range(n)]
    raise RuntimeError("redis: unexpected reply %r" % line)


def redis_cmd(r, *args):
    req = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in (x if isinstance(x, bytes) else
                                                  str(x).encode() for x in args))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(r.sock)
        s.sendall(req)
        with s.makefile("rb") as f:
            return resp_read(f)


def redis_dump(r):
    """{key: every byte of its value} for every key, read by type (not DUMP: its encoding
    may compress)."""
    out = {}
    for k in redis_cmd(r, "KEYS", "*"):
        typ = redis_cmd(r, "TYPE", k)
        if typ == b"string":
            v = [redis_cmd(r, "GET", k)]
        elif typ == b"list":
            v = redis_cmd(r, "LRANGE", k, 0, -1)
        elif typ == b"hash":
            v = redis_cmd(r, "HGETALL", k)
        elif typ == b"set":
            v = redis_cmd(r, "SMEMBERS", k)
        elif typ == b"zset":
            v = redis_cmd(r, "ZRANGE", k, 0, -1, "WITHSCORES")
        elif typ == b"stream":
            v = [repr(redis_cmd(r, "XRANGE", k, "-", "+")).encode()]
        else:
            v = [b"?" + typ]
        out[k] = b"\x00".join(x or b"" for x in v)
    return out


def marker_forms(marker):
    """The byte strings that give a marker away: itself, its hex (both cases), its base64
    at each of the three alignments (inner part only) and its UTF-16."""
    m = marker.encode()
    forms = {"text": m, "hex": m.hex().encode(), "HEX": m.hex().upper().encode(),
             "utf16": marker.encode("utf-16-le")}
    for shift in range(3):
        b64 = base64.b64encode(b"\x00" * shift + m)
        forms["base64+%d" % shift] = b64[4:len(b64) - 4]
    return forms


def find_forms(data, forms):
    return sorted(name for name, f in forms.items() if f in data)


def relay_memory(pid, max_region=1 << 30):
    """Every readable mapping of a process with resident pages, read through /proc/PID/mem
    (needs root or ptrace rights). Mappings over max_region (ASan's shadow, terabytes of
    reserved address space) are left out and counted. Returns (bytes, regions, skipped)."""
    chunks, regions, skipped = [], 0, []
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        smaps = f.read().splitlines()
    todo = []
    for ln in smaps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)", ln)
        if m:
            cur = (int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4))
            continue
        if ln.startswith("Rss:") and cur is not None and cur[2][0] == "r" and \
                cur[3] != "[vvar]" and int(ln.split()[1]) > 0:
            if cur[1] - cur[0] > max_region:
                skipped.append("%x-%x %s" % cur[:3])
            else:
                todo.append(cur)
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for start, end, _, _ in todo:
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
                regions += 1
            except OSError:
                pass
    return b"\x00".join(chunks), regions, skipped


@test("sealed: privacy: the plaintext of sealed messages queued in Redis (AOF on) and held "
      "unacknowledged in the relay is in no Redis value, AOF file, log line or relay memory; "
      "an unsealed control marker is found in each", timeout=120)
def _(t):
    if os.geteuid() != 0:
        fail("needs root to read the relay's memory (/proc/PID/mem)")
    rd = t.h.new_redis("redis-aof", aof=True).start()
    t.cleanups.append(rd.stop)
    d = t.daemon(redis=rd.url)
    bob, carol = t.dev("bob"), t.dev("carol")
    cards = sealed_ids(t, "alice", "bob", "carol")
    secret = "MARKER-" + os.urandom(12).hex()
    control = "CONTROL-" + os.urandom(12).hex()
    # carol is online and never ACKs: her messages stay in the relay's memory, in flight.
    p = t.probe(d, "carol", "--no-ack")
    p.expect(r"^connected ")
    for i in range(3):
        res = send_json(t, d, "alice", [cards["bob"]], "--message", "%s to bob %d" % (secret, i))
        if res[0]["status"] != "QUEUED":
            fail("to offline bob: %r" % res)
        r = t.send(d, "alice", [cards["carol"]], "--message", "%s to carol %d" % (secret, i),
                   "--timeout", "1")
        if r.out != "%s TIMEOUT\n" % carol.token.hex():
            fail("to carol, who does not ACK: %r" % r)
        p.expect(r"^message ")
    # The control: the same kind of marker, unsealed (--raw), queued and held the same way.
    t.expect_rc(t.send(d, "alice", [bob.token.hex()], "--raw", "--message", control + " q"),
                EX_OK, "raw to bob")
    t.send(d, "alice", [carol.token.hex()], "--raw", "--message", control + " h",
           "--timeout", "1")
    p.expect(r"^message .*blob=%s h" % control)
    secret_f, control_f = marker_forms(secret), marker_forms(control)

    # Redis: every key's value, read by type.
    values = redis_dump(rd)
    blob = b"\x00".join(k + b"\x00" + v for k, v in values.items())
    t.note("Redis: %d keys, %d bytes" % (len(values), len(blob)))
    if find_forms(blob, secret_f):
        fail("the sealed marker is in Redis as %s" % find_forms(blob, secret_f))
    if "text" not in find_forms(blob, control_f):
        fail("the control marker is not in Redis: the Redis check cannot see anything")
    # The AOF (and anything else Redis wrote to its directory).
    files = b""
    for root, _, names in os.walk(rd.dir):
        for n in names:
            if n.endswith((".sock", ".log")):
                continue
            with open(os.path.join(root, n), "rb") as f:
                files += f.read()
    t.note("Redis files: %d bytes" % len(files))
    if find_forms(files, secret_f):
        fail("the sealed marker is in Redis's files as %s" % find_forms(files, secret_f))
    if "text" not in find_forms(files, control_f):
        fail("the control marker is not in the AOF: the file check cannot see anything")
    # The relay's log (debug level).
    log = d.log().encode()
    if find_forms(log, secret_f):
        fail("the sealed marker is in the relay's log as %s" % find_forms(log, secret_f))
    # The relay's memory, while bob's messages are queued and carol's are held.
    mem, regions, skipped = relay_memory(d.proc.pid)
    t.note("relay memory: %d regions, %.1f MB read; left out: %s" % (
        regions, len(mem) / 1e6, skipped or "none"))
    if find_forms(mem, secret_f):
        fail("the sealed marker is in the relay's memory as %s" % find_forms(mem, secret_f))
    if "text" not in find_forms(mem, control_f):
        fail("the control marker is not in the relay's memory: the scan cannot see anything")
    if bob.token.hex().encode() in mem:
        t.note("bob's token (hex) is in the relay's memory too")


@test("sealed: what a malicious relay can do: a captured envelope re-sent under a new "
      "msg_id, the same msg_id again after it was read, or with one byte flipped is refused "
      "by listen (exit 65) and never shown", timeout=60)
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    cards = sealed_ids(t, "alice", "bob")
    res = send_json(t, d, "alice", [cards["bob"]], "--message", "only once")
    mid = bytes.fromhex(res[0]["msg_id"])
    # The relay's view: the DELIVER of it, captured by a raw client as bob, not ACKed.
    c = Client(d, bob).connect()
    c.hello()
    f = c.expect(w.DELIVER, 5)
    c.close()
    env = f["blob"]
    if f["msg_id"] != mid or env[:1] != b"\x01" or b"only once" in env:
        fail("captured DELIVER: %r" % f)
    r = t.cli("listen", *t.idargs(d, "bob"), "--count", "1", "--timeout", "10")
    t.expect_rc(r, EX_OK, "bob reads the original")
    if listen_line(r.out.rstrip("\n"))[1:] != (mid.hex(), 9, "only once"):
        fail("bob's listen printed %r" % r.out)
    path = os.path.join(t.h.root, "captured.env")

    def inject(blob, msg_id, what, err_re):
        with open(path, "wb") as fh:
            fh.write(blob)
        r = t.send(d, "carol", [bob.token.hex()], "--raw", "--file", path, "--id",
                   msg_id.hex())
        if r.rc != EX_OK or "QUEUED" not in r.out:
            fail("%s: the relay did not queue it: %r" % (what, r))
        r = t.cli("listen", *t.idargs(d, "bob"), "--timeout", "1.5")
        t.expect_rc(r, EX_VERIFY, what, r"message %s failed verification: .*%s.*\(dropped\)" % (
            msg_id.hex(), err_re))
        if r.out:
            fail("%s: listen showed %r" % (what, r.out))
        t.note("%s: %s" % (what, r.err.strip()))
    inject(env, os.urandom(16), "the envelope under a new msg_id", r"")
    inject(env, mid, "the envelope again with its own msg_id", r"[Dd]uplicate")
    tampered = bytearray(env)
    tampered[len(env) // 2] ^= 0x01
    inject(bytes(tampered), os.urandom(16), "the envelope with one byte flipped", r"")
    tampered = bytearray(env)
    tampered[-1] ^= 0x80
    inject(bytes(tampered), mid, "the envelope with its last byte flipped, its own msg_id", r"")
    # All dropped (ACKed): nothing comes back.
    r = t.cli("listen", *t.idargs(d, "bob"), "--timeout", "1")
    t.expect_rc(r, EX_TIMEOUT, "nothing left for bob")


# ---------------------------------------------------------------------------------------
# the library

@test("lib: connects, TLS session resumed on reconnect; reconnects by itself after the "
      "relay restarts and receives again", timeout=60)
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    p = t.probe(d, "bob", "--backoff-min", "100", "--backoff-max", "500")
    m = p.expect(r"^connected resumed=(\w+) token=([0-9a-f]+)")
    if m.group(1) != "no" or m.group(2) != bob.token.hex():
        fail("first connection: %r" % m.group(0))
    p.cmd("reconnect")
    p.expect(r"^reconnect rc=0")
    p.expect(r"^disconnected cause=local .*retry=yes in=0")
    m = p.expect(r"^connected resumed=(\w+)")
    if m.group(1) != "yes":
        fail("the reconnect did not resume the TLS session: %r" % m.group(0))
    r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "before")
    t.expect_rc(r, EX_OK, "send before the restart")
    p.expect(r"^message id=\w+ stored=0 len=6 blob=before$")
    restart_same_port(d)
    m = p.expect(r"^disconnected cause=(\w+) code=(\d+) retry=yes")
    t.note(p.lines[-1])
    if m.group(1) != "goaway" or int(m.group(2)) != w.E_SHUTDOWN:
        fail("the drain should end the connection with GOAWAY SHUTDOWN: %r" % p.lines[-1])
    m = p.expect(r"^connected resumed=(\w+)", timeout=20, skip=r"^disconnected ")
    t.note("after the restart: " + p.lines[-1])
    r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "after")
    t.expect_rc(r, EX_OK, "send after the restart")
    if "DELIVERED" not in r.out:
        fail("send after the restart: %r" % r.out)
    p.expect(r"^message id=\w+ stored=0 len=5 blob=after$")


@test("lib: two relays of a cluster on one Redis: a device given both follows a drain of its "
      "relay to the other; messages sent through either reach it live", timeout=60)
def _(t):
    cfg = {"cluster": True, "cluster_lease": "1500ms", "store_timeout": "1s"}
    d1 = t.daemon(**cfg)
    d2 = t.h.start_daemon(cfg, flush=False)
    time.sleep(1.2)  # each relay's lease seen by the other
    bob = t.dev("bob")
    servers = "%s:%d,%s:%d" % (LOOPBACK, d1.port, LOOPBACK, d2.port)
    args = [a if a != "%s:%d" % (LOOPBACK, d1.port) else servers
            for a in t.idargs(d1, "bob")]
    p = Proc([PROBE] + args + ["--backoff-min", "100", "--backoff-max", "300"], t.env(),
             stdin=True)
    t.cleanups.append(p.kill)
    p.expect(r"^connected resumed=no token=" + bob.token.hex())
    for d, text in ((d1, "via-one"), (d2, "via-two")):
        r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", text)
        t.expect_rc(r, EX_OK, "send through relay %d" % d.port)
        if "DELIVERED" not in r.out:
            fail("send through %d: %r, want DELIVERED (live, across relays)" % (d.port, r.out))
        p.expect(r"^message id=\w+ stored=0 len=7 blob=%s$" % text)
    d1.stop()
    m = p.expect(r"^disconnected cause=(\w+) code=(\d+) retry=yes")
    if m.group(1) != "goaway" or int(m.group(2)) != w.E_SHUTDOWN:
        fail("the drain should end the connection with GOAWAY SHUTDOWN: %r" % p.lines[-1])
    p.expect(r"^connected resumed=", timeout=20, skip=r"^disconnected ")
    r = t.send(d2, "alice", [bob.token.hex()], "--raw", "--message", "after-1")
    t.expect_rc(r, EX_OK, "send after the drain")
    if "DELIVERED" not in r.out:
        fail("send after the drain: %r" % r.out)
    p.expect(r"^message id=\w+ stored=0 len=7 blob=after-1$")


def take_lines(p, into):
    """Moves whatever p printed so far into the list `into`."""
    while True:
        try:
            ln = p.out.get_nowait()
        except queue.Empty:
            return
        if ln is None:
            return
        p.lines.append(ln)
        into.append(ln)


def churn(t, what, faults, rcluster=None):
    """Three relays of a cluster, two senders sending SP_ROLLING_MESSAGES (20,000) messages
    to four devices, all through libsealpush (the probe); faults: (share of the run, relay
    index, kill) for each restart, or (share, "master", None): kill -9 of a master of
    rcluster (a Redis Cluster the relays then use, with wait_replicas 1). Every message
    answered DELIVERED or QUEUED must reach its device; duplicates are counted."""
    cfg = {"cluster": True, "cluster_lease": "1500ms", "store_timeout": "1s",
           "shutdown_grace": "2s", "max_queue": 10000}
    if rcluster:
        cfg.update(redis=rcluster.url, wait_replicas=1, wait_timeout="500ms",
                   store_timeout="2s", cluster_lease="3s")
        ds = [t.h.start_daemon(cfg, flush=False) for _ in range(3)]
    else:
        ds = [t.daemon(**cfg)] + [t.h.start_daemon(cfg, flush=False) for _ in range(2)]
    time.sleep(1.2)
    addrs = ["%s:%d" % (LOOPBACK, d.port) for d in ds]

    def probe_for(dev, k, *extra):
        order = ",".join(addrs[k % 3:] + addrs[:k % 3])
        args = ["--cert", dev.crt, "--key", dev.key, "--ca", t.h.pki.ca_crt, "--server", order,
                "--backoff-min", "50", "--backoff-max", "300"] + list(extra)
        p = Proc([PROBE] + args, t.env(), stdin=True)
        t.cleanups.append(p.kill)
        p.expect(r"^connected ")
        return p

    churn.runs = getattr(churn, "runs", 0) + 1  # each run its own devices
    devs = [t.h.pki.device("roll%d-%d" % (churn.runs, i)) for i in range(4)]
    recv = [probe_for(d, i) for i, d in enumerate(devs)]
    send = [probe_for(t.dev(n), i, "--send-only") for i, n in enumerate(("alice", "bob"))]
    out = {id(p): [] for p in recv + send}
    per_sender, sent = int(os.environ.get("SP_ROLLING_MESSAGES", "20000")) // 2, {}
    # after this many sends of each sender, relay i restarts (SIGTERM drain or kill -9, then
    # start again)
    restarts = [int(per_sender * f[0]) for f in faults]
    t0 = time.monotonic()
    scanned = {}
    for k in range(per_sender):
        for j, sp in enumerate(send):
            to = devs[(k + j) % 4]
            sp.cmd("send %s m%d-%d" % (to.token.hex(), j, k))
            sent["m%d-%d" % (j, k)] = (to, j)
        if k in restarts:
            _, i, kill = faults[restarts.index(k)]
            if i == "master":
                victim = rcluster.master_of("sp:{%s}:q" % devs[0].token.hex())
                rcluster.kill(victim)
            else:
                restart_same_port(ds[i], kill=kill)
        if k % 100 == 0:
            for p in recv + send:
                take_lines(p, out[id(p)])
            # like an app: keep what the library holds unanswered under its queue limit
            # (it refuses more with ENOBUFS while it has no relay)
            for sp in send:
                while True:
                    lines = out[id(sp)]
                    seen = scanned.get(id(sp), (0, 0))
                    n_res = seen[1] + sum(1 for ln in lines[seen[0]:]
                                          if ln.startswith("result id="))
                    scanned[id(sp)] = (len(lines), n_res)
                    if (k + 1) - n_res < 800:
                        break
                    time.sleep(0.02)
                    take_lines(sp, lines)
    deadline = time.monotonic() + 60
    results = {}
    while time.monotonic() < deadline:
        for p in recv + send:
            take_lines(p, out[id(p)])
        results = {}
        for p in send:
            for ln in out[id(p)]:
                m = re.match(r"^result id=(\w+) (\w+)", ln)
                if m:
                    results[m.group(1)] = m.group(2)
        if len(results) >= len(sent):
            break
        time.sleep(0.5)
    took = time.monotonic() - t0
    def received():
        got = {}
        for i, p in enumerate(recv):
            take_lines(p, out[id(p)])
            for ln in out[id(p)]:
                m = re.match(r"^message id=\w+ stored=\d len=\d+ blob=(\S+)$", ln)
                if m:
                    got.setdefault(m.group(1), []).append(i)
        return got

    ok_texts, status_of = [], {}
    for j, p in enumerate(send):
        ids = [re.match(r"^queued id=(\w+)", ln).group(1) for ln in out[id(p)]
               if ln.startswith("queued id=")]
        rcs = [ln.rsplit("rc=", 1)[1] for ln in out[id(p)] if ln.startswith("queued id=")]
        for k, mid in enumerate(ids):
            text = "m%d-%d" % (j, k)
            status_of[text] = results.get(mid, "UNANSWERED") if rcs[k] == "0" else "REFUSED"
            if status_of[text] in ("DELIVERED", "QUEUED"):
                ok_texts.append(text)
    counts = {}
    for st in status_of.values():
        counts[st] = counts.get(st, 0) + 1
    got = received()
    deadline = time.monotonic() + 20  # QUEUED ones may still be draining
    while time.monotonic() < deadline and any(x not in got for x in ok_texts):
        time.sleep(0.5)
        got = received()
    lost = [x for x in ok_texts if x not in got]
    if lost and os.environ.get("SP_ROLLING_DUMP"):
        with open(os.environ["SP_ROLLING_DUMP"], "w") as f:
            for p in recv + send:
                f.write("=== %s\n" % " ".join(p.argv[1:5]))
                f.write("\n".join(out[id(p)]) + "\n")
            # where the lost ones are: still queued in Redis (nothing read them), or gone
            for i, dv in enumerate(devs):
                tok = dv.token.hex()
                if rcluster:
                    port = rcluster.master_of("sp:{%s}:q" % tok)
                    q = rcluster.cli(port, "zcard", "sp:{%s}:q" % tok)
                    s = rcluster.cli(port, "hgetall", "sp:{%s}:s" % tok)
                    pk = "sp:p:{%s}" % tok
                    pr = rcluster.cli(rcluster.master_of(pk), "get", pk)
                    f.write("=== redis device %d %s master %s: queued %s, s %r, presence %r\n"
                            % (i, tok[:8], port, q, s, pr))
            for d in ds:
                st, body = d.admin_get("/metrics")
                f.write("=== metrics %s\n%s\n" % (d.port, "\n".join(
                    ln for ln in (body or "").splitlines()
                    if "cluster" in ln or "queue" in ln or "store" in ln)))
    wrong = [x for x in got if x in sent and any(i != devs.index(sent[x][0]) for i in got[x])]
    dups = sum(len(v) - 1 for v in got.values())
    t.note("%d messages in %.1f s with %s: %s; lost %d, duplicates seen by the apps %d"
           % (len(sent), took, what, counts, len(lost), dups))
    if len(status_of) != len(sent):
        fail("the library queued %d of %d sends" % (len(status_of), len(sent)))
    if wrong:
        fail("delivered to the wrong device: %r" % wrong[:5])
    if lost:
        fail("answered DELIVERED/QUEUED but never received: %d, e.g. %r" % (len(lost),
                                                                           lost[:5]))
    if rcluster:
        # while the dead master's slots have no master, what needs them is answered
        # TRY_LATER (the sender knows, and may send again); nothing is left unanswered
        if set(counts) - {"DELIVERED", "QUEUED", "TRY_LATER"}:
            fail("answers other than DELIVERED, QUEUED and TRY_LATER: %r" % counts)
    elif counts.get("DELIVERED", 0) + counts.get("QUEUED", 0) < len(sent) * 0.99:
        fail("every send should succeed through the restarts: %r" % counts)


@test("lib: rolling restart of three relays of a cluster while two senders send 20,000 "
      "messages (SP_ROLLING_MESSAGES) to four devices: every message answered DELIVERED or "
      "QUEUED reaches its device (lost 0), duplicates counted", timeout=180)
def _(t):
    churn(t, "three rolling restarts", [(0.25, 0, False), (0.5, 1, False), (0.75, 2, False)])


@test("lib: kill -9 of two of three relays in turn (each started again at once) while two "
      "senders send 20,000 messages (SP_ROLLING_MESSAGES) to four devices: every message "
      "answered DELIVERED or QUEUED reaches its device (lost 0), duplicates counted",
      timeout=180)
def _(t):
    churn(t, "kill -9 of relays 2 and 3", [(0.33, 1, True), (0.66, 2, True)])


@test("lib: kill -9 of a Redis Cluster master (six nodes, wait_replicas 1) under three relays "
      "while two senders send 20,000 messages (SP_ROLLING_MESSAGES) to four devices: every "
      "message answered DELIVERED or QUEUED reaches its device (lost 0), the others TRY_LATER",
      timeout=240)
def _(t):
    rc = Cluster(t.h.root, t.h.redis_server).start()
    t.cleanups.append(rc.stop)
    churn(t, "kill -9 of the master of a device's queue", [(0.4, "master", None)], rcluster=rc)


@test("lib: sends made while disconnected are written after the reconnect", timeout=60)
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    p = t.probe(d, "alice", "--backoff-min", "200", "--backoff-max", "400")
    p.expect(r"^connected ")
    d.stop()
    p.expect(r"^disconnected cause=goaway")
    p.cmd("send %s queued-while-down" % bob.token.hex())
    p.expect(r"^queued id=\w+ rc=0", skip=r"^disconnected ")
    restart_same_port(d)
    p.expect(r"^connected ", timeout=20, skip=r"^disconnected ")
    m = p.expect(r"^result id=\w+ (\w+)")
    if m.group(1) != "QUEUED":
        fail("result %r, want QUEUED" % m.group(0))
    r = t.cli("listen", *t.idargs(d, "bob"), "--count", "1", "--timeout", "10")
    t.expect_rc(r, EX_OK, "bob gets it")
    if "queued-while-down" not in r.out:
        fail("bob got %r" % r.out)


@test("lib: GOAWAY REPLACED stops the replaced client: no reconnect fight")
def _(t):
    d = t.daemon()
    p1 = t.probe(d, "bob", "--backoff-min", "50", "--backoff-max", "100")
    p1.expect(r"^connected ")
    p2 = t.probe(d, "bob", "--backoff-min", "50", "--backoff-max", "100")
    p2.expect(r"^connected ")
    m = p1.expect(r"^disconnected cause=goaway code=(\d+) retry=no")
    if int(m.group(1)) != w.E_REPLACED:
        fail("p1: %r" % m.group(0))
    p1.expect(r"^stopped cause=goaway code=%d" % w.E_REPLACED)
    time.sleep(0.5)
    p2.cmd("stats")
    m = p2.expect(r"^stats welcomes=(\d+) .*disconnects=(\d+)")
    if m.groups() != ("1", "0"):
        fail("the new connection was disturbed: %r" % m.group(0))


@test("lib: keepalive PINGs when idle; a relay that stops answering is a dead peer", timeout=40)
def _(t):
    d = t.daemon(keepalive_min=1)
    p = t.probe(d, "bob", "--keepalive", "1", "--ping-timeout", "800", "--backoff-min", "100",
                "--backoff-max", "200")
    p.expect(r"^connected ")
    time.sleep(3.5)
    p.cmd("stats")
    m = p.expect(r"^stats .*pings=(\d+)")
    if not 2 <= int(m.group(1)) <= 5:
        fail("%s PINGs in 3.5s idle with keepalive 1s" % m.group(1))
    if p.p.poll() is not None:
        fail("probe died")
    d.signal(signal.SIGSTOP)
    try:
        m = p.expect(r"^disconnected cause=(\w+)", timeout=6)
        if m.group(1) != "dead_peer":
            fail("a stopped relay: %r, want dead_peer" % p.lines[-1])
    finally:
        d.signal(signal.SIGCONT)
    p.expect(r"^connected ", timeout=15, skip=r"^disconnected ")


@test("lib: a redelivered message that was ACKed is ACKed again without reaching the app",
      timeout=40)
def _(t):
    # bob ACKs on one connection; the same id queued again (a sender's retry after bob's ACK
    # was lost would look the same) is recognised by the library's dedup memory.
    d = t.daemon()
    bob = t.dev("bob")
    p = t.probe(d, "bob")
    p.expect(r"^connected ")
    mid = os.urandom(16).hex()
    r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "dup", "--id", mid)
    t.expect_rc(r, EX_OK, "first send")
    p.expect(r"^message id=%s " % mid)
    r = t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "dup", "--id", mid)
    t.expect_rc(r, EX_OK, "second send")
    if "DELIVERED" not in r.out:
        fail("the duplicate was not acknowledged: %r" % r.out)
    p.cmd("stats")
    m = p.expect(r"^stats .*duplicates=(\d+)")
    if m.group(1) != "1":
        fail("duplicates=%s, want 1" % m.group(1))


@test("lib: sp_client_close flushes ACKs and closes cleanly (stopped cause=local)")
def _(t):
    d = t.daemon()
    bob = t.dev("bob")
    t.expect_rc(t.send(d, "alice", [bob.token.hex()], "--raw", "--message", "q"), EX_OK, "send")
    p = t.probe(d, "bob")
    p.expect(r"^connected ")
    p.expect(r"^message id=\w+ stored=1 len=1 blob=q$")
    p.cmd("close")
    p.expect(r"^stopped cause=local")
    if p.wait() != 0:
        fail("probe exit %s" % p.p.returncode)
    r = t.cli("listen", *t.idargs(d, "bob"), "--timeout", "1")
    t.expect_rc(r, EX_TIMEOUT, "nothing left after the ACK")


# ---------------------------------------------------------------------------------------
# sealing-key rotation (issue 13 part 5, PROTOCOL.md 13.11): fresh devices of their own, so
# that the rotations do not touch the keys and cards of the tests above

def rotation_dev(t, name):
    """A new device with a sealing key; returns (device, its first card's path)."""
    dev = t.h.pki.device(name)
    t.expect_rc(t.cli("init", "--cert", dev.crt, "--key", dev.key), EX_OK, "init %s" % name)
    r = t.cli("card", "--cert", dev.crt, "--key", dev.key)
    t.expect_rc(r, EX_OK, "card %s" % name)
    path = os.path.join(t.h.root, name + ".card0")
    with open(path, "w") as f:
        f.write(r.out)
    return dev, path


def write_card(t, name, text):
    path = os.path.join(t.h.root, name)
    with open(path, "w") as f:
        f.write(text)
    return path


@test("rotation: messages sealed before `sealpush rotate` open in the grace period; after it "
      "the erased keys' files are gone and a message sealed to one is reported as such, "
      "acknowledged, exit 65; an older card is refused by the sender", timeout=90)
def _(t):
    d = t.daemon()
    a, _ = rotation_dev(t, "rot-alice")
    b, card0 = rotation_dev(t, "rot-bob")
    ida = ["--cert", a.crt, "--key", a.key, "--ca", t.h.pki.ca_crt,
           "--server", "%s:%d" % (LOOPBACK, d.port)]
    idb = ["--cert", b.crt, "--key", b.key, "--ca", t.h.pki.ca_crt,
           "--server", "%s:%d" % (LOOPBACK, d.port)]
    base = b.key[:-len(".key")] + ".seal.key"

    def send(card, text):
        r = t.cli("send", *ida, "--to", card, "--message", text, "--json")
        t.expect_rc(r, EX_OK, "send %r" % text)
        res = json.loads(r.out)["results"]
        if [x["status"] for x in res] != ["QUEUED"]:
            fail("send %r: %r, want QUEUED (bob is offline)" % (text, res))
        return res[0]["msg_id"]
    m0 = send(card0, "sealed to epoch 0")
    # rotate: the new card (version 3, epoch 1) on stdout and in --card-file
    cf = os.path.join(t.h.root, "rot-bob.current")
    r = t.cli("rotate", "--cert", b.crt, "--key", b.key, "--card-file", cf)
    t.expect_rc(r, EX_OK, "rotate")
    c1 = json.loads(r.out)
    if (c1["v"], c1["epoch"]) != (3, 1) or c1 != json.load(open(cf)):
        fail("rotate printed %r (want a v3 card of epoch 1, the same as in --card-file)" % c1)
    if "epoch 1" not in r.err:
        fail("rotate said %r on stderr, want the new epoch" % r.err)
    card1 = write_card(t, "rot-bob.card1", r.out)
    m1 = send(card1, "sealed to epoch 1")
    # the grace period: both open, each with its key
    r = t.cli("listen", *idb, "--json", "--count", "2", "--timeout", "15")
    t.expect_rc(r, EX_OK, "listen in the grace period")
    got = [(o["msg_id"], o["payload"]) for o in map(json.loads, r.out.splitlines())]
    if got != [(m0, "sealed to epoch 0"), (m1, "sealed to epoch 1")]:
        fail("listen in the grace period printed %r" % got)
    # alice has used the epoch-1 card: the epoch-0 card is now older than what she has seen
    r = t.cli("send", *ida, "--to", card0, "--message", "to the old key")
    t.expect_rc(r, EX_VERIFY, "send to an older card", r"older \(key epoch 0\)")
    m2 = send(card1, "sealed to epoch 1, opened after its erasure")
    # rotate with no grace: epochs 0 and 1 are erased, their files gone
    r = t.cli("rotate", "--cert", b.crt, "--key", b.key, "--key-grace", "0")
    t.expect_rc(r, EX_OK, "rotate --key-grace 0")
    if not re.search(r"erased 2 sealing keys", r.err) or json.loads(r.out)["epoch"] != 2:
        fail("rotate --key-grace 0: %r" % r)
    for gone in (base, os.path.join(base + ".d", "1.key")):
        if os.path.exists(gone):
            fail("%s is still on disk after its erasure" % gone)
    if sorted(os.listdir(base + ".d")) != ["2.key"]:
        fail("keys left: %r, want 2.key only" % os.listdir(base + ".d"))
    r = t.cli("listen", *idb, "--timeout", "3")
    t.expect_rc(r, EX_VERIFY, "listen: a message sealed to an erased key",
                r"message %s cannot be opened: sealed to sealing key epoch 1, erased after "
                r"its grace period: it can never be opened" % m2)
    if r.out:
        fail("listen printed %r for a message it cannot open" % r.out)
    # acknowledged: it does not come back
    r = t.cli("listen", *idb, "--timeout", "1")
    t.expect_rc(r, EX_TIMEOUT, "nothing left after the refusal was acknowledged")
    # and the newest card works
    card2 = write_card(t, "rot-bob.card2", t.cli("card", "--cert", b.crt, "--key", b.key).out)
    send(card2, "sealed to epoch 2")
    r = t.cli("listen", *idb, "--count", "1", "--timeout", "10")
    t.expect_rc(r, EX_OK, "listen epoch 2")
    if not r.out.endswith(" sealed to epoch 2\n"):
        fail("listen printed %r" % r.out)


@test("rotation: a running listen rotates by itself when due (--rotate-every 2s), prints the "
      "new card and writes it to --card-file, opens messages sealed to it, and erases the "
      "earlier key after --key-grace", timeout=90)
def _(t):
    d = t.daemon()
    a, _ = rotation_dev(t, "rot-carol")
    b, card0 = rotation_dev(t, "rot-dave")
    base = b.key[:-len(".key")] + ".seal.key"
    cf = os.path.join(t.h.root, "rot-dave.current")
    lp = t.cli_bg("listen", "-v", "--json", "--cert", b.crt, "--key", b.key, "--ca",
                  t.h.pki.ca_crt, "--server", "%s:%d" % (LOOPBACK, d.port),
                  "--rotate-every", "2s", "--key-grace", "5s", "--card-file", cf,
                  "--timeout", "40")
    lp.wait_err(r"connected to 127\.0\.0\.1", 10)
    o = json.loads(lp.expect(r'"kind":"card"', 10).string)
    if o["epoch"] != 1 or o["card"]["epoch"] != 1 or o["card"] != json.load(open(cf)):
        fail("listen printed %r, want the card of epoch 1 (and the same in --card-file)" % o)
    lp.wait_err(r"rotated the sealing key: epoch 1", 5)
    r = t.cli("send", "--cert", a.crt, "--key", a.key, "--ca", t.h.pki.ca_crt,
              "--server", "%s:%d" % (LOOPBACK, d.port), "--to", cf, "--message", "to epoch 1",
              "--json")
    t.expect_rc(r, EX_OK, "send to the new card")
    mid = json.loads(r.out)["results"][0]["msg_id"]
    o = json.loads(lp.expect(r'"kind":"message"', 10, skip=r'"kind":"card"').string)
    if (o["msg_id"], o["payload"], o["sender"]) != (mid, "to epoch 1", a.token.hex()):
        fail("listen printed %r" % o)
    # the epoch-0 key was retired when epoch 1 was made: erased 5 s later
    lp.wait_err(r"erased \d+ sealing keys? past the grace period", 15)
    if os.path.exists(base):
        fail("%s is still on disk past its grace period" % base)
    lp.expect(r'"kind":"card"', 10, skip=r'"kind":"message"')  # it keeps rotating
    lp.kill()
    epochs = sorted(int(n.split(".")[0]) for n in os.listdir(base + ".d"))
    if not epochs or epochs[-1] < 2:
        fail("keys on disk: %r, want epoch 2 or later" % epochs)
    t.note("epochs on disk after the run: %r" % epochs)


def main():
    global CLI, PROBE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sealpushd", default=os.environ.get("SEALPUSHD"))
    ap.add_argument("--sealpush-ca", default=os.environ.get("SEALPUSH_CA_BIN"))
    ap.add_argument("--sealpush", default=os.environ.get("SEALPUSH_CLI"))
    ap.add_argument("--probe", default=os.environ.get("SP_CLIENT_PROBE"))
    ap.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER", "redis-server"))
    ap.add_argument("-k", dest="pattern")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    tests = [x for x in TESTS if not args.pattern or args.pattern in x[0]]
    if args.list:
        for name, _, _ in tests:
            print(name)
        return 0
    for what, path in (("--sealpushd", args.sealpushd), ("--sealpush-ca", args.sealpush_ca),
                       ("--sealpush", args.sealpush), ("--probe", args.probe)):
        if not path or not os.access(path, os.X_OK):
            print("Bail out! %s: %r is not an executable" % (what, path))
            return 1
    if not shutil.which(args.redis_server):
        print("Bail out! %s not found" % args.redis_server)
        return 1
    CLI, PROBE = os.path.abspath(args.sealpush), os.path.abspath(args.probe)
    h = Harness(args.sealpushd, args.sealpush_ca, args.redis_server, keep=args.keep)

    return run_tap(h, tests, T, verbose=args.verbose, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
