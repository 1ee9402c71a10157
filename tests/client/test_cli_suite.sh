#!/usr/bin/env bash
# tests/client/test_cli_suite.sh: the sealpush CLI and the sealing suites (TAP), without a relay:
# `sealpush init` makes a sealing key file of the right format, `card` a v1 or v2 card,
# `verify-card` accepts both, and `send --suite` picks, refuses or forces a suite before it
# connects (the relay address is a closed port, so a sealed message ends in exit 69, unreachable).
#
#   test_cli_suite.sh SEALPUSH SEALPUSH_CA PQ    (PQ: 1 if the build has MLKEM768-X25519)
set -u
cli=${1:?usage: test_cli_suite.sh SEALPUSH SEALPUSH_CA PQ}
ca=${2:?}
pq=${3:?}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sealpush-cli-suite.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$tmp/err" 2>/dev/null | head -5; }
check() { # check DESC CMD...
	local d=$1
	shift
	if "$@" >"$tmp/out" 2>"$tmp/err"; then ok "$d"; else notok "$d"; fi
}
expect_rc() { # expect_rc DESC RC CMD...
	local d=$1 want=$2 rc=0
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
	if [ "$rc" = "$want" ]; then ok "$d (exit $rc)"; else echo "# exit $rc, want $want" >>"$tmp/err"; notok "$d"; fi
}

"$ca" init "$tmp/ca" >/dev/null 2>&1 && "$ca" device "$tmp/ca" alice >/dev/null 2>&1 &&
	"$ca" device "$tmp/ca" bob >/dev/null 2>&1 || { echo "Bail out! sealpush-ca failed"; exit 1; }
A=(--server 127.0.0.1:1 --ca "$tmp/ca/ca.crt" --cert "$tmp/ca/alice.crt" --key "$tmp/ca/alice.key" --connect-timeout 2)
B=(--server 127.0.0.1:1 --ca "$tmp/ca/ca.crt" --cert "$tmp/ca/bob.crt" --key "$tmp/ca/bob.key")

check "init alice" "$cli" "${A[@]}" init
if [ "$pq" = 1 ]; then
	check "alice's sealing key file is v2 (SEALPUSH SEALING KEY)" grep -q '^-----BEGIN SEALPUSH SEALING KEY-----$' "$tmp/ca/alice.seal.key"
else
	check "alice's sealing key file is v1 (PKCS#8)" grep -q '^-----BEGIN PRIVATE KEY-----$' "$tmp/ca/alice.seal.key"
fi
check "alice's card" "$cli" "${A[@]}" card
cp "$tmp/out" "$tmp/alice.card"
if [ "$pq" = 1 ]; then
	check "the card is v2, MLKEM768-X25519 first, then X25519" \
		grep -q '"seal":\[{"pub":"[^"]*","suite":"MLKEM768-X25519-SHA256-ChaCha20Poly1305"},{"pub":"[^"]*","suite":"X25519-SHA256-ChaCha20Poly1305"}\]' "$tmp/alice.card"
	check "and says \"v\":2" grep -q '"v":2' "$tmp/alice.card"
else
	check "the card is v1 with X25519" grep -q '"v":1' "$tmp/alice.card"
fi
check "verify-card accepts it" "$cli" verify-card "$tmp/alice.card"
check "bob inits" "$cli" "${B[@]}" init
# The card survives no edit of its suite list.
sed 's/"MLKEM768-X25519-SHA256-ChaCha20Poly1305"/"X25519-SHA256-AES128GCM"/' "$tmp/alice.card" >"$tmp/edited.card"
if [ "$pq" = 1 ]; then
	expect_rc "an edited suite list fails verification" 65 "$cli" verify-card "$tmp/edited.card"
fi

send() { "$cli" "${B[@]}" --connect-timeout 2 send --to "$tmp/alice.card" --message hi --timeout 3 "$@"; }
expect_rc "send: the card's own choice seals, then finds no relay" 69 send
expect_rc "send --suite X25519-SHA256-ChaCha20Poly1305 seals" 69 send --suite X25519-SHA256-ChaCha20Poly1305
expect_rc "send --suite of a suite the card does not list is a usage error" 64 send --suite X25519-SHA256-AES128GCM
expect_rc "send --suite ROT13 is a usage error" 64 send --suite ROT13
expect_rc "send --suite with --raw is a usage error" 64 "$cli" "${B[@]}" send --raw --to "$(printf '%064d' 0)" --message x --suite X25519-SHA256-ChaCha20Poly1305
if [ "$pq" = 1 ]; then
	expect_rc "send --suite MLKEM768-X25519-SHA256-ChaCha20Poly1305 seals" 69 send --suite MLKEM768-X25519-SHA256-ChaCha20Poly1305
else
	expect_rc "send --suite MLKEM768-X25519-SHA256-ChaCha20Poly1305: not in this build" 70 send --suite MLKEM768-X25519-SHA256-ChaCha20Poly1305
fi
echo "1..$n"
[ "$fails" = 0 ]
