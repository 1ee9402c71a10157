#!/bin/bash
# bench/idle/run.sh: daemon RSS per idle mTLS connection, with the extras sealpush-bench does
# not do (malloc statistics, malloc_trim, kernel socket memory).
#
# Starts sealpushd, then runs `sealpush-bench idle --pid DAEMON`: the bench reads the daemon's
# VmRSS before connecting, opens N idle connections spread over PROCS processes, waits until all
# are READY, reads VmRSS again after SETTLE seconds and reports KiB per connection; it then holds
# the connections while this script reads the kernel's TCP buffer memory and slab (not part of
# the RSS; the slab delta covers both ends of each loopback connection) and, optionally, asks
# the daemon for malloc statistics and a malloc_trim(0) through the memctl shim; then stops
# everything. Prints one line per run and, with RUNS > 1, the median of KiB per connection.
#
# Prerequisites: a release build in BUILD (it has bench/sealpush-bench and server/sealpushd), a
# CA in CA_DIR (sealpush-ca init + server); the bench issues the device identities it lacks
# (bench-s0.. for SEND_ONLY runs, bench-r0..r<N-1> for receivers) with sealpush-ca.
#
# Everything is set through the environment (defaults in brackets):
#   N [15000]  PROCS [4] bench processes  INFLIGHT [64] handshakes in progress per process
#   SEND_ONLY [1]  1: SEND_ONLY connections sharing CERTS identities; 0: receivers, one
#               identity each (sealpush-bench idle --register)
#   CERTS [10]  identities shared by SEND_ONLY connections
#   BENCH_OPTS [""] more sealpush-bench options, e.g. "--send-chain" (clients that send the CA
#               certificate too), "--tls-ciphersuites TLS_CHACHA20_POLY1305_SHA256",
#               "--tls-groups P-256"
#   CA_DIR [/tmp/idle-ca]  BUILD [/tmp/idle-build]  BENCH [$BUILD/bench/sealpush-bench]
#   PORT [47101] (admin port PORT+1)  WORKERS [2]  RUNS [1]  SETTLE [10] seconds
#   TRIM [0]    1 = malloc_trim(0) in the daemon after settling, then RSS again
#   MSTATS [0]  1 = mallinfo2() totals after settling (and after the trim); malloc_stats() per
#               arena goes to the daemon log
#   CTL [""]    more memctl commands after settling, separated by ';', e.g. "dump /tmp/o.txt"
#               (needs MEMCTL_TRACK=1 in DAEMON_ENV) or "info /tmp/mi.xml"
#               TRIM, MSTATS and CTL preload the shim (MEMCTL_SO [/tmp/memctl.so], built from
#               memctl.c) into the daemon: gdb cannot call functions in a process on this VM.
#   DAEMON_ENV [""] e.g. "MALLOC_ARENA_MAX=1" or "GLIBC_TUNABLES=glibc.malloc.arena_max=1"
#   DAEMON_OPTS [""] more sealpushd options, e.g. "--tls-session-cache 20480"
#   OUT [/tmp/idle-run] logs: daemon.RUN.log, bench.RUN.log, bench.RUN.json
#   HOLD [0]    seconds to keep the connections up after the measurements (manual probing)
set -u
N=${N:-15000}
PROCS=${PROCS:-4}
INFLIGHT=${INFLIGHT:-64}
SEND_ONLY=${SEND_ONLY:-1}
CERTS=${CERTS:-10}
CA_DIR=${CA_DIR:-/tmp/idle-ca}
BUILD=${BUILD:-/tmp/idle-build}
BENCH=${BENCH:-$BUILD/bench/sealpush-bench}
PORT=${PORT:-47101}
APORT=$((PORT + 1))
WORKERS=${WORKERS:-2}
RUNS=${RUNS:-1}
SETTLE=${SETTLE:-10}
TRIM=${TRIM:-0}
MSTATS=${MSTATS:-0}
CTL=${CTL:-}
MEMCTL_SO=${MEMCTL_SO:-/tmp/memctl.so}
DAEMON_ENV=${DAEMON_ENV:-}
DAEMON_OPTS=${DAEMON_OPTS:-}
OUT=${OUT:-/tmp/idle-run}
HOLD=${HOLD:-0}
BENCH_OPTS=${BENCH_OPTS:-}
if [ "$SEND_ONLY" = 1 ]; then who="--devices $CERTS"; else who=--register; fi
mkdir -p "$OUT"

DPID=
BPID=
cleanup() {
	if [ -n "$BPID" ]; then
		kill -TERM "$BPID" 2>/dev/null
		wait "$BPID" 2>/dev/null
		BPID=
	fi
	if [ -n "$DPID" ]; then
		kill -TERM "$DPID" 2>/dev/null
		for _ in $(seq 1 150); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$DPID" 2>/dev/null
		wait "$DPID" 2>/dev/null
		DPID=
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
anon() { awk '/^RssAnon:/{print $2}' "/proc/$1/status"; }
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][sys.argv[2]])' "$@"; }
# Kernel TCP buffer memory (KiB) and slab (KiB): not part of the daemon's RSS.
sockmem() { awk '/^TCP:/{for(i=1;i<NF;i++) if($i=="mem") print $(i+1)*4}' /proc/net/sockstat; }
slab() { awk '/^Slab:/{print $2}' /proc/meminfo; }
memctl() { # memctl COMMAND: runs a command in the daemon through the memctl shim
	rm -f "$OUT/ctl.out"
	echo "$1" >"$OUT/ctl.cmd.tmp" && mv "$OUT/ctl.cmd.tmp" "$OUT/ctl.cmd"
	for _ in $(seq 1 300); do [ -f "$OUT/ctl.out" ] && break; sleep 0.1; done
	cat "$OUT/ctl.out" 2>/dev/null || echo "memctl: no answer"
}
per_conn() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN{printf "%.2f", (a-b)/n}'; }

results=()
for run in $(seq 1 "$RUNS"); do
	LOG=$OUT/daemon.$run.log
	: >"$LOG"
	preload=
	if [ "$TRIM" = 1 ] || [ "$MSTATS" = 1 ] || [ -n "$CTL" ]; then
		rm -f "$OUT/ctl.cmd" "$OUT/ctl.out"
		preload="LD_PRELOAD=$MEMCTL_SO MEMCTL=$OUT/ctl"
	fi
	# shellcheck disable=SC2086
	env $preload $DAEMON_ENV "$BUILD/server/sealpushd" --listen 127.0.0.1:$PORT \
		--tls-cert "$CA_DIR/server.crt" --tls-key "$CA_DIR/server.key" \
		--client-ca "$CA_DIR/ca.crt" --crl "$CA_DIR/crl.pem" --redis "" \
		--admin-listen 127.0.0.1:$APORT --max-connections 20000 --workers "$WORKERS" \
		--hello-timeout 300s --keepalive 3600 --keepalive-max 3600 $DAEMON_OPTS 2>>"$LOG" &
	DPID=$!
	up=0
	for i in $(seq 1 600); do
		if grep -q 'event=ready' "$LOG"; then up=1; break; fi
		if ! kill -0 "$DPID" 2>/dev/null; then echo "daemon exited (check $i)"; break; fi
		sleep 0.1
	done
	if [ $up = 0 ]; then
		echo "daemon not ready after $i checks (pid $DPID):"; cat "$LOG"; ls -l "/proc/$DPID/exe"
		kill -KILL "$DPID"; wait "$DPID"; DPID=; exit 1
	fi
	sleep 1
	rbefore=$(rss $DPID); abefore=$(anon $DPID); smem0=$(sockmem); slab0=$(slab)
	inuse0=
	[ "$MSTATS" = 1 ] && inuse0=$(memctl stats | sed -n 's/.* inuse=\([0-9]*\).*/\1/p')
	# The bench holds the connections after its RSS reading while the extras run below.
	extra_s=$((3 + HOLD)); [ "$MSTATS" = 1 ] && extra_s=$((extra_s + 10))
	[ "$TRIM" = 1 ] && extra_s=$((extra_s + 10)); [ -n "$CTL" ] && extra_s=$((extra_s + 60))
	BLOG=$OUT/bench.$run.log BJSON=$OUT/bench.$run.json
	: >"$BLOG"
	# shellcheck disable=SC2086
	"$BENCH" idle --server 127.0.0.1:$PORT --ca-dir "$CA_DIR" --conns "$N" --processes "$PROCS" \
		--inflight "$INFLIGHT" $who --pid "$DPID" --settle "$SETTLE" --hold "$extra_s" \
		--connect-timeout 600 --json $BENCH_OPTS >"$BJSON" 2>"$BLOG" &
	BPID=$!
	while ! grep -q 'holding' "$BLOG"; do
		kill -0 "$BPID" 2>/dev/null || { echo "the bench ended early:"; tail -n 5 "$BLOG"; exit 1; }
		sleep 0.2
	done
	asettled=$(anon $DPID); smem1=$(sockmem); slab1=$(slab)
	extra=
	if [ "$MSTATS" = 1 ]; then
		echo "=== malloc_stats after settling (run $run) ===" >>"$LOG"
		m=$(memctl stats)
		inuse1=$(echo "$m" | sed -n 's/.* inuse=\([0-9]*\).*/\1/p')
		extra+=" | malloc in use: $inuse0 -> $inuse1 B, $(awk -v a="$inuse1" -v b="$inuse0" -v n="$N" 'BEGIN{printf "%.2f", (a-b)/n/1024}') KiB/conn | mallinfo2 after: $m"
	fi
	if [ -n "$CTL" ]; then
		IFS=';' read -r -a cmds <<<"$CTL"
		for c in "${cmds[@]}"; do extra+=" | $c: $(memctl "$c")"; done
	fi
	if [ "$TRIM" = 1 ]; then
		[ "$MSTATS" = 1 ] && echo "=== malloc_stats after trim (run $run) ===" >>"$LOG"
		g=$(memctl trim)
		[ "$MSTATS" = 1 ] && memctl stats >/dev/null
		sleep 1
		trimmed=$(rss $DPID)
		extra+=" | after trim: $g; rss=$trimmed KiB kib_per_conn=$(per_conn "$trimmed" "$rbefore")"
	fi
	[ "$HOLD" -gt 0 ] 2>/dev/null && echo "holding $HOLD s, daemon pid $DPID"
	wait "$BPID"; brc=$?; BPID=
	[ $brc = 0 ] || { echo "sealpush-bench exited $brc:"; tail -n 5 "$BLOG"; exit 1; }
	before=$(jget "$BJSON" rss_before_kib); after=$(jget "$BJSON" rss_ready_kib)
	settled=$(jget "$BJSON" rss_settled_kib); kib=$(jget "$BJSON" kib_per_conn)
	kib=$(printf '%.2f' "$kib")
	results+=("$kib")
	printf 'run %d: connections=%d rss_before=%d KiB rss_after=%d KiB rss_settled=%d KiB kib_per_conn=%s (at ready: %s) rss_anon %d->%d KiB connect_time=%.1fs kernel: tcp_mem %d->%d KiB, slab %d->%d KiB (%s KiB/conn)%s\n' \
		"$run" "$N" "$before" "$after" "$settled" "$kib" "$(per_conn "$after" "$before")" \
		"$abefore" "$asettled" "$(jget "$BJSON" connect_s)" "$smem0" "$smem1" "$slab0" "$slab1" \
		"$(per_conn "$slab1" "$slab0")" "$extra"
	cleanup
	sleep 2
done
if [ "$RUNS" -gt 1 ]; then
	printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END{printf "median kib_per_conn over %d runs: %s (all: ", NR, (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; for(i=1;i<=NR;i++) printf "%s%s", a[i], (i<NR)?" ":")\n"}'
fi
