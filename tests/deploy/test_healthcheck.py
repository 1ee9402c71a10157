#!/usr/bin/env python3
"""test_healthcheck: the real sealpush-healthcheck binary against small HTTP servers on
loopback (a good one, a 503 one, one that never answers, one that speaks no HTTP) and against
the real sealpushd admin endpoint when --sealpushd is given. Prints TAP.

    test_healthcheck.py --probe build/deploy/sealpush-healthcheck \
        [--sealpushd build/server/sealpushd --sealpush-ca build/tools/sealpush-ca]
"""
import argparse
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

n = 0
failed = 0


def case(ok, desc, detail=""):
    global n, failed
    n += 1
    if not ok:
        failed += 1
    print("%s %d - %s" % ("ok" if ok else "not ok", n, desc))
    if not ok and detail:
        for line in str(detail).splitlines()[:20]:
            print("#   " + line)


class Server:
    """One listening socket on 127.0.0.1 answering every connection with a fixed reply
    (or, for reply=None, reading the request and never answering)."""

    def __init__(self, reply):
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.held = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            c.settimeout(5)
            try:
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            self.requests.append(data)
            if self.reply is None:
                self.held.append(c)  # never answer, never close
                continue
            c.sendall(self.reply)
            c.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def probe(path, *args, timeout=30):
    t0 = time.monotonic()
    p = subprocess.run([path] + list(args), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def static_cases(exe):
    ok200 = Server(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nready\n")
    rc, out, err, _ = probe(exe, "http://127.0.0.1:%d/readyz" % ok200.port)
    case(rc == 0 and out == "200 ready\n", "200 answer: exit 0, prints the code and body",
         "rc=%d out=%r err=%r" % (rc, out, err))
    req = ok200.requests[-1] if ok200.requests else b""
    case(req.startswith(b"GET /readyz HTTP/1.0\r\n")
         and b"\r\nHost: 127.0.0.1:%d\r\n" % ok200.port in req,
         "sends GET PATH HTTP/1.0 with a Host header", repr(req))
    rc, _, _, _ = probe(exe, "http://127.0.0.1:%d" % ok200.port)
    case(rc == 0 and ok200.requests[-1].startswith(b"GET / HTTP/1.0"),
         "a URL without a path asks for /", repr(ok200.requests[-1:]))
    ok200.close()

    bad = Server(b"HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready: Redis is unreachable\n")
    rc, out, err, _ = probe(exe, "http://127.0.0.1:%d/readyz" % bad.port)
    case(rc == 1 and out == "503 not ready: Redis is unreachable\n",
         "503 answer: exit 1 and the reason is printed", "rc=%d out=%r" % (rc, out))
    bad.close()

    junk = Server(b"SSH-2.0-OpenSSH\r\n")
    rc, out, _, _ = probe(exe, "http://127.0.0.1:%d/" % junk.port)
    case(rc == 1 and "did not answer HTTP" in out, "a non-HTTP answer: exit 1",
         "rc=%d out=%r" % (rc, out))
    junk.close()

    port = free_port()
    rc, out, _, _ = probe(exe, "http://127.0.0.1:%d/healthz" % port)
    case(rc == 1 and "cannot connect" in out, "nothing listening: exit 1 (refused)",
         "rc=%d out=%r" % (rc, out))

    silent = Server(None)
    rc, out, _, took = probe(exe, "--timeout", "1", "http://127.0.0.1:%d/" % silent.port)
    case(rc == 1 and "no answer" in out and 0.8 < took < 4,
         "a server that never answers: exit 1 after --timeout",
         "rc=%d out=%r took=%.2fs" % (rc, out, took))
    silent.close()

    six = None
    try:
        s6 = socket.socket(socket.AF_INET6)
        s6.bind(("::1", 0))
        s6.close()
        six = True
    except OSError:
        pass
    if six:
        srv = socket.socket(socket.AF_INET6)
        srv.bind(("::1", 0))
        srv.listen(1)
        p6 = srv.getsockname()[1]

        def one():
            c, _ = srv.accept()
            c.recv(4096)
            c.sendall(b"HTTP/1.0 200 OK\r\n\r\nok\n")
            c.close()

        threading.Thread(target=one, daemon=True).start()
        rc, out, _, _ = probe(exe, "http://[::1]:%d/healthz" % p6)
        case(rc == 0 and out == "200 ok\n", "IPv6 literal in brackets", "rc=%d out=%r" % (rc, out))
        srv.close()
    else:
        print("ok %d - IPv6 literal in brackets # SKIP no ::1 here" % (n + 1))
        globals()["n"] += 1

    for bad_args, what in [
        ([], "no URL"),
        (["https://127.0.0.1:9090/"], "https URL"),
        (["http://127.0.0.1/readyz"], "no port"),
        (["http://127.0.0.1:99999/"], "port out of range"),
        (["http://127.0.0.1:9090/a b"], "space in the path"),
        (["--timeout", "0", "http://127.0.0.1:9090/"], "timeout 0"),
        (["--timeout", "x", "http://127.0.0.1:9090/"], "timeout not a number"),
        (["http://127.0.0.1:9090/", "http://127.0.0.1:9091/"], "two URLs"),
        (["--bogus"], "unknown option"),
    ]:
        rc, out, err, _ = probe(exe, *bad_args)
        case(rc == 2 and err.strip() != "", "bad usage (%s): exit 2 with a message" % what,
             "rc=%d out=%r err=%r" % (rc, out, err))
    rc, out, _, _ = probe(exe, "--help")
    case(rc == 0 and "usage:" in out, "--help: exit 0", out)


def daemon_cases(exe, sealpushd, sealpush_ca):
    import harness as h

    hx = h.Harness(sealpushd=sealpushd, sealpush_ca=sealpush_ca)
    hx.setup()
    try:
        d = hx.start_daemon({})
        url = "http://127.0.0.1:%d" % d.admin_port
        rc, out, _, _ = probe(exe, url + "/healthz")
        case(rc == 0 and out == "200 ok\n", "real sealpushd: /healthz is 200", out)
        rc, out, _, _ = probe(exe, url + "/readyz")
        case(rc == 0 and out == "200 ready\n", "real sealpushd: /readyz is 200", out)
        rc, out, _, _ = probe(exe, url + "/nope")
        case(rc == 1 and out.startswith("404"), "real sealpushd: an unknown path is 404, exit 1",
             out)
        hx.redis.stop()
        deadline = time.monotonic() + 10
        while True:
            rc, out, _, _ = probe(exe, url + "/readyz")
            if rc != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        case(rc == 1 and out == "503 not ready: Redis is unreachable\n",
             "real sealpushd: Redis down makes /readyz 503, exit 1, reason printed", out)
        d.stop()
    finally:
        hx.teardown()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--sealpushd")
    ap.add_argument("--sealpush-ca")
    a = ap.parse_args()
    static_cases(a.probe)
    if a.sealpushd and a.sealpush_ca:
        daemon_cases(a.probe, a.sealpushd, a.sealpush_ca)
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
