#!/usr/bin/env bash
# tests/deploy/test_systemd_unit.sh: checks deploy/sealpushd.service with systemd-analyze verify
# (on a temporary copy whose ExecStart points at the sealpushd just built, since verify wants
# the binary to exist) and checks the settings the operations guide relies on. Prints TAP;
# skips when systemd-analyze is not installed.
#
#   test_systemd_unit.sh UNIT SEALPUSHD EXAMPLE_CONFIG
set -u

unit=${1:?usage: test_systemd_unit.sh UNIT SEALPUSHD EXAMPLE_CONFIG}
sealpushd=${2:?}
example=${3:?}
if ! command -v systemd-analyze >/dev/null; then
	echo "1..0 # SKIP systemd-analyze is not installed (apt-get install systemd)"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sealpush-unit-test.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	[ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/#   /' | head -n 20
	return 0
}

# verify prints warnings (unknown keys, bad values) but still exits 0: any output is a failure.
verify() {
	local out
	out=$(systemd-analyze verify "$1" 2>&1)
	local rc=$?
	printf '%s' "$out" >"$tmp/verify.out"
	[ $rc -eq 0 ] && [ -z "$out" ]
}

sed "s|^ExecStart=/usr/local/sbin/sealpushd |ExecStart=$sealpushd |" "$unit" >"$tmp/sealpushd.service"
if grep -q "^ExecStart=$sealpushd " "$tmp/sealpushd.service"; then
	ok "ExecStart is /usr/local/sbin/sealpushd (where meson install puts it)"
else
	not_ok "ExecStart is /usr/local/sbin/sealpushd (where meson install puts it)" "$(grep ^ExecStart "$unit")"
fi
if verify "$tmp/sealpushd.service"; then
	ok "systemd-analyze verify accepts the unit, without a warning"
else
	not_ok "systemd-analyze verify accepts the unit, without a warning" "$(cat "$tmp/verify.out")"
fi

# The check above must be able to fail: a misspelt key and a bad value are both caught.
sed 's/^PrivateTmp=yes/PrivateTmpp=yes/' "$tmp/sealpushd.service" >"$tmp/typo.service"
if verify "$tmp/typo.service"; then not_ok "a misspelt key fails the check"; else ok "a misspelt key fails the check"; fi
sed 's/^NoNewPrivileges=yes/NoNewPrivileges=maybe/' "$tmp/sealpushd.service" >"$tmp/value.service"
if verify "$tmp/value.service"; then not_ok "a bad value fails the check"; else ok "a bad value fails the check"; fi

has() {
	if grep -qxF -- "$1" "$unit"; then ok "unit has $1"; else not_ok "unit has $1"; fi
}
has 'User=sealpush'
has 'ExecReload=/bin/kill -HUP $MAINPID'
has 'KillSignal=SIGTERM'
has 'NoNewPrivileges=yes'
has 'ProtectSystem=strict'
has 'PrivateTmp=yes'
has 'CapabilityBoundingSet='
has 'Restart=on-failure'

nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
if [ -n "$nofile" ] && [ "$nofile" -ge 100000 ] 2>/dev/null; then
	ok "LimitNOFILE ($nofile) allows at least 100,000 connections"
else
	not_ok "LimitNOFILE allows at least 100,000 connections" "LimitNOFILE=$nofile"
fi

# The drain must finish before systemd gives up: TimeoutStopSec > shutdown_grace + 3 s (the
# relay cuts what is left 3 s after the grace), with shutdown_grace from the example config.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$unit")
grace=$(python3 -c 'import json, sys
v = str(json.load(open(sys.argv[1]))["shutdown_grace"])
print(int(v[:-2]) // 1000 if v.endswith("ms") else int(v.rstrip("s")))' "$example")
if [ -n "$stop" ] && [ -n "$grace" ] && [ "$stop" -gt $((grace + 3)) ]; then
	ok "TimeoutStopSec (${stop}s) exceeds shutdown_grace (${grace}s) + 3 s"
else
	not_ok "TimeoutStopSec exceeds shutdown_grace + 3 s" "TimeoutStopSec=$stop shutdown_grace=$grace"
fi

echo "1..$n"
[ "$failed" -eq 0 ]
