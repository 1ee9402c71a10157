#!/bin/bash
# bench/cluster-bench.sh BUILD [RUNS]: same-node against cross-node throughput and latency on
# two relays with `cluster` on, sharing one Redis (a unix socket) or, with REDIS_URL set, a
# Redis Cluster. Prints one line per run; the figures in bench/RESULTS.md came from it.
#   BUILD  a meson build folder (release: meson setup /tmp/rel -Dbuildtype=release)
# MODES="same cross" (default) or one of them; CLOSED=0 skips the closed loop; WRAP="chrt -f 10"
# runs Redis, the relays and the bench under that command (to see what the scheduler adds).
set -u
BUILD=${1:?usage: cluster-bench.sh BUILD [RUNS]}
RUNS=${2:-3}
W=$(mktemp -d /tmp/sp-cbench.XXXXXX)
B=$BUILD/bench/sealpush-bench
CA=$W/ca
P1=${P1:-48443} P2=${P2:-48453}
cleanup() { kill $D1 $D2 2>/dev/null; wait 2>/dev/null; [ -z "${REDIS_URL:-}" ] && redis-cli -s $W/sock shutdown nosave >/dev/null 2>&1; rm -rf $W; }
trap cleanup EXIT
trap "exit 1" INT TERM
$BUILD/tools/sealpush-ca init $CA >/dev/null && $BUILD/tools/sealpush-ca server $CA --name localhost --ip 127.0.0.1 >/dev/null
if [ -z "${REDIS_URL:-}" ]; then
  ${WRAP:-} redis-server --port 0 --unixsocket $W/sock --save '' --appendonly no --daemonize yes --pidfile $W/rpid --logfile $W/rlog --dir $W
  sleep 0.5
  URL=unix://$W/sock
else
  URL=$REDIS_URL
fi
relay() { # PORT LOG
  ${WRAP:-} $BUILD/server/sealpushd --listen 127.0.0.1:$1 --tls-cert $CA/server.crt --tls-key $CA/server.key \
    --client-ca $CA/ca.crt --crl $CA/crl.pem --redis $URL --admin-listen 127.0.0.1:$(($1+1)) \
    --cluster --workers 1 --hello-timeout 300s --keepalive 3600 --keepalive-max 3600 2>>$2 &
}
up() { # fresh relays on an empty Redis for every measurement
  kill $D1 $D2 2>/dev/null; wait $D1 $D2 2>/dev/null
  [ -z "${REDIS_URL:-}" ] && redis-cli -s $W/sock flushall >/dev/null
  : > $W/d1.log; : > $W/d2.log
  relay $P1 $W/d1.log; D1=$!
  relay $P2 $W/d2.log; D2=$!
  for i in $(seq 100); do grep -q event=ready $W/d1.log && grep -q event=ready $W/d2.log && break; sleep 0.1; done
  sleep 2 # the leases: each relay sees the other
  kill -0 $D1 $D2 || { cat $W/d1.log $W/d2.log; exit 1; }
}
D1= D2=
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"]; print(eval(sys.argv[2]))' "$@"; }
O="--ca-dir $CA --json --quiet"
for run in $(seq $RUNS); do
  for mode in ${MODES:-same cross}; do
    S="--server 127.0.0.1:$P1"; [ $mode = cross ] && S="$S --server 127.0.0.1:$P2"
    if [ "${CLOSED:-1}" != 0 ]; then
      up
      ${WRAP:-} $B throughput $S $O --pairs 100 --duration 6 --warmup 2 > $W/t.json 2>$W/t.err || { cat $W/t.err; continue; }
    else
      echo '{"results": {"delivered_per_s": 0}}' > $W/t.json
    fi
    up
    ${WRAP:-} $B throughput $S $O --pairs 100 --duration 6 --warmup 1 --rate ${RATE:-10000} > $W/l.json 2>$W/l.err || { cat $W/l.err; continue; }
    [ -n "${SHOW_JSON:-}" ] && cat $W/t.json $W/l.json
    echo "run=$run mode=$mode closed_loop_per_s=$(jget $W/t.json 'round(r["delivered_per_s"])') " \
         "open_p50_ms=$(jget $W/l.json 'r["latency"]["p50"]') p99_ms=$(jget $W/l.json 'r["latency"]["p99"]')"
  done
done
