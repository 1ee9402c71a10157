#!/bin/bash
# bench/handshake-groups.sh: full (or resumed) mutual-TLS handshakes per second and relay CPU
# per handshake, for each key-exchange group in KX_GROUPS, RUNS times each, interleaved (A B A B
# ...) so that a change of load hits both alike. The relay runs without Redis; its CPU comes
# from /proc over the middle MEASURE seconds of each bench run, divided by the growth of its
# sealpush_handshakes_total in them. Prints one line per run and the medians per group.
#
# Prerequisites: a release build in BUILD (bench/sealpush-bench, server/sealpushd,
# tools/sealpush-ca), curl; a CA is made in CA_DIR if missing.
# Environment [defaults]: KX_GROUPS ["X25519MLKEM768 X25519"] RUNS [3] RESUME [0] CONNS [32]
#   DURATION [6] BUILD [build/rel] CA_DIR [/tmp/hsg-ca] PORT [47561] (admin PORT+1)
#   WORKERS [2] OUT [/tmp/hsg-run] DAEMON_ARGS [] (more sealpushd options, e.g.
#   "--tls-session-cache 20000")
# The group is set on both sides (--tls-groups); the bench's JSON reports what it negotiated.
set -u
GROUPS_=${KX_GROUPS:-"X25519MLKEM768 X25519"}; RUNS=${RUNS:-3}; RESUME=${RESUME:-0}
CONNS=${CONNS:-32}; DURATION=${DURATION:-6}; BUILD=${BUILD:-build/rel}
CA=${CA_DIR:-/tmp/hsg-ca}; PORT=${PORT:-47561}; WORKERS=${WORKERS:-2}; OUT=${OUT:-/tmp/hsg-run}
mkdir -p "$OUT"
if [ ! -f "$CA/ca.crt" ]; then
	"$BUILD/tools/sealpush-ca" init "$CA" >/dev/null &&
		"$BUILD/tools/sealpush-ca" server "$CA" --name localhost --ip 127.0.0.1 >/dev/null ||
		exit 2
fi
metric() { curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk -v s="$1" '$1 == s {print $2}'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mode=full
[ "$RESUME" = 1 ] && mode=resumed
: >"$OUT/lines"
for run in $(seq "$RUNS"); do
	for g in $GROUPS_; do
		"$BUILD/server/sealpushd" --listen 127.0.0.1:$PORT --tls-cert "$CA/server.crt" \
			--tls-key "$CA/server.key" --client-ca "$CA/ca.crt" --crl "$CA/crl.pem" \
			--redis "" --admin-listen 127.0.0.1:$((PORT + 1)) --workers "$WORKERS" \
			--tls-groups "$g" --log-level warn ${DAEMON_ARGS:-} 2>"$OUT/daemon.log" &
		DPID=$!
		for i in $(seq 100); do
			curl -sf "http://127.0.0.1:$((PORT + 1))/healthz" >/dev/null && break
			sleep 0.1
		done
		J="$OUT/bench.$g.$run.json"
		extra=()
		[ "$RESUME" = 1 ] && extra=(--resume)
		"$BUILD/bench/sealpush-bench" handshake --server 127.0.0.1:$PORT --ca-dir "$CA" \
			--json --quiet --conns "$CONNS" --duration "$DURATION" --warmup 1 \
			--tls-groups "$g" "${extra[@]}" >"$J" 2>"$OUT/bench.err" &
		BP=$!
		sleep 2.5
		h0=$(metric sealpush_handshakes_total); c0=$(cpu $DPID); t0=$(date +%s.%N)
		sleep $((DURATION - 3)).5
		h1=$(metric sealpush_handshakes_total); c1=$(cpu $DPID); t1=$(date +%s.%N)
		wait $BP
		kill -TERM $DPID
		wait $DPID 2>/dev/null
		python3 - "$J" "$g" "$h0" "$h1" "$c0" "$c1" "$t0" "$t1" "$mode" <<'PY' | tee -a "$OUT/lines"
import json, os, sys
j, g, h0, h1, c0, c1, t0, t1, mode = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK")
try:
    r = json.load(open(j)).get("results", {})
except Exception:
    r = {}
n = float(h1 or 0) - float(h0 or 0)
ms = (int(c1) - int(c0)) / hz / n * 1e3 if n > 0 else float("nan")
print("%s %s: %.0f handshakes/s (relay count over %.1f s), relay CPU %.3f ms per handshake, "
      "bench says %s/s with %s; load %.1f" % (
          g, mode, n / (float(t1) - float(t0)), float(t1) - float(t0), ms,
          (r.get("per_second") or {}).get("median", "?"),
          json.dumps(r.get("tls_groups")), os.getloadavg()[0]))
PY
		sleep 0.3
	done
done
python3 - "$OUT/lines" $GROUPS_ <<'PY'
import re, statistics, sys
lines = open(sys.argv[1]).read().splitlines()
for g in sys.argv[2:]:
    rate = [float(re.search(r": (\d+) handshakes/s", l).group(1)) for l in lines if l.startswith(g + " ")]
    cpu = [float(re.search(r"CPU ([\d.na]+) ms", l).group(1)) for l in lines if l.startswith(g + " ")]
    if rate:
        print("median %s: %.0f handshakes/s, relay CPU %.3f ms per handshake (%d runs)" % (
            g, statistics.median(rate), statistics.median(cpu), len(rate)))
PY
