#!/usr/bin/env bash
# bench/ca-issue-cost.sh: what issuing and revoking one device costs as the PKI grows.
#
#   bench/ca-issue-cost.sh /path/to/sealpush-ca [N] [K]
#
# 1. Makes a PKI in a temporary directory and issues N devices (10000 by default) one by one,
#    printing the mean wall time of `sealpush-ca device` over the first 100 and the last 100.
# 2. Then, interleaved so that a loaded machine's drift hits both alike, K times each (50 by
#    default): one `device` (and later one `revoke`) in the big PKI, one in a fresh PKI with
#    a single device; prints both means and their ratio. Removes the directories at exit.
set -eu
ca=${1:?usage: ca-issue-cost.sh /path/to/sealpush-ca [N] [K]}
n=${2:-10000}
k=${3:-50}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ca-cost.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
now_ns() { date +%s%N; }
mean() { awk -v s="$1" -v k="$2" 'BEGIN { printf "%.1f", s / k / 1e6 }'; }

"$ca" init "$tmp/big" 2>/dev/null
"$ca" init "$tmp/small" 2>/dev/null
"$ca" device "$tmp/small" s0 >/dev/null 2>&1
t_first=0
t_last=0
for i in $(seq 1 "$n"); do
	t0=$(now_ns)
	"$ca" device "$tmp/big" "d$i" >/dev/null 2>&1
	t1=$(now_ns)
	if [ "$i" -le 100 ]; then t_first=$((t_first + t1 - t0)); fi
	if [ "$i" -gt $((n - 100)) ]; then t_last=$((t_last + t1 - t0)); fi
done
echo "sequential: devices=$n first100_mean_ms=$(mean "$t_first" 100)" \
	"last100_mean_ms=$(mean "$t_last" 100)"

# run_one PKI ARGS...: prints the wall time of one sealpush-ca run in ns.
run_one() {
	local t0 t1
	t0=$(now_ns)
	"$ca" "$@" >/dev/null 2>&1
	t1=$(now_ns)
	echo $((t1 - t0))
}
ib=0 is=0 rb=0 rs=0
for i in $(seq 1 "$k"); do
	ib=$((ib + $(run_one device "$tmp/big" "x$i")))
	is=$((is + $(run_one device "$tmp/small" "x$i")))
done
for i in $(seq 1 "$k"); do
	rb=$((rb + $(run_one revoke "$tmp/big" "x$i")))
	rs=$((rs + $(run_one revoke "$tmp/small" "x$i")))
done
echo "interleaved ($k each): device_ms big=$(mean "$ib" "$k") small=$(mean "$is" "$k")" \
	"ratio=$(awk -v a="$ib" -v b="$is" 'BEGIN { printf "%.2f", a / b }')" \
	"revoke_ms big=$(mean "$rb" "$k") small=$(mean "$rs" "$k")" \
	"ratio=$(awk -v a="$rb" -v b="$rs" 'BEGIN { printf "%.2f", a / b }')"
du -sh "$tmp/big" | sed 's/^/big_pki_size=/'
