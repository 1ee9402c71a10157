"""harness: fixtures for the sealpush end-to-end tests (Python 3 standard library only).

    h = Harness(sealpushd="build/server/sealpushd", sealpush_ca="build/tools/sealpush-ca")
    h.setup()                      # temp dir, PKI (sealpush-ca), a private redis-server
    d = h.start_daemon({"window": 2})   # sealpushd on free loopback ports, waits until ready
    c = Client(d, h.pki["alice"]); c.connect(); c.hello()
    ...
    d.stop()                       # SIGTERM; fails if it does not exit 0 within the grace
    h.teardown()                   # kills whatever is left, removes the temp dir

Every child process (redis-server, sealpushd) runs in its own process group and is
registered so that it is killed at exit whatever happens (try/finally, atexit, SIGTERM/SIGINT
of the test runner). Only loopback addresses are used.
"""

import argparse
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

import spwire as w

LOOPBACK = "127.0.0.1"


class TestFailure(Exception):
    """A failed check; the message says what was expected and what was got."""


def fail(msg):
    raise TestFailure(msg)


# --- child processes ---

_children = []  # Popen objects, each the leader of its own process group
_temp_dirs = []  # removed at exit (unless the run keeps them)


def _kill_group(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_all_children():
    """Kills every child we started that is still running (process group, SIGKILL)."""
    for p in list(_children):
        if p.poll() is None:
            _kill_group(p)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    del _children[:]


def _remove_temp_dirs():
    for d in _temp_dirs:
        shutil.rmtree(d, ignore_errors=True)
    del _temp_dirs[:]


def _on_signal(signum, frame):
    kill_all_children()
    _remove_temp_dirs()
    sys.stderr.write("harness: killed by signal %d, children stopped\n" % signum)
    os._exit(128 + signum)


atexit.register(_remove_temp_dirs)
atexit.register(kill_all_children)  # runs first (atexit is last in, first out)
for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(_s, _on_signal)
    except ValueError:  # not the main thread
        pass


def spawn(argv, **kw):
    """Popen in a new process group (so the whole group can be killed), registered."""
    p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
    _children.append(p)
    return p


def stop_process(p, sig=signal.SIGTERM, timeout=5.0):
    """Sends sig, waits up to timeout, then SIGKILLs the group. Returns (returncode, clean):
    clean is False if it had to be killed."""
    if p.poll() is not None:
        return p.returncode, True
    try:
        p.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=timeout)
        clean = True
    except subprocess.TimeoutExpired:
        clean = False
        _kill_group(p)
        p.wait(timeout=5)
    # Whatever it left in its group goes too.
    _kill_group(p)
    if p in _children:
        _children.remove(p)
    return p.returncode, clean


def free_port():
    """A TCP port on the loopback that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def parse_duration(v):
    """Seconds of a config duration: int (ms) or "500ms" / "2s" / "1m" / "1h"."""
    if isinstance(v, (int, float)):
        return v / 1000.0
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(v))
    if not m:
        raise ValueError("bad duration %r" % v)
    n = int(m.group(1))
    return n * {"ms": 0.001, None: 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# --- redis-server ---

class Redis:
    """A private redis-server on a unix socket (no TCP port, no persistence)."""

    def __init__(self, directory, binary="redis-server", aof=False):
        self.dir = directory
        self.binary = binary
        self.aof = aof  # appendonly yes + appendfsync always: nothing acknowledged is lost
        self.sock = os.path.join(directory, "redis.sock")
        self.logfile = os.path.join(directory, "redis.log")
        self.proc = None

    @property
    def url(self):
        return "unix:" + self.sock

    def start(self, timeout=10.0):
        os.makedirs(self.dir, exist_ok=True)
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        log = open(self.logfile, "ab")
        self.proc = spawn([self.binary, "--port", "0", "--unixsocket", self.sock,
                           "--unixsocketperm", "700", "--save", "",
                           "--appendonly", "yes" if self.aof else "no",
                           "--appendfsync", "always" if self.aof else "everysec",
                           "--daemonize", "no", "--dir", self.dir],
                          stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s:\n%s" % (
                    self.proc.returncode, self.log()))
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within %.0fs:\n%s" % (
            timeout, self.log()))

    def ping(self):
        """True if redis answers PING on its socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(self.sock)
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args):
        """Runs one command on the socket (RESP) and returns the raw reply bytes."""
        req = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in (x if isinstance(x, bytes) else
                                                      str(x).encode() for x in args))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(self.sock)
            s.sendall(req)
            return s.recv(1 << 20)

    def flush(self):
        """Empties every database, so no test sees what another one queued."""
        if self.command("FLUSHALL") != b"+OK\r\n":
            raise RuntimeError("FLUSHALL failed")

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=5)
            self.proc = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


# --- PKI ---

class Device:
    def __init__(self, name, crt, key, token, ca_token_hex):
        self.name = name
        self.crt = crt
        self.key = key
        self.token = token                # bytes, computed here from the certificate
        self.ca_token_hex = ca_token_hex  # what sealpush-ca printed

    def __repr__(self):
        return "<Device %s %s>" % (self.name, self.token.hex()[:8])


class PKI:
    """A device CA made with the real sealpush-ca: DIR/ca.crt, server.crt/.key, crl.pem and
    devices DIR/NAME.crt/.key. Tokens are computed independently (spwire.token_of_cert_file)."""

    def __init__(self, directory, ca_bin):
        self.dir = directory
        self.ca_bin = ca_bin
        self.devices = {}
        self.ca_crt = os.path.join(directory, "ca.crt")
        self.server_crt = os.path.join(directory, "server.crt")
        self.server_key = os.path.join(directory, "server.key")
        self.crl = os.path.join(directory, "crl.pem")

    def run(self, *args):
        r = subprocess.run([self.ca_bin] + [str(a) for a in args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError("sealpush-ca %s failed (exit %d): %s" % (
                " ".join(map(str, args)), r.returncode, r.stderr.decode(errors="replace")))
        return r.stdout.decode()

    def init(self, server=True):
        self.run("init", self.dir)
        if server:
            self.run("server", self.dir, "--name", "localhost", "--ip", LOOPBACK)
        return self

    def device(self, name, *extra):
        out = self.run("device", self.dir, name, *extra).strip()
        crt = os.path.join(self.dir, name + ".crt")
        dev = Device(name, crt, os.path.join(self.dir, name + ".key"),
                     w.token_of_cert_file(crt), out)
        self.devices[name] = dev
        return dev

    def revoke(self, name):
        self.run("revoke", self.dir, name)

    def __getitem__(self, name):
        return self.devices[name]


# --- sealpushd ---

READY_RE = re.compile(r"(^|\s)event=ready(\s|$)", re.M)
SANITIZER_RE = re.compile(r"(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                          r"ThreadSanitizer|runtime error:)")


class Daemon:
    """One sealpushd process with its config file and log."""

    def __init__(self, harness, config, extra_args=(), name="sealpushd"):
        self.h = harness
        self.binary = harness.sealpushd
        self.dir = tempfile.mkdtemp(prefix=name + "-", dir=harness.root)
        self.cfg_path = os.path.join(self.dir, "sealpushd.json")
        self.log_path = os.path.join(self.dir, "sealpushd.log")
        self.user_config = dict(config)
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None
        self.admin_port = None
        self.config = None
        self.stopped = False
        self.exit_problem = None  # set by stop() when the exit was not clean

    # config
    def build_config(self):
        self.port = free_port()
        self.admin_port = free_port()
        p = self.h.pki
        cfg = {
            "listen": "%s:%d" % (LOOPBACK, self.port),
            "admin_listen": "%s:%d" % (LOOPBACK, self.admin_port),
            "tls_cert": p.server_crt,
            "tls_key": p.server_key,
            "client_ca": p.ca_crt,
            "crl": p.crl,
            "redis": self.h.redis.url,
            "workers": 2,
            "log_level": "debug",
            "shutdown_grace": "3s",
        }
        for k, v in self.user_config.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        self.config = cfg
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
        return cfg

    @property
    def grace(self):
        return parse_duration(self.config.get("shutdown_grace", "3s"))

    def start(self, timeout=15.0):
        for attempt in range(3):
            self.build_config()
            log = open(self.log_path, "ab")
            self.proc = spawn([self.binary, "-c", self.cfg_path] + self.extra_args,
                              stdout=log, stderr=log)
            log.close()
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError:
                if self.proc.poll() is not None and re.search(
                        r"in use|EADDRINUSE", self.log(), re.I) and attempt < 2:
                    continue  # a port was taken between free_port() and bind: retry
                stop_process(self.proc, signal.SIGKILL)
                raise
        raise AssertionError("unreachable")

    def wait_ready(self, timeout):
        """Until the log says event=ready (or /readyz answers 200) and the TLS port accepts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sealpushd exited with %s before it was ready" %
                                   self.proc.returncode)
            if READY_RE.search(self.log()) or self.admin_status("/readyz") == 200:
                try:
                    socket.create_connection((LOOPBACK, self.port), timeout=1).close()
                except OSError:
                    time.sleep(0.05)
                    continue
                self._wait_store(min(deadline, time.monotonic() + 5))
                return
            time.sleep(0.05)
        raise RuntimeError("sealpushd not ready within %.0fs (no event=ready in its log, "
                           "/readyz not 200)" % timeout)

    def _wait_store(self, until):
        """Listening is not all: while Redis runs, a SEND to an offline device is QUEUED only
        once the workers' Redis connections are up, which /readyz also waits for. Tests that
        run without Redis go on after `until`."""
        redis = getattr(self.h, "redis", None)
        if not (self.config or {}).get("redis") or not redis or not redis.proc or \
                redis.proc.poll() is not None:
            return
        while time.monotonic() < until and self.admin_status("/readyz") not in (200, None):
            time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """The exit status, or None if it is still running after timeout seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, check=True):
        """SIGTERM, wait for the grace period (plus a margin for slow sanitizer builds), then
        SIGKILL. With check, raises TestFailure unless it exited 0 in time and its log has no
        sanitizer report."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc is None:
            return
        already = self.proc.poll()
        t0 = time.monotonic()
        rc, clean = stop_process(self.proc, signal.SIGTERM, timeout=self.grace + 3.0)
        took = time.monotonic() - t0
        problems = []
        if already is not None and already != 0:
            problems.append("sealpushd had already exited with %s" % already)
        elif not clean:
            problems.append("sealpushd did not exit within %.1fs of SIGTERM (grace %.1fs): "
                            "killed" % (took, self.grace))
        elif rc != 0:
            problems.append("sealpushd exited with %s after SIGTERM, want 0" % rc)
        m = SANITIZER_RE.search(self.log())
        if m:
            problems.append("sanitizer report in the sealpushd log: %r" % m.group(0))
        self.exit_problem = "; ".join(problems) or None
        if check and self.exit_problem:
            raise TestFailure(self.exit_problem)

    def kill(self):
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
        self.stopped = True

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_lines(self, event=None):
        """Log lines, optionally only those with event=EVENT."""
        lines = self.log().splitlines()
        if event is not None:
            lines = [ln for ln in lines if re.search(r"(^|\s)event=%s(\s|$)" % re.escape(event),
                                                     ln)]
        return lines

    # admin HTTP
    def admin_get(self, path, timeout=3.0):
        """(status, body) of GET http://127.0.0.1:ADMIN/path; (None, error) if unreachable."""
        try:
            c = http.client.HTTPConnection(LOOPBACK, self.admin_port, timeout=timeout)
            c.request("GET", path)
            r = c.getresponse()
            body = r.read().decode("utf-8", "replace")
            c.close()
            return r.status, body
        except (OSError, http.client.HTTPException) as e:
            return None, repr(e)

    def admin_status(self, path):
        if self.admin_port is None or "admin_listen" not in (self.config or {}):
            return None
        return self.admin_get(path, timeout=1.0)[0]


# --- the protocol client ---

SERVER_SENDS = {w.WELCOME, w.SEND_RESULT, w.DELIVER, w.PING, w.PONG, w.GOAWAY, w.ERROR,
                w.SUBSCRIPTION, w.DIR_ANSWER, w.RENEWED, w.ACCESS_STATE}


class HandshakeRefused(Exception):
    def __init__(self, how):
        self.how = how
        super().__init__(how)


def client_context(device=None, alpn=(w.ALPN_V1,), tls_max=None, ca=None, verify=True):
    """An SSLContext as a device uses it: TLS 1.3 (or tls_max, to try an older one), the
    device's certificate (None: no client certificate), ALPN (None: no ALPN extension)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls_max is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = tls_max
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if verify:
        ctx.load_verify_locations(ca)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if device is not None:
        ctx.load_cert_chain(device.crt, device.key)
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class Client:
    """One TLS connection to a sealpushd speaking v1 frames built with spwire.

    Server frames are checked as they arrive: a frame type the server never sends, undefined
    flag bits, or bytes that are not a valid frame raise ServerProtocolError. A PING from the
    server is answered with PONG automatically (auto_pong) and not returned."""

    def __init__(self, daemon, device, *, alpn=(w.ALPN_V1,), tls_max=None, rcvbuf=None,
                 server_hostname="localhost", auto_pong=True, name=None):
        self.d = daemon
        self.device = device
        self.name = name or (device.name if device is not None else "nocert")
        self.alpn = alpn
        self.tls_max = tls_max
        self.rcvbuf = rcvbuf
        self.server_hostname = server_hostname
        self.auto_pong = auto_pong
        self.sock = None
        self.reader = None
        self.welcome = None
        self.send_errors = []
        self.server_pings = 0
        self.skipped = []
        if daemon is not None:
            daemon.h.track_client(self)

    def __repr__(self):
        return "<Client %s>" % self.name

    # connection
    def connect(self, timeout=10.0):
        """TCP + TLS handshake. Raises HandshakeRefused(how) if the TLS layer fails."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        raw.settimeout(timeout)
        raw.connect((LOOPBACK, self.d.port))
        ctx = client_context(self.device, self.alpn, self.tls_max, self.d.h.pki.ca_crt)
        s = ctx.wrap_socket(raw, server_hostname=self.server_hostname,
                            do_handshake_on_connect=False, suppress_ragged_eofs=False)
        self.sock = s
        try:
            s.do_handshake()
        except (ssl.SSLError, OSError) as e:
            how = w.classify_close(e)
            self.close()
            raise HandshakeRefused(how)
        self.reader = w.FrameReader(s)
        return self

    @property
    def alpn_selected(self):
        return self.sock.selected_alpn_protocol()

    @property
    def tls_version(self):
        return self.sock.version()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # sending
    def send(self, data):
        """Sends raw bytes. A failure to write (the server closed) is recorded in send_errors
        and returns False, so the test can go on to read what the server said."""
        try:
            self.sock.settimeout(10.0)
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError) as e:
            self.send_errors.append(e)
            return False

    def send_frame(self, ftype, fields=None, flags=0):
        return self.send(w.encode(ftype, fields, flags))

    def hello(self, version=1, flags=0, timeout=5.0, **fields):
        """HELLO, then expects WELCOME and checks it (token, consistency of the limits)."""
        fields.setdefault("agent", "sealpush-e2e/1")
        fields["version"] = version
        self.send_frame(w.HELLO, fields, flags)
        f = self.expect(w.WELCOME, timeout, what="WELCOME after HELLO")
        wf = f.fields
        if wf["version"] != 1:
            fail("%s: WELCOME version %d, want 1" % (self.name, wf["version"]))
        if self.device is not None and wf["token"] != self.device.token:
            fail("%s: WELCOME token %s, want %s (SHA-256 of the certificate's SPKI)" % (
                self.name, wf["token"].hex(), self.device.token.hex()))
        self.welcome = f
        return f

    def connect_hello(self, **kw):
        self.connect()
        return self.hello(**kw)

    def ping(self, data=b"\x01\x02\x03\x04\x05\x06\x07\x08", timeout=5.0):
        """PING, expects a PONG that echoes data."""
        self.send_frame(w.PING, {"data": data} if data is not None else {})
        f = self.expect(w.PONG, timeout, what="PONG")
        if f.get("data") != data:
            fail("%s: PONG data %r, want %r" % (self.name, f.get("data"), data))
        return f

    def send_msg(self, recipients, blob=b"sealed", msg_id=None, **fields):
        """A SEND; returns its msg_id (random unless given)."""
        mid = msg_id or os.urandom(16)
        fields.update({"msg_id": mid, "recipients": [r.token if isinstance(r, Device) else r
                                                     for r in recipients], "blob": blob})
        self.send_frame(w.SEND, fields)
        return mid

    def ack(self, msg_ids):
        self.send_frame(w.ACK, {"msg_ids": list(msg_ids)})

    # receiving
    def read(self, timeout=5.0):
        """The next frame from the server (see the class comment)."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.reader.read(max(0.0, deadline - time.monotonic()))
            if f.error is not None or f.type not in SERVER_SENDS:
                raise w.ServerProtocolError("%s: the server sent %r, which a server never "
                                            "sends" % (self.name, f))
            if f.undefined_flags:
                raise w.ServerProtocolError("%s: the server set undefined flag bits in %r" % (
                    self.name, f))
            if f.type == w.PING and self.auto_pong:
                self.server_pings += 1
                self.send_frame(w.PONG, {"data": f["data"]} if "data" in f else {})
                continue
            return f

    def expect(self, ftype, timeout=5.0, what=None, skip=()):
        """The next frame, which must be of type ftype (frames of a type in skip are kept in
        self.skipped). Fails with what came instead."""
        what = what or w.type_name(ftype)
        deadline = time.monotonic() + timeout
        self.skipped = []
        while True:
            try:
                f = self.read(max(0.0, deadline - time.monotonic()))
            except w.FrameTimeout:
                fail("%s: expected %s, got nothing within %.1fs" % (self.name, what, timeout))
            except w.Closed as e:
                fail("%s: expected %s, but the connection was closed (%s)" % (
                    self.name, what, e.how))
            if f.type in skip:
                self.skipped.append(f)
                continue
            if f.type != ftype:
                fail("%s: expected %s, got %r" % (self.name, what, f))
            return f

    def expect_error(self, code, closing=True, frame_type=None, msg_id=None, timeout=5.0,
                     what=None, skip=()):
        """An ERROR with exactly this code and CLOSING flag (and frame_type / msg_id fields
        when given)."""
        label = "ERROR %s%s" % (w.error_name(code), " (CLOSING)" if closing else "")
        f = self.expect(w.ERROR, timeout, what=what or label, skip=skip)
        problems = []
        if f["code"] != code:
            problems.append("code %d %s, want %d %s" % (f["code"], w.error_name(f["code"]),
                                                        code, w.error_name(code)))
        if bool(f.flags & w.CLOSING) != closing:
            problems.append("CLOSING flag %s, want %s" % (bool(f.flags & w.CLOSING), closing))
        if frame_type is not None and f.get("frame_type") != frame_type:
            problems.append("frame_type %r, want 0x%02x" % (f.get("frame_type"), frame_type))
        if msg_id is not None and f.get("msg_id") != msg_id:
            problems.append("msg_id %s, want %s" % (
                f.get("msg_id").hex() if f.get("msg_id") else None, msg_id.hex()))
        if problems:
            fail("%s: %s: %s in %r" % (self.name, label, "; ".join(problems), f))
        return f

    def expect_goaway(self, code, timeout=5.0):
        f = self.expect(w.GOAWAY, timeout, what="GOAWAY %s" % w.error_name(code))
        if f["code"] != code:
            fail("%s: GOAWAY code %d %s, want %d %s: %r" % (
                self.name, f["code"], w.error_name(f["code"]), code, w.error_name(code), f))
        return f

    def expect_nothing(self, duration=0.5, what="nothing"):
        """No frame (and no close) for duration seconds."""
        try:
            f = self.read(duration)
        except w.FrameTimeout:
            return
        except w.Closed as e:
            fail("%s: expected %s for %.1fs, but the connection was closed (%s)" % (
                self.name, what, duration, e.how))
        fail("%s: expected %s for %.1fs, got %r" % (self.name, what, duration, f))

    def expect_closed(self, timeout=5.0, allow=()):
        """Reads until the server ends the connection; any frame before that whose type is
        not in allow fails. Returns how it ended ("close_notify", "eof", "reset", ...)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.read(max(0.0, deadline - time.monotonic()))
            except w.FrameTimeout:
                fail("%s: expected the server to close the connection within %.1fs; it is "
                     "still open" % (self.name, timeout))
            except w.Closed as e:
                return e.how
            if f.type not in allow:
                fail("%s: expected the connection to be closed, got %r" % (self.name, f))

    def collect_results(self, expected, timeout=10.0, deliver_ok=False):
        """Reads SEND_RESULTs until every msg_id in expected ({msg_id: n_recipients}) has one
        status per recipient index. Returns {msg_id: {index: status}}; fails on a status
        given twice, an index out of range, an unknown msg_id, or a timeout. Other frames
        fail, except DELIVERs when deliver_ok (they are returned in .delivers)."""
        got = {m: {} for m in expected}
        self.delivers = []
        deadline = time.monotonic() + timeout
        while any(len(got[m]) < n for m, n in expected.items()):
            left = deadline - time.monotonic()
            try:
                f = self.read(max(0.0, left))
            except w.FrameTimeout:
                missing = {m.hex()[:8]: sorted(set(range(n)) - set(got[m]))
                           for m, n in expected.items() if len(got[m]) < n}
                fail("%s: SEND_RESULTs incomplete after %.1fs; still missing indexes %s; got "
                     "so far %s" % (self.name, timeout, missing, _fmt_results(got)))
            except w.Closed as e:
                fail("%s: connection closed (%s) while waiting for SEND_RESULTs; got %s" % (
                    self.name, e.how, _fmt_results(got)))
            if f.type == w.DELIVER and deliver_ok:
                self.delivers.append(f)
                continue
            if f.type != w.SEND_RESULT:
                fail("%s: expected SEND_RESULT, got %r" % (self.name, f))
            m = f["msg_id"]
            if m not in got:
                fail("%s: SEND_RESULT for an unknown msg_id: %r" % (self.name, f))
            for i, s in f["results"]:
                if i >= expected[m]:
                    fail("%s: SEND_RESULT index %d out of range (SEND had %d recipients): "
                         "%r" % (self.name, i, expected[m], f))
                if i in got[m]:
                    fail("%s: index %d got a second status (%s, then %s): %r" % (
                        self.name, i, w.status_name(got[m][i]), w.status_name(s), f))
                got[m][i] = s
            self.last_result = f
        return got


def _fmt_results(got):
    return {m.hex()[:8]: {i: w.status_name(s) for i, s in r.items()} for m, r in got.items()}


def try_refused(daemon, device, timeout=3.0, **client_kw):
    """Tries a connection that the server must refuse at the TLS layer. Returns how it was
    refused ("tls-alert: ...", "eof", "reset", "close_notify") and where ("handshake" or
    "first read"). Fails if the server sends a frame or answers HELLO."""
    c = Client(daemon, device, **client_kw)
    try:
        c.connect()
    except HandshakeRefused as e:
        return e.how, "handshake"
    # TLS 1.3: the client finishes its handshake before the server has checked the client's
    # certificate; the server's alert comes with the first read. Send nothing (so no RST
    # can overtake the alert), just read.
    try:
        f = c.read(timeout)
    except w.Closed as e:
        c.close()
        return e.how, "first read"
    except w.FrameTimeout:
        c.send_frame(w.HELLO, {"version": 1})
        try:
            f = c.read(timeout)
        except (w.Closed, w.FrameTimeout) as e:
            c.close()
            fail("the TLS handshake succeeded and the server kept the connection open for "
                 "%.1fs; after HELLO: %r" % (timeout, e))
        c.close()
        fail("the server accepted the connection: HELLO answered with %r" % f)
    c.close()
    fail("the server answered with a frame instead of refusing the handshake: %r" % f)


# --- the run ---

def cluster_port():
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        p = free_port()
        if p + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            continue


class Cluster:
    """Six redis-server nodes joined into a cluster with one replica per master."""

    def __init__(self, root, binary):
        self.dir = os.path.join(root, "cluster")
        self.binary = binary
        self.ports = []
        self.procs = []

    def cli(self, port, *args):
        r = subprocess.run(["redis-cli", "-p", str(port)] + [str(a) for a in args],
                           capture_output=True, timeout=20)
        return r.stdout.decode(errors="replace").strip()

    def start(self):
        for i in range(6):
            port = cluster_port()
            nd = os.path.join(self.dir, "n%d" % i)
            os.makedirs(nd, exist_ok=True)
            log = open(os.path.join(nd, "log"), "ab")
            self.procs.append(spawn(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file",
                 os.path.join(nd, "nodes.conf"), "--cluster-node-timeout", "1000",
                 "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
                 "--save", "", "--appendonly", "no", "--dir", nd],
                stdout=log, stderr=subprocess.STDOUT))
            log.close()
            self.ports.append(port)
        deadline = time.monotonic() + 15
        while not all(self.cli(p, "ping") == "PONG" for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster nodes do not answer PING: %s" % [
                    (p, self.cli(p, "ping")) for p in self.ports])
            time.sleep(0.1)
        r = subprocess.run(["redis-cli", "--cluster", "create"] +
                           ["127.0.0.1:%d" % p for p in self.ports] +
                           ["--cluster-replicas", "1", "--cluster-yes"],
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("redis-cli --cluster create: %s" % r.stdout.decode()[-2000:])
        self.wait_ok(30)
        return self

    def alive(self):
        return [p for p, pr in zip(self.ports, self.procs) if pr.poll() is None]

    def wait_ok(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.alive())
            synced = sum("state=online" in self.cli(p, "info", "replication")
                         for p in self.alive())
            if ok and synced >= len(self.alive()) // 2:
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster is not ok after %.0f s" % timeout)

    @property
    def url(self):
        return "redis-cluster://127.0.0.1:%d,127.0.0.1:%d" % (self.ports[0], self.ports[1])

    def master_of(self, key):
        """The port of the master that serves key."""
        slot = int(self.cli(self.alive()[0], "cluster", "keyslot", key))
        for p in self.alive():
            if self.cli(p, "role").splitlines()[0] != "master":
                continue
            for line in self.cli(p, "cluster", "nodes").splitlines():
                if "myself" not in line:
                    continue
                for rng in line.split()[8:]:
                    lo, _, hi = rng.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        return p
        return None

    def flush(self):
        """FLUSHALL on every live master: a test starts from nothing."""
        for p in self.alive():
            if self.cli(p, "role").splitlines()[:1] == ["master"]:
                self.cli(p, "flushall")

    def kill(self, port):
        pr = self.procs[self.ports.index(port)]
        pr.send_signal(signal.SIGKILL)
        pr.wait()

    def stop(self):
        for pr in self.procs:
            if pr.poll() is None:
                stop_process(pr, sig=signal.SIGKILL, timeout=5)


class Harness:
    """Per run: a temp dir, the PKI, a shared redis-server, and what the tests start."""

    def __init__(self, sealpushd, sealpush_ca, redis_server="redis-server", keep=False):
        self.sealpushd = sealpushd
        self.sealpush_ca = sealpush_ca
        self.redis_server = redis_server
        self.keep = keep
        self.root = None
        self.pki = None
        self.wrong = None
        self.redis = None
        self.clients = []
        self.daemons = []
        self.setup_notes = []

    def setup(self):
        base = os.environ.get("TMPDIR") or "/tmp"
        if len(base) > 60:  # unix socket paths are limited to about 100 bytes
            base = "/tmp"
        self.root = tempfile.mkdtemp(prefix="sp-e2e-", dir=base)
        if not self.keep:
            _temp_dirs.append(self.root)
        self.pki = PKI(os.path.join(self.root, "pki"), self.sealpush_ca).init()
        for name in ("alice", "bob", "carol", "dave"):
            self.pki.device(name)
        self.pki.device("old", "--backdate", "10", "--days", "1")  # expired 9 days ago
        self.pki.device("mallory")
        self.pki.revoke("mallory")
        self.wrong = PKI(os.path.join(self.root, "wrongca"), self.sealpush_ca).init(server=False)
        self.wrong.device("eve")
        self.redis = Redis(os.path.join(self.root, "redis"), self.redis_server).start()
        return self

    def new_redis(self, name, aof=False):
        return Redis(os.path.join(self.root, name), self.redis_server, aof=aof)

    def start_daemon(self, config=None, extra_args=(), name="sealpushd", flush=True):
        if flush and self.redis is not None and self.redis.running():
            self.redis.flush()  # a fresh queue for every daemon
        d = Daemon(self, config or {}, extra_args, name)
        self.daemons.append(d)
        d.start()
        return d

    def track_client(self, c):
        self.clients.append(c)

    def end_test(self):
        """Closes the clients and stops the daemons of one test. Returns the problems seen
        when stopping daemons (not exiting 0 within the grace, sanitizer reports)."""
        for c in self.clients:
            c.close()
        self.clients = []
        problems = []
        for d in self.daemons:
            if not d.stopped:
                d.stop(check=False)
                if d.exit_problem:
                    problems.append(d.exit_problem)
        return problems

    def forget_daemons(self):
        self.daemons = []

    def teardown(self):
        for c in self.clients:
            c.close()
        for d in self.daemons:
            d.kill()
        if self.redis is not None:
            self.redis.stop()
        kill_all_children()
        if self.root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
            if self.root in _temp_dirs:
                _temp_dirs.remove(self.root)


# --- the TAP runner both test files use ---

class TestTimeout(Exception):
    """A test ran past its time limit (SIGALRM)."""


def run_tap(h, tests, make_t, verbose=False, keep=False):
    """Runs tests (name, fn, timeout seconds) against harness h in order and prints TAP: one
    "ok"/"not ok" line each with the reason, the test's notes and, on failure, the end of each
    daemon's log. make_t(h) makes what a test gets (it needs .notes and .cleanups). Returns the
    exit status (0 if all passed)."""

    def on_alarm(signum, frame):
        raise TestTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    failed = n = 0
    t_start = time.monotonic()
    try:
        try:
            h.setup()
        except Exception as e:
            print("Bail out! setup failed: %s" % e)
            return 1
        if keep:
            print("# temp dir: %s" % h.root)
        for name, fn, timeout in tests:
            n += 1
            t = make_t(h)
            err = None
            t0 = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                fn(t)
            except TestFailure as e:
                err = str(e)
            except TestTimeout:
                err = "timed out after %ds" % timeout
            except w.ServerProtocolError as e:
                err = "protocol violation by the server: %s" % e
            except Exception:
                err = "exception:\n" + traceback.format_exc()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            for fn_cleanup in t.cleanups:
                try:
                    fn_cleanup()
                except Exception as e:
                    t.notes.append("cleanup: %r" % e)
            problems = h.end_test()
            if problems and err is None:
                err = "; ".join(problems)
            took = time.monotonic() - t0
            if err is None:
                print("ok %d - %s" % (n, name))
                if verbose:
                    for s in t.notes + ["%.2fs" % took]:
                        print("#   " + s)
            else:
                failed += 1
                print("not ok %d - %s" % (n, name))
                for s in err.splitlines() + t.notes + ["(%.2fs)" % took]:
                    print("#   " + s)
                # meson shows a failed test's stderr, not its TAP comments: the reason there too
                sys.stderr.write("not ok %d - %s\n" % (n, name))
                for s in err.splitlines() + t.notes:
                    sys.stderr.write("    " + s + "\n")
                for d in h.daemons:
                    lines = d.log().splitlines()
                    print("#   --- sealpushd log (%s), last %d of %d lines ---" % (
                        d.cfg_path, min(40, len(lines)), len(lines)))
                    for ln in lines[-40:]:
                        print("#   | " + ln)
            h.forget_daemons()
            sys.stdout.flush()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        h.teardown()
    print("1..%d" % n)
    print("# %d of %d tests passed in %.1fs" % (n - failed, n, time.monotonic() - t_start))
    return 1 if failed else 0


def test_registry(default_timeout=90):
    """(tests, test): a list and a decorator, @test(name, timeout=...), that appends
    (name, fn, timeout) to it in definition order, as run_tap takes them."""
    tests = []

    def test(name, timeout=default_timeout):
        def deco(fn):
            tests.append((name, fn, timeout))
            return fn
        return deco
    return tests, test


def cli_args(doc):
    """The arguments of a test script that drives the sealpush binaries: --sealpushd,
    --sealpush-ca, --sealpush (default $SEALPUSHD, $SEALPUSH_CA, $SEALPUSH), --redis-server
    (default $REDIS_SERVER or redis-server), -k PATTERN, --keep, -v."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--sealpushd", default=os.environ.get("SEALPUSHD"))
    ap.add_argument("--sealpush-ca", default=os.environ.get("SEALPUSH_CA"))
    ap.add_argument("--sealpush", default=os.environ.get("SEALPUSH"))
    ap.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER", "redis-server"))
    ap.add_argument("-k", dest="pattern")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args()


def cli_main(args, tests, make_t, tools=("openssl",)):
    """Runs the tests whose name contains args.pattern (cli_args) with run_tap on a fresh
    Harness; prints a TAP skip and returns 0 when redis-server or one of tools is missing.
    Returns the exit status."""
    tests = [x for x in tests if not args.pattern or args.pattern in x[0]]
    for tool in (args.redis_server,) + tuple(tools):
        if not shutil.which(tool):
            print("1..0 # SKIP %s not found" % tool)
            return 0
    h = Harness(args.sealpushd, args.sealpush_ca, args.redis_server, keep=args.keep)
    return run_tap(h, tests, make_t, verbose=args.verbose, keep=args.keep)
