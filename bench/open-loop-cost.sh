#!/bin/bash
# bench/open-loop-cost.sh BUILD RATE [sealpushd options]: one open-loop run (100 pairs,
# --threads 2) against a fresh relay of BUILD; prints latency, and relay and bench CPU per
# delivered message: utime+stime from /proc over WIN [4] s inside the measured window, divided
# by the relay's DELIVERs (sealpush_frames_sent_total) in the same window.
# Environment: BENCH [BUILD's sealpush-bench; give one binary to compare relays]
#   CA_DIR [/tmp/cost/ca] (made if missing) REDIS_DIR [/tmp/cost/redis] PORT [47543] DUR [6]
#   DURING [none]: a command run with the relay's pid at the start of the window (perf stat,
#   perf record); WIN then counts from its end
set -u
BUILD=$1; RATE=$2; shift 2; EXTRA="$*"
CA=${CA_DIR:-/tmp/cost/ca}; PORT=${PORT:-47543}; R=${REDIS_DIR:-/tmp/cost/redis}
BENCH=${BENCH:-$BUILD/bench/sealpush-bench}
mkdir -p $R
if [ ! -f $CA/ca.crt ]; then
  $BUILD/tools/sealpush-ca init $CA >/dev/null && $BUILD/tools/sealpush-ca server $CA --name localhost --ip 127.0.0.1 >/dev/null
fi
[ -S $R/sock ] || { redis-server --port 0 --unixsocket $R/sock --save '' --appendonly no --daemonize yes --pidfile $R/pid --logfile $R/log --dir $R; sleep 0.5; }
mkdir -p /tmp/cost; : > /tmp/cost/d.log
$BUILD/server/sealpushd --listen 127.0.0.1:$PORT --tls-cert $CA/server.crt --tls-key $CA/server.key \
  --client-ca $CA/ca.crt --crl $CA/crl.pem --redis unix://$R/sock --admin-listen 127.0.0.1:$((PORT+1)) \
  --max-connections 20000 --workers 2 --hello-timeout 300s --keepalive 3600 --keepalive-max 3600 --send-rate 0 --log-level warn $EXTRA 2>>/tmp/cost/d.log &
DPID=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$((PORT+1))/readyz >/dev/null && break; sleep 0.1; done
J=/tmp/cost/out.$$.json
$BENCH throughput --server 127.0.0.1:$PORT --ca-dir $CA --json --quiet --pairs 100 --duration ${DUR:-6} --warmup 2 --rate $RATE --threads 2 > $J 2>/tmp/cost/b.err &
BPID=$!
sleep 3.5   # 2 s warmup + connect
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
ucpu() { awk '{print $14}' /proc/$1/stat; }
r0=$(cpu $DPID); u0=$(ucpu $DPID); b0=$(cpu $BPID); t0=$(date +%s.%N)
m0=$(curl -s http://127.0.0.1:$((PORT+1))/metrics | awk '/^sealpush_frames_sent_total\{type="DELIVER"\}/{print $2}')
${DURING:-true} $DPID
sleep ${WIN:-4}
r1=$(cpu $DPID); u1=$(ucpu $DPID); b1=$(cpu $BPID); t1=$(date +%s.%N)
m1=$(curl -s http://127.0.0.1:$((PORT+1))/metrics | awk '/^sealpush_frames_sent_total\{type="DELIVER"\}/{print $2}')
wait $BPID
kill -TERM $DPID; wait $DPID 2>/dev/null; sleep 0.3
U0=$u0 U1=$u1 python3 - "$J" $r0 $r1 $b0 $b1 $t0 $t1 "$m0" "$m1" <<'PY'
import json,sys,os
j,r0,r1,b0,b1,t0,t1,m0,m1=sys.argv[1:]
d=json.load(open(j)); res=d["results"]
hz=os.sysconf('SC_CLK_TCK')
n=float(m1)-float(m0) if m0 and m1 else None
lat=res.get("latency",{})
dt=float(t1)-float(t0)
print("relay_user_us=%.2f " % ((int(os.environ["U1"])-int(os.environ["U0"]))/hz/n*1e6), end="")
print("rate=%s delivered=%s p50=%.3f p99=%.3f p999=%.3f relay_us=%.2f bench_us=%.2f relay_core=%.2f bench_core=%.2f load=%s" % (
 d["params"].get("rate"), int(n) if n else None, lat.get("p50",0), lat.get("p99",0), lat.get("p99.9",0),
 (int(r1)-int(r0))/hz/n*1e6, (int(b1)-int(b0))/hz/n*1e6, (int(r1)-int(r0))/hz/dt, (int(b1)-int(b0))/hz/dt,
 d.get("environment",{}).get("loadavg1", d.get("environment"))))
PY
