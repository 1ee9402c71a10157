#!/usr/bin/env bash
# test_xwing_noble.sh: MLKEM768-X25519 against an independent implementation,
# @noble/post-quantum@0.7.1's ml_kem768_x25519 (X-Wing), installed with npm (pinned) into
# BUILDDIR/npm on first use. TAP:
#   1: noble makes keys from random seeds and encapsulates with given randomness; our C code
#      derives the same public keys, decapsulates to the same secrets and, with the same
#      randomness, encapsulates to the same ciphertexts (test_xwing --decap-file);
#   2: our C code makes keys and encapsulates; noble derives the same public keys and
#      decapsulates to the same secrets.
# Skips when the build has no ML-KEM (OpenSSL < 3.5), or node/npm are missing or npm cannot
# install the package (offline).
#
#   test_xwing_noble.sh BUILDDIR XWING_NOBLE_MJS TEST_XWING [N]
set -u
builddir=$1 mjs=$2 prog=$3 n=${4:-16}
pkg=@noble/post-quantum@0.7.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$prog" --encap-file "$work/probe" 1 >/dev/null
if [ $? -eq 77 ]; then
	echo "1..0 # SKIP MLKEM768-X25519 needs OpenSSL 3.5 or later (this build has no ML-KEM)"
	exit 0
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "1..0 # SKIP node and npm are needed for the $pkg interoperation test"
	exit 0
fi
prefix=$builddir/npm
if [ ! -f "$prefix/node_modules/@noble/post-quantum/hybrid.js" ] ||
	! grep -q '"version": "0.7.1"' "$prefix/node_modules/@noble/post-quantum/package.json"; then
	if ! npm install --prefix "$prefix" --no-audit --no-fund --save-exact "$pkg" >"$work/npm.log" 2>&1; then
		sed 's/^/# /' "$work/npm.log" | tail -n 5
		echo "1..0 # SKIP npm install $pkg failed (offline?)"
		exit 0
	fi
fi

echo "1..2"
if node "$mjs" "$prefix" gen "$work/noble.txt" "$n" && "$prog" --decap-file "$work/noble.txt"; then
	echo "ok 1 - $n noble keys and encapsulations: same pk, ss and (derandomised) ct in C"
else
	echo "not ok 1 - noble keys and encapsulations checked in C"
fi
if "$prog" --encap-file "$work/c.txt" "$n" && node "$mjs" "$prefix" check "$work/c.txt"; then
	echo "ok 2 - $n C keys and encapsulations: same pk and ss in noble"
else
	echo "not ok 2 - C keys and encapsulations checked by noble"
fi
