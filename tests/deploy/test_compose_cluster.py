#!/usr/bin/env python3
"""test_compose_cluster: checks deploy/compose.cluster.yaml for what its header promises: six
Redis nodes with cluster mode, each announcing its service name, none published, only on an
internal network; a one-shot join with one replica per master naming all six; three relays
with cluster on, seeds that are Redis services of the file, wait_replicas 1, distinct device
ports, admin endpoints on loopback only, given time to drain. Prints TAP; skips without PyYAML.

    test_compose_cluster.py deploy/compose.cluster.yaml
"""
import shlex
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


def args(cmd):
    return shlex.split(cmd) if isinstance(cmd, str) else [str(x) for x in cmd]


def opt(argv, name):
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def main():
    try:
        import yaml
    except ImportError:
        print("1..0 # SKIP PyYAML is not installed (apt-get install python3-yaml)")
        return 0
    c = yaml.safe_load(open(sys.argv[1]))
    svc = c.get("services", {})
    nets = c.get("networks") or {}
    redis = {k: v for k, v in svc.items() if k.startswith("redis-")}
    relays = {k: v for k, v in svc.items() if k.startswith("relay-")}
    case(len(redis) == 6, "six Redis nodes", list(redis))
    case(len(relays) == 3, "three relays", list(relays))
    for name, r in sorted(redis.items()):
        a = args(r.get("command", []))
        case(opt(a, "--cluster-enabled") == "yes" and opt(a, "--cluster-announce-hostname") == name
             and opt(a, "--cluster-preferred-endpoint-type") == "hostname",
             "%s: cluster mode, announces its own service name" % name, a)
        case(opt(a, "--appendonly") == "yes" and opt(a, "--maxmemory-policy") == "noeviction",
             "%s: AOF on, noeviction" % name, a)
        case("ports" not in r and all((nets.get(x) or {}).get("internal") is True
                                      for x in r.get("networks", [])) and r.get("networks"),
             "%s: no published port, internal networks only" % name, r)
        case(any(v.endswith(":/data") for v in r.get("volumes", [])), "%s: /data on a volume" % name)
    init = svc.get("cluster-init", {})
    cmd = " ".join(args(init.get("command", [])))
    case("--cluster create" in cmd and "--cluster-replicas 1" in cmd and
         all("%s:6379" % k in cmd for k in redis), "cluster-init joins all six, one replica each",
         cmd)
    case(set((init.get("depends_on") or {})) == set(redis), "cluster-init waits for every node",
         init.get("depends_on"))
    ports = []
    for name, r in sorted(relays.items()):
        a = args(r.get("command", []))
        url = opt(a, "--redis") or ""
        seeds = url[len("redis-cluster://"):].split(",") if url.startswith("redis-cluster://") else []
        case(seeds and all(s.split(":")[0] in redis for s in seeds),
             "%s: redis-cluster:// seeds are nodes of this file" % name, url)
        case("--cluster" in a and opt(a, "--wait-replicas") == "1" and opt(a, "--node-name") == name,
             "%s: cluster on, wait_replicas 1, named after its service" % name, a)
        pub = [str(p) for p in r.get("ports", [])]
        dev = [p for p in pub if p.endswith(":7443") and not p.startswith("127.")]
        adm = [p for p in pub if p.endswith(":9090")]
        case(len(dev) == 1 and adm and all(p.startswith("127.0.0.1:") for p in adm),
             "%s: one device port, admin on loopback only" % name, pub)
        ports += dev
        dep = (r.get("depends_on") or {}).get("cluster-init", {})
        case(dep.get("condition") == "service_completed_successfully",
             "%s: starts after the cluster is joined" % name, r.get("depends_on"))
        grace = str(r.get("stop_grace_period", "0s"))
        case(r.get("stop_signal") == "SIGTERM" and grace.endswith("s") and float(grace[:-1]) >= 13,
             "%s: SIGTERM with time to drain" % name, (r.get("stop_signal"), grace))
    case(len(set(p.split(":")[0] for p in ports)) == 3, "distinct device ports", ports)
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
