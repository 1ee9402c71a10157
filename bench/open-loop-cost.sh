#!/bin/bash
# /tmp/cost/run.sh BUILD RATE [EXTRA_DAEMON_OPTS]: one open-loop run; prints rate, latency, relay and bench CPU per delivered message
set -u
BUILD=$1; RATE=$2; shift 2; EXTRA="$*"
CA=/tmp/cost/ca; PORT=${PORT:-47543}; R=/tmp/cost/redis
BENCH=${BENCH:-/tmp/cost/before-build/bench/sealpush-bench}
mkdir -p $R
if [ ! -f $CA/ca.crt ]; then
  $BUILD/tools/sealpush-ca init $CA >/dev/null && $BUILD/tools/sealpush-ca server $CA --name localhost --ip 127.0.0.1 >/dev/null
fi
[ -S $R/sock ] || { redis-server --port 0 --unixsocket $R/sock --save '' --appendonly no --daemonize yes --pidfile $R/pid --logfile $R/log --dir $R; sleep 0.5; }
: > /tmp/cost/d.log
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
r0=$(cpu $DPID); b0=$(cpu $BPID); t0=$(date +%s.%N)
m0=$(curl -s http://127.0.0.1:$((PORT+1))/metrics | awk '/^sealpush_frames_sent_total\{type="DELIVER"\}/{print $2}')
${DURING:-true} $DPID
sleep ${WIN:-4}
r1=$(cpu $DPID); b1=$(cpu $BPID); t1=$(date +%s.%N)
m1=$(curl -s http://127.0.0.1:$((PORT+1))/metrics | awk '/^sealpush_frames_sent_total\{type="DELIVER"\}/{print $2}')
wait $BPID
kill -TERM $DPID; wait $DPID 2>/dev/null; sleep 0.3
python3 - "$J" $r0 $r1 $b0 $b1 $t0 $t1 "$m0" "$m1" <<'PY'
import json,sys,os
j,r0,r1,b0,b1,t0,t1,m0,m1=sys.argv[1:]
d=json.load(open(j)); res=d["results"]
hz=os.sysconf('SC_CLK_TCK')
n=float(m1)-float(m0) if m0 and m1 else None
lat=res.get("latency",{})
dt=float(t1)-float(t0)
print("rate=%s delivered=%s p50=%.3f p99=%.3f p999=%.3f relay_us=%.2f bench_us=%.2f relay_core=%.2f bench_core=%.2f load=%s" % (
 d["params"].get("rate"), int(n) if n else None, lat.get("p50",0), lat.get("p99",0), lat.get("p99.9",0),
 (int(r1)-int(r0))/hz/n*1e6, (int(b1)-int(b0))/hz/n*1e6, (int(r1)-int(r0))/hz/dt, (int(b1)-int(b0))/hz/dt,
 d.get("environment",{}).get("loadavg1", d.get("environment"))))
PY
