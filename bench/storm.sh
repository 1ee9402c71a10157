#!/bin/bash
# bench/storm.sh: a reconnect storm. N devices connect at once (all their handshakes started
# together, over PROCS bench processes: the descriptor limit is per process) while P pairs of
# connected devices exchange RATE messages/s (open loop); reports the time until all N are
# READY (sealpush-bench idle: first connect to last WELCOME), the connected devices' latency
# over the storm (sealpush-bench throughput: its measured window starts with the storm and
# lasts WINDOW seconds), and the relay's admission counters and CPU over the storm.
#
# Prerequisites: a release build in BUILD (bench/sealpush-bench, server/sealpushd,
# tools/sealpush-ca) and redis-server on PATH; a CA is made in CA_DIR if missing.
# Environment [defaults]: N [15000] PROCS [4] PAIRS [50] RATE [2000] WINDOW [8] RUNS [1]
#   BUILD [build/rel] CA_DIR [/tmp/storm-ca] PORT [47201] (admin PORT+1) WORKERS [2]
#   RESUME [0] 1: the storm resumes sessions (not supported by idle yet: full handshakes)
#   DAEMON_OPTS [""] more sealpushd options, e.g. "--max-handshakes 0" (no admission limit)
#   OUT [/tmp/storm-run] logs and JSON of each run
set -u
N=${N:-15000}; PROCS=${PROCS:-4}; PAIRS=${PAIRS:-50}; RATE=${RATE:-2000}; WINDOW=${WINDOW:-8}
RUNS=${RUNS:-1}; BUILD=${BUILD:-build/rel}; CA=${CA_DIR:-/tmp/storm-ca}; PORT=${PORT:-47201}
WORKERS=${WORKERS:-2}; DAEMON_OPTS=${DAEMON_OPTS:-}; OUT=${OUT:-/tmp/storm-run}
B=$BUILD/bench/sealpush-bench
mkdir -p "$OUT/redis"
if [ ! -f "$CA/ca.crt" ]; then
	"$BUILD/tools/sealpush-ca" init "$CA" >/dev/null &&
		"$BUILD/tools/sealpush-ca" server "$CA" --name localhost --ip 127.0.0.1 >/dev/null
fi
redis-server --port 0 --unixsocket "$OUT/redis/sock" --save '' --appendonly no --daemonize yes \
	--pidfile "$OUT/redis/pid" --logfile "$OUT/redis/log" --dir "$OUT/redis"
sleep 0.5
metric() { curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk -v s="$1" '$1 == s {print $2}'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
O="--server 127.0.0.1:$PORT --ca-dir $CA --json --quiet"
for run in $(seq "$RUNS"); do
	"$BUILD/server/sealpushd" --listen 127.0.0.1:$PORT --tls-cert "$CA/server.crt" \
		--tls-key "$CA/server.key" --client-ca "$CA/ca.crt" --crl "$CA/crl.pem" \
		--redis "unix:$OUT/redis/sock" --admin-listen 127.0.0.1:$((PORT + 1)) \
		--workers "$WORKERS" --max-connections 20000 --hello-timeout 300s --keepalive 3600 \
		--keepalive-max 3600 --send-rate 0 --log-level warn $DAEMON_OPTS \
		2>"$OUT/daemon.$run.log" &
	DPID=$!
	for i in $(seq 100); do
		curl -sf "http://127.0.0.1:$((PORT + 1))/readyz" >/dev/null && break
		sleep 0.1
	done
	# The connected devices: 2 s to connect and warm up, then the measured window.
	$B throughput $O --pairs "$PAIRS" --rate "$RATE" --warmup 2 --duration "$WINDOW" \
		>"$OUT/conn.$run.json" 2>"$OUT/conn.$run.err" &
	TPID=$!
	sleep 2.5
	c0=$(cpu $DPID)
	$B idle $O --conns "$N" --processes "$PROCS" --inflight $((N / PROCS + 1)) \
		--connect-timeout 120 --settle 0 >"$OUT/storm.$run.json" 2>"$OUT/storm.$run.err"
	c1=$(cpu $DPID)
	wait $TPID
	echo "run $run: deferred $(metric sealpush_handshakes_deferred_total)" \
		"refused_wait $(metric 'sealpush_connections_refused_total{reason="handshake_wait"}')" \
		"hs_timeouts $(metric 'sealpush_handshake_failures_total{cause="timeout"}')" \
		"hs_ok $(metric sealpush_handshakes_total)" >"$OUT/relay.$run.txt"
	kill -TERM $DPID
	wait $DPID 2>/dev/null
	python3 - "$OUT" "$run" "$c0" "$c1" "$N" <<'PY'
import json, os, sys
out, run, c0, c1, n = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK")
st = json.load(open("%s/storm.%s.json" % (out, run)))["results"]
cn = json.load(open("%s/conn.%s.json" % (out, run)))["results"]
lat = cn["latency"]
st["ready"] = int(n) if st.get("connected") else round(st.get("connects_per_s", 0) * st.get("connect_s", 0))
print("run %s: %d of %s ready in %.2f s (%.0f/s); connected devices: p50 %.2f p99 %.2f p99.9 %.2f "
      "max %.2f ms, %d delivered, %d errors; relay CPU %.2f ms per handshake; %s" % (
      run, st.get("ready", 0), n, st.get("connect_s", 0), st.get("ready", 0) / max(st.get("connect_s", 1e-9), 1e-9),
      lat["p50"], lat["p99"], lat["p99.9"], lat["max"], cn["delivered"], cn["errors"],
      (int(c1) - int(c0)) / hz / max(st.get("ready", 1), 1) * 1e3,
      open("%s/relay.%s.txt" % (out, run)).read().strip()))
PY
	sleep 1
done
redis-cli -s "$OUT/redis/sock" shutdown nosave >/dev/null 2>&1
