#!/bin/bash
# bench/sealed-sender.sh: sealed-sender (anonymous door, access keys checked in Redis for
# every recipient) against identified sending, same relay, same pairs, interleaved runs:
# delivered/s and latency of `sealpush-bench throughput` with and without --anonymous.
#
# Prerequisites: a release build in BUILD (bench/sealpush-bench, server/sealpushd,
# tools/sealpush-ca), redis-server and curl on PATH; a CA is made in CA_DIR if missing.
# Environment [defaults]: RUNS [3] PAIRS [100] WINDOW [16] RATE [""] (open loop if set)
#   DURATION [6] BUILD [build/rel] CA_DIR [/tmp/sealed-ca] PORT [47581] (anonymous door
#   PORT+2, admin PORT+1) WORKERS [2] THREADS [2] OUT [/tmp/sealed-run]
#   DAEMON_ARGS [""]: more sealpushd options, e.g. "--anon-cache-ttl 0" (the recipient cache
#   off: one Redis script per anonymous recipient)
set -u
RUNS=${RUNS:-3}; PAIRS=${PAIRS:-100}; WINDOW=${WINDOW:-16}; RATE=${RATE:-}
DURATION=${DURATION:-6}; BUILD=${BUILD:-build/rel}; CA=${CA_DIR:-/tmp/sealed-ca}
PORT=${PORT:-47581}; WORKERS=${WORKERS:-2}; THREADS=${THREADS:-2}; OUT=${OUT:-/tmp/sealed-run}
read -r -a DARGS <<<"${DAEMON_ARGS:-}"
mkdir -p "$OUT/redis"
if [ ! -f "$CA/ca.crt" ]; then
	"$BUILD/tools/sealpush-ca" init "$CA" >/dev/null &&
		"$BUILD/tools/sealpush-ca" server "$CA" --name localhost --ip 127.0.0.1 >/dev/null ||
		exit 2
fi
redis-server --port 0 --unixsocket "$OUT/redis/sock" --save '' --appendonly no --daemonize yes \
	--pidfile "$OUT/redis/pid" --logfile "$OUT/redis/log" --dir "$OUT/redis" || exit 2
trap 'kill "$(cat "$OUT/redis/pid")" 2>/dev/null' EXIT
sleep 0.5
"$BUILD/server/sealpushd" --listen 127.0.0.1:$PORT --anon-listen 127.0.0.1:$((PORT + 2)) \
	--tls-cert "$CA/server.crt" --tls-key "$CA/server.key" --client-ca "$CA/ca.crt" \
	--crl "$CA/crl.pem" --redis "unix:$OUT/redis/sock" --admin-listen 127.0.0.1:$((PORT + 1)) \
	--workers "$WORKERS" --send-rate 0 --anon-key-rate 0 --anon-recipient-rate 0 \
	--log-level warn "${DARGS[@]}" 2>"$OUT/daemon.log" &
DPID=$!
trap 'kill "$DPID" 2>/dev/null; kill "$(cat "$OUT/redis/pid")" 2>/dev/null' EXIT
for i in $(seq 100); do
	curl -sf "http://127.0.0.1:$((PORT + 1))/healthz" >/dev/null && break
	sleep 0.1
done
# utime + stime of the relay, in clock ticks (fields 14 and 15 of /proc/PID/stat)
relay_cpu() { awk '{ print $14 + $15 }' "/proc/$DPID/stat"; }
load=()
[ -n "$RATE" ] && load=(--rate "$RATE")
: >"$OUT/lines"
for run in $(seq "$RUNS"); do
	for mode in identified anonymous; do
		if [ $mode = anonymous ]; then
			srv=(--server 127.0.0.1:$((PORT + 2)) --server 127.0.0.1:$PORT --anonymous)
		else
			srv=(--server 127.0.0.1:$PORT)
		fi
		J="$OUT/$mode.$run.json"
		cpu0=$(relay_cpu)
		"$BUILD/bench/sealpush-bench" throughput "${srv[@]}" --ca-dir "$CA" --json --quiet \
			--pairs "$PAIRS" --window "$WINDOW" --duration "$DURATION" --warmup 1 \
			--threads "$THREADS" "${load[@]}" >"$J" 2>"$OUT/bench.err"
		rc=$?
		cpu1=$(relay_cpu)
		python3 - "$J" "$mode" "$rc" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" <<'PY' | tee -a "$OUT/lines"
import json, os, sys
j, mode, rc, c0, c1, hz = sys.argv[1:]
try:
    d = json.load(open(j))
    r = d.get("results", {})
except Exception:
    r = {}
ps = r.get("per_second") or {}
lat = r.get("latency_ms") or r.get("latency") or {}
# relay CPU over the whole run (warm-up and hand-shakes included) per delivered message
n = r.get("delivered") or 0
us = "%.2f" % ((int(c1) - int(c0)) / int(hz) * 1e6 / n) if n else "?"
print("%s: %s delivered/s (median second), latency p50 %s p99 %s ms, relay CPU %s us/msg, "
      "exit %s; load %.1f" % (mode, ps.get("median", "?"), lat.get("p50", "?"),
                              lat.get("p99", "?"), us, rc, os.getloadavg()[0]))
PY
	done
done
curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | grep '^sealpush_anon_\(cache\|flushes\)' >"$OUT/metrics"
python3 - "$OUT/lines" <<'PY'
import re, statistics, sys
lines = open(sys.argv[1]).read().splitlines()
med = {}
for m in ("identified", "anonymous"):
    v = [float(re.search(r": ([\d.]+) delivered", l).group(1)) for l in lines
         if l.startswith(m + ":") and re.search(r": ([\d.]+) delivered", l)]
    if v:
        med[m] = statistics.median(v)
        c = [float(x) for l in lines if l.startswith(m + ":")
             for x in re.findall(r"relay CPU ([\d.]+) us", l)]
        print("median %s: %.0f delivered/s (%d runs), relay CPU %s us/msg" % (
            m, med[m], len(v), "%.2f" % statistics.median(c) if c else "?"))
if len(med) == 2:
    print("anonymous / identified: %.2f" % (med["anonymous"] / med["identified"]))
PY
