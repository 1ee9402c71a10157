#!/bin/bash
# bench/idle/run.sh: daemon RSS per idle mTLS connection.
#
# Starts sealpushd, reads its RSS (baseline), opens N idle connections spread over PROCS
# idle_conns processes, waits until sealpush_connections{state="ready"} reaches N, reads the
# RSS (after), waits SETTLE seconds and reads it again (settled); optionally asks the daemon
# for malloc statistics and a malloc_trim(0) through the memctl shim; then stops everything.
# Also prints the kernel's TCP buffer memory and slab before/after (not part of the RSS; the
# slab delta covers both ends of each loopback connection).
# Prints one line per run and, with RUNS > 1, the median of KiB per connection (settled).
#
# Prerequisites (see FINDINGS.md): a release build in BUILD, the client built into CLIENT,
# a CA in CA_DIR with device certificates s0..s9 (SEND_ONLY runs) or r0..r<N-1> (receivers).
#
# Everything is set through the environment (defaults in brackets):
#   N [15000]  PROCS [4]  RATE [250, per client process, connections/s]  INFLIGHT [64 per process]
#   SEND_ONLY [1]  CERT_PREFIX [s if SEND_ONLY, else r]
#   CERTS [10 if SEND_ONLY (all processes share s0..s9), else N (distinct: process i uses
#          r<i*N/PROCS> onwards)]
#   CLIENT_OPTS [""] more idle_conns options, e.g. "-A" (send the leaf certificate only)
#   CA_DIR [/tmp/idle-ca]  BUILD [/tmp/idle-build]  CLIENT [/tmp/idle_conns]
#   PORT [47101] (admin port PORT+1)  WORKERS [2]  RUNS [1]  SETTLE [10] seconds
#   TRIM [0]    1 = malloc_trim(0) in the daemon after settling, then RSS again
#   MSTATS [0]  1 = mallinfo2() totals after settling (and after the trim); malloc_stats() per
#               arena goes to the daemon log
#   CTL [""]    more memctl commands after settling, separated by ';', e.g. "dump /tmp/o.txt"
#               (needs MEMCTL_TRACK=1 in DAEMON_ENV) or "info /tmp/mi.xml"
#               TRIM, MSTATS and CTL preload the shim (MEMCTL_SO [/tmp/memctl.so], built from
#               memctl.c) into the daemon: gdb cannot call functions in a process on this VM.
#   DAEMON_ENV [""] e.g. "MALLOC_ARENA_MAX=1" or "GLIBC_TUNABLES=glibc.malloc.arena_max=1"
#   OUT [/tmp/idle-run] logs: daemon.RUN.log, client.RUN.I.log
#   HOLD [0]    seconds to keep the connections up after the measurements (manual probing)
set -u
N=${N:-15000}
PROCS=${PROCS:-4}
RATE=${RATE:-250}
INFLIGHT=${INFLIGHT:-64}
SEND_ONLY=${SEND_ONLY:-1}
CA_DIR=${CA_DIR:-/tmp/idle-ca}
BUILD=${BUILD:-/tmp/idle-build}
CLIENT=${CLIENT:-/tmp/idle_conns}
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
OUT=${OUT:-/tmp/idle-run}
HOLD=${HOLD:-0}
CLIENT_OPTS=${CLIENT_OPTS:-}
if [ "$SEND_ONLY" = 1 ]; then
	CERT_PREFIX=${CERT_PREFIX:-s}
	CERTS=${CERTS:-10}
else
	CERT_PREFIX=${CERT_PREFIX:-r}
	CERTS=${CERTS:-$N}
fi
mkdir -p "$OUT"

DPID=
CPIDS=()
cleanup() {
	for p in "${CPIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${CPIDS[@]}"; do wait "$p" 2>/dev/null; done
	CPIDS=()
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
ready() {
	curl -s --max-time 5 "http://127.0.0.1:$APORT/metrics" |
		awk '/^sealpush_connections\{state="ready"\}/{print $2; f=1} END{if(!f) print 0}'
}
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
		--hello-timeout 300s --keepalive 3600 --keepalive-max 3600 2>>"$LOG" &
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
	before=$(rss $DPID); abefore=$(anon $DPID); smem0=$(sockmem); slab0=$(slab)
	inuse0=
	[ "$MSTATS" = 1 ] && inuse0=$(memctl stats | sed -n 's/.* inuse=\([0-9]*\).*/\1/p')
	t0=$(date +%s.%N)
	per=$((N / PROCS))
	for i in $(seq 0 $((PROCS - 1))); do
		n=$per; [ "$i" = $((PROCS - 1)) ] && n=$((N - per * (PROCS - 1)))
		if [ "$SEND_ONLY" = 1 ]; then first=0; k=$CERTS; so=-s; else first=$((i * per)); k=$n; so=; fi
		"$CLIENT" -p $PORT -d "$CA_DIR" -P "$CERT_PREFIX" -f $first -k $k -n $n -r "$RATE" \
			-m "$INFLIGHT" $so $CLIENT_OPTS -b 127.0.0.$((10 + i)) -i 5 2>"$OUT/client.$run.$i.log" &
		CPIDS+=($!)
	done
	ok=0
	for _ in $(seq 1 1200); do
		r=$(ready)
		[ "$r" -ge "$N" ] 2>/dev/null && { ok=1; break; }
		for p in "${CPIDS[@]}"; do
			kill -0 "$p" 2>/dev/null || { echo "a client died:"; tail -n 3 "$OUT"/client.$run.*.log; exit 1; }
		done
		sleep 0.5
	done
	[ $ok = 1 ] || { echo "timeout: ready=$(ready) of $N"; exit 1; }
	t1=$(date +%s.%N)
	after=$(rss $DPID)
	sleep "$SETTLE"
	settled=$(rss $DPID); asettled=$(anon $DPID); smem1=$(sockmem); slab1=$(slab)
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
		extra+=" | after trim: $g; rss=$trimmed KiB kib_per_conn=$(per_conn "$trimmed" "$before")"
	fi
	kib=$(per_conn "$settled" "$before")
	results+=("$kib")
	printf 'run %d: connections=%d rss_before=%d KiB rss_after=%d KiB rss_settled=%d KiB kib_per_conn=%s (at ready: %s) rss_anon %d->%d KiB connect_time=%.1fs kernel: tcp_mem %d->%d KiB, slab %d->%d KiB (%s KiB/conn)%s\n' \
		"$run" "$N" "$before" "$after" "$settled" "$kib" "$(per_conn "$after" "$before")" \
		"$abefore" "$asettled" "$(echo "$t1 - $t0" | bc)" "$smem0" "$smem1" "$slab0" "$slab1" \
		"$(per_conn "$slab1" "$slab0")" "$extra"
	if [ "$HOLD" -gt 0 ] 2>/dev/null; then echo "holding $HOLD s, daemon pid $DPID"; sleep "$HOLD"; fi
	cleanup
	sleep 2
done
if [ "$RUNS" -gt 1 ]; then
	printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END{printf "median kib_per_conn over %d runs: %s (all: ", NR, (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; for(i=1;i<=NR;i++) printf "%s%s", a[i], (i<NR)?" ":")\n"}'
fi
