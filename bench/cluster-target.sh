#!/bin/bash
# bench/cluster-target.sh BUILD [RUNS]: issue 14's targets on three relays (cluster on, one
# worker each) over a six-node Redis Cluster (three masters, three replicas), all on this
# machine. Per run: the closed-loop maximum same-relay (senders and receivers on relay 1) and
# cross-relay (senders on relay 1, receivers on relay 2), then open loop at half the
# cross-relay maximum, same and cross, for p99; and the CPU split (relays, Redis, bench) over
# the cross-relay closed loop. Prints one line per measurement and the medians at the end.
#   BUILD  a meson build folder (release: meson setup /tmp/rel -Dbuildtype=release)
# Environment: PAIRS [100] DUR [6] RPORT [47100] (six Redis ports from it) P [48463]
set -u
BUILD=${1:?usage: cluster-target.sh BUILD [RUNS]}
RUNS=${2:-3}
PAIRS=${PAIRS:-100} DUR=${DUR:-6} RPORT=${RPORT:-47100} P=${P:-48463}
W=$(mktemp -d /tmp/sp-ctarget.XXXXXX)
B=$BUILD/bench/sealpush-bench
CA=$W/ca
RP=() D=()
cleanup() {
  kill ${D[@]} 2>/dev/null; wait ${D[@]} 2>/dev/null
  for p in "${RP[@]}"; do redis-cli -p $p shutdown nosave >/dev/null 2>&1; done
  rm -rf $W
}
trap cleanup EXIT
trap "exit 1" INT TERM
$BUILD/tools/sealpush-ca init $CA >/dev/null 2>&1 && $BUILD/tools/sealpush-ca server $CA --name localhost --ip 127.0.0.1 >/dev/null 2>&1
for i in 0 1 2 3 4 5; do
  p=$((RPORT + i)); RP+=($p); mkdir -p $W/r$p
  redis-server --port $p --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file $W/r$p/nodes.conf \
    --cluster-node-timeout 1000 --save '' --appendonly no --dir $W/r$p --daemonize yes --logfile $W/r$p/log
done
for p in "${RP[@]}"; do until redis-cli -p $p ping >/dev/null 2>&1; do sleep 0.1; done; done
redis-cli --cluster create $(for p in "${RP[@]}"; do echo 127.0.0.1:$p; done) --cluster-replicas 1 --cluster-yes >/dev/null
until redis-cli -p $RPORT cluster info | grep -q cluster_state:ok; do sleep 0.2; done
sleep 2
URL=redis-cluster://127.0.0.1:$RPORT,127.0.0.1:$((RPORT + 1)),127.0.0.1:$((RPORT + 2))
relay() { # PORT
  $BUILD/server/sealpushd --listen 127.0.0.1:$1 --tls-cert $CA/server.crt --tls-key $CA/server.key \
    --client-ca $CA/ca.crt --crl $CA/crl.pem --redis $URL --admin-listen 127.0.0.1:$(($1 + 1)) \
    --cluster --workers 1 --hello-timeout 300s --keepalive 3600 --keepalive-max 3600 \
    --send-rate 0 --log-level warn 2>>$W/d$1.log &
  D+=($!)
}
up() { # fresh relays on an empty cluster for every measurement
  kill ${D[@]} 2>/dev/null; wait ${D[@]} 2>/dev/null; D=()
  for p in "${RP[@]}"; do redis-cli -p $p flushall >/dev/null 2>&1; done
  relay $P; relay $((P + 10)); relay $((P + 20))
  for port in $P $((P + 10)) $((P + 20)); do
    for i in $(seq 100); do curl -sf http://127.0.0.1:$((port + 1))/readyz >/dev/null && break; sleep 0.1; done
  done
  sleep 1
}
cpu() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"]; print(eval(sys.argv[2]))' "$@"; }
O="--ca-dir $CA --json --quiet --pairs $PAIRS --duration $DUR"
S1="--server 127.0.0.1:$P"; S2="$S1 --server 127.0.0.1:$((P + 10))"
: > $W/lines
for run in $(seq $RUNS); do
  up; $B throughput $S1 $O --warmup 2 > $W/s.json 2>$W/err || { cat $W/err; exit 1; }
  same=$(jget $W/s.json 'round(r["delivered_per_s"])')
  up
  $B throughput $S2 $O --warmup 2 > $W/c.json 2>$W/err &
  BP=$!; sleep $((2 + 2))
  rpids=$(for p in "${RP[@]}"; do pgrep -f "redis-server 127.0.0.1:$p"; done)
  c0=(); for pid in ${D[@]} $BP; do c0+=($(cpu $pid)); done; r0=0; for pid in $rpids; do r0=$((r0 + $(cpu $pid))); done
  sleep 3
  c1=(); for pid in ${D[@]} $BP; do c1+=($(cpu $pid)); done; r1=0; for pid in $rpids; do r1=$((r1 + $(cpu $pid))); done
  wait $BP || { cat $W/err; exit 1; }
  cross=$(jget $W/c.json 'round(r["delivered_per_s"])')
  split="relayA=$(( (c1[0]-c0[0]) / 3 ))% relayB=$(( (c1[1]-c0[1]) / 3 ))% relayC=$(( (c1[2]-c0[2]) / 3 ))% redis=$(( (r1-r0) / 3 ))% bench=$(( (c1[3]-c0[3]) / 3 ))%"
  rate=$((cross / 2))
  up; $B throughput $S1 $O --warmup 1 --rate $rate > $W/ls.json 2>$W/err || { cat $W/err; exit 1; }
  up; $B throughput $S2 $O --warmup 1 --rate $rate > $W/lc.json 2>$W/err || { cat $W/err; exit 1; }
  p99s=$(jget $W/ls.json 'r["latency"]["p99"]'); p99c=$(jget $W/lc.json 'r["latency"]["p99"]')
  dls=$(jget $W/ls.json 'round(r["delivered_per_s"])'); dlc=$(jget $W/lc.json 'round(r["delivered_per_s"])')
  echo "run=$run same_max=$same cross_max=$cross ratio=$(python3 -c "print(round($cross/$same,3))") rate=$rate same_p99_ms=$p99s cross_p99_ms=$p99c (delivered/s $dls $dlc) cpu_cross_closed: $split load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a $W/lines
done
python3 - $W/lines <<'PY'
import re,sys,statistics as st
rows=[dict(re.findall(r"(\w+)=([\d.]+)", l)) for l in open(sys.argv[1])]
for k in ("same_max","cross_max","ratio","same_p99_ms","cross_p99_ms"):
    print("median %s=%s" % (k, st.median(float(r[k]) for r in rows)))
print("median p99 cross/same=%.2f" % st.median(float(r["cross_p99_ms"])/float(r["same_p99_ms"]) for r in rows))
PY
