#!/usr/bin/env bash
# bench/ca-issue-cost.sh: what issuing and revoking one device costs as the PKI grows.
#
#   bench/ca-issue-cost.sh /path/to/sealpush-ca [N]
#
# Makes a new PKI in a temporary directory, issues N devices (10000 by default), and prints
# the mean wall time of `sealpush-ca device` over the first 100 and the last 100, then of
# `sealpush-ca revoke` for 20 devices at the end. Removes the directory at exit.
set -eu
ca=${1:?usage: ca-issue-cost.sh /path/to/sealpush-ca [N]}
n=${2:-10000}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ca-cost.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$ca" init "$tmp/pki" 2>/dev/null
now_ns() { date +%s%N; }
t_first=0
t_last=0
for i in $(seq 1 "$n"); do
	t0=$(now_ns)
	"$ca" device "$tmp/pki" "d$i" >/dev/null 2>&1
	t1=$(now_ns)
	if [ "$i" -le 100 ]; then t_first=$((t_first + t1 - t0)); fi
	if [ "$i" -gt $((n - 100)) ]; then t_last=$((t_last + t1 - t0)); fi
done
t_rev=0
for i in $(seq 1 20); do
	t0=$(now_ns)
	"$ca" revoke "$tmp/pki" "d$i" >/dev/null 2>&1
	t1=$(now_ns)
	t_rev=$((t_rev + t1 - t0))
done
echo "devices=$n first100_mean_ms=$((t_first / 100000000)).$(((t_first / 1000000) % 100)) last100_mean_ms=$((t_last / 100000000)).$(((t_last / 1000000) % 100)) revoke20_mean_ms=$((t_rev / 20000000))"
du -sh "$tmp/pki" | sed 's/^/pki_size=/'
