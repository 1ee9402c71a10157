#!/usr/bin/env python3
"""test_compose: checks deploy/compose.yaml for the promises its header makes (Redis with AOF
on a volume and no published port, on an internal network; the admin endpoint published on
loopback only; the relay read-only, without capabilities, given time to drain), and has
docker-compose validate it where docker-compose is installed. Prints TAP; skips without PyYAML.

    test_compose.py deploy/compose.yaml deploy/sealpushd.example.json
"""
import json
import os
import shutil
import subprocess
import sys

n = failed = 0


def case(ok, desc, detail=""):
    global n, failed
    n += 1
    failed += not ok
    print("%s %d - %s" % ("ok" if ok else "not ok", n, desc))
    if not ok and detail:
        for line in str(detail).splitlines()[:20]:
            print("#   " + line)


def seconds(v):
    v = str(v)
    for suffix, mul in (("ms", 0.001), ("s", 1), ("m", 60)):
        if v.endswith(suffix):
            return float(v[:-len(suffix)]) * mul
    return float(v)


def main():
    path, example = sys.argv[1], sys.argv[2]
    try:
        import yaml
    except ImportError:
        print("1..0 # SKIP PyYAML is not installed (apt-get install python3-yaml)")
        return 0
    c = yaml.safe_load(open(path))
    svc = c.get("services", {})
    relay, redis = svc.get("sealpushd", {}), svc.get("redis", {})
    case(relay and redis, "two services: sealpushd and redis", list(svc))

    rcmd = [str(x) for x in redis.get("command", [])]
    opt = {rcmd[i]: rcmd[i + 1] for i in range(1, len(rcmd) - 1) if rcmd[i].startswith("--")}
    case(opt.get("--appendonly") == "yes" and opt.get("--appendfsync") in ("everysec", "always"),
         "redis: AOF on, fsync everysec or always", rcmd)
    case(opt.get("--maxmemory-policy") == "noeviction", "redis: noeviction", rcmd)
    vols = redis.get("volumes", [])
    named = [v.split(":")[0] for v in vols if isinstance(v, str) and v.endswith(":/data")]
    case(named and named[0] in (c.get("volumes") or {}), "redis: /data on a named volume", vols)
    case("ports" not in redis and "network_mode" not in redis, "redis: no published port", redis)
    nets = c.get("networks") or {}
    rnets = redis.get("networks", [])
    case(rnets and all((nets.get(x) or {}).get("internal") is True for x in rnets),
         "redis: only on internal networks", (rnets, nets))

    ports = [str(p) for p in relay.get("ports", [])]
    admin = [p for p in ports if p.endswith(":9090")]
    case(admin and all(p.startswith("127.0.0.1:") for p in admin),
         "relay: the admin port is published on 127.0.0.1 only", ports)
    case(any(p in ("7443:7443", "0.0.0.0:7443:7443") for p in ports),
         "relay: the device port 7443 is published", ports)
    cmd = [str(x) for x in relay.get("command", [])]
    flags = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("-")}
    case(flags.get("-c") == "/etc/sealpush/sealpushd.json"
         and flags.get("--redis") == "redis://redis:6379"
         and flags.get("--admin-listen", "").endswith(":9090"),
         "relay: config file, Redis by service name, admin on 9090", cmd)
    rvols = [str(v) for v in relay.get("volumes", [])]
    case(len(rvols) >= 2 and all(v.endswith(":ro") for v in rvols)
         and any(":/etc/sealpush/pki:" in v for v in rvols)
         and any(":/etc/sealpush/sealpushd.json:" in v for v in rvols),
         "relay: config and PKI mounted read-only", rvols)
    case(relay.get("read_only") is True and relay.get("cap_drop") == ["ALL"]
         and "no-new-privileges:true" in relay.get("security_opt", []),
         "relay: read-only root, no capabilities, no-new-privileges", relay)
    grace = seconds(json.load(open(example))["shutdown_grace"])
    stop = seconds(relay.get("stop_grace_period", "10s"))
    case(relay.get("stop_signal", "SIGTERM") == "SIGTERM" and stop > grace + 3,
         "relay: SIGTERM and stop_grace_period (%gs) > shutdown_grace (%gs) + 3 s"
         % (stop, grace))
    case((relay.get("depends_on") or {}).get("redis", {}).get("condition") == "service_healthy",
         "relay: starts once redis is healthy", relay.get("depends_on"))
    nofile = ((relay.get("ulimits") or {}).get("nofile") or {})
    case(int(nofile.get("soft", 0)) >= 65536, "relay: nofile raised", nofile)

    dc = shutil.which("docker-compose")
    if dc:
        env = dict(os.environ, SEALPUSH_PKI="/nonexistent/relay-pki")
        p = subprocess.run([dc, "-p", "sealpush", "-f", path, "config", "-q"], env=env,
                           capture_output=True, text=True)
        case(p.returncode == 0, "docker-compose config accepts the file", p.stderr)
        env.pop("SEALPUSH_PKI")
        p = subprocess.run([dc, "-p", "sealpush", "-f", path, "config", "-q"], env=env,
                           capture_output=True, text=True)
        case(p.returncode != 0 and "SEALPUSH_PKI" in p.stderr,
             "without SEALPUSH_PKI, docker-compose refuses with a message naming it", p.stderr)
    else:
        print("ok %d - docker-compose config # SKIP docker-compose is not installed" % (n + 1))
        globals()["n"] += 1
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
