#!/bin/bash
# /tmp/ab/ab.sh: before/after relay figures, alternated, one bench binary (after's) for both.
set -u
B=/tmp/ab/after/bench/sealpush-bench
CA=/tmp/ab/ca
PORT=47443
R=/tmp/ab/redis
mkdir -p $R
if [ ! -f $CA/ca.crt ]; then
  /tmp/ab/after/tools/sealpush-ca init $CA >/dev/null && /tmp/ab/after/tools/sealpush-ca server $CA --name localhost --ip 127.0.0.1 >/dev/null
fi
redis-server --port 0 --unixsocket $R/sock --save '' --appendonly no --daemonize yes --pidfile $R/pid --logfile $R/log --dir $R
sleep 0.5
start() { # start BUILD
  : > /tmp/ab/d.log
  $1/server/sealpushd --listen 127.0.0.1:$PORT --tls-cert $CA/server.crt --tls-key $CA/server.key \
    --client-ca $CA/ca.crt --crl $CA/crl.pem --redis unix://$R/sock --admin-listen 127.0.0.1:$((PORT+1)) \
    --max-connections 20000 --workers 2 --hello-timeout 300s --keepalive 3600 --keepalive-max 3600 2>>/tmp/ab/d.log &
  DPID=$!
  for i in $(seq 100); do grep -q event=ready /tmp/ab/d.log && break; sleep 0.1; done
  sleep 0.5
}
stop() { kill -TERM $DPID; wait $DPID 2>/dev/null; redis-cli -s $R/sock flushall >/dev/null; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"]; print(eval(sys.argv[2]))' "$@"; }
O="--server 127.0.0.1:$PORT --ca-dir $CA --json --quiet"
for run in 1 2 3; do
  for which in before after; do
    D=/tmp/ab/$which
    J=/tmp/ab/out.$which.$run
    start $D
    $B throughput $O --pairs 100 --duration 8 --warmup 2 > $J.tput.json 2>$J.tput.err
    $B throughput $O --pairs 100 --duration 6 --warmup 1 --rate 50000 --threads 2 > $J.lat.json 2>$J.lat.err
    $B handshake $O --conns 32 --duration 6 --warmup 1 > $J.hs.json 2>$J.hs.err
    $B handshake $O --conns 32 --duration 6 --warmup 1 --resume > $J.hsr.json 2>$J.hsr.err
    stop; start $D
    $B idle $O --conns 15000 --processes 4 --pid $DPID --settle 10 --connect-timeout 600 > $J.idle.json 2>$J.idle.err
    stop
    echo "$which $run done $(date +%T)"
  done
done
redis-cli -s $R/sock shutdown nosave >/dev/null 2>&1
