#!/bin/sh
# tests/client/test_installed.sh: libsealpush as a user gets it. Installs the build into a
# temporary DESTDIR (meson install --no-rebuild), points pkg-config at the installed
# sealpush.pc, compiles tests/client/installed_seal.c with
#     CC installed_seal.c $(pkg-config --cflags --libs sealpush)
# and runs it against the installed shared library (it seals, opens, refuses a duplicate and
# round-trips a receipt). Also checks that the shared library exports the public API and
# hides the internals (HPKE, codec). Prints TAP; skips if pkg-config is missing.
#
#   test_installed.sh BUILDDIR SOURCE.c SANITIZE CC...
# SANITIZE is the build's b_sanitize ("none", "address,undefined", ...): an instrumented
# library needs an instrumented program.
set -u
builddir=$1
src=$2
sanitize=$3
shift 3
# meson test points LD_LIBRARY_PATH at the build tree; the point here is the installed copy.
unset LD_LIBRARY_PATH

command -v pkg-config >/dev/null 2>&1 || {
	echo "1..0 # SKIP pkg-config is not installed"
	exit 0
}
work=$(mktemp -d "${TMPDIR:-/tmp}/sp-installed-XXXXXX")
trap 'rm -rf "$work"' EXIT
n=0
failed=0
ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}
not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	[ -f "$work/log" ] && sed 's/^/#   /' "$work/log" | tail -n 30
}
finish() {
	echo "1..$n"
	[ "$failed" -eq 0 ]
	exit $?
}

if meson install -C "$builddir" --no-rebuild --quiet --destdir "$work/root" >"$work/log" 2>&1; then
	ok "meson install into a temporary DESTDIR"
else
	not_ok "meson install into a temporary DESTDIR"
	finish
fi
pc=$(find "$work/root" -name sealpush.pc | head -n 1)
if [ -z "$pc" ]; then
	: >"$work/log"
	not_ok "sealpush.pc is installed"
	finish
fi
# The .pc names the configured prefix; the files are under DESTDIR, so move its prefix there.
mkdir -p "$work/pc"
prefix=$(sed -n 's/^prefix=//p' "$pc")
sed "s|^prefix=.*|prefix=$work/root$prefix|" "$pc" >"$work/pc/sealpush.pc"
export PKG_CONFIG_PATH="$work/pc"
if flags=$(pkg-config --cflags --libs sealpush 2>"$work/log"); then
	ok "pkg-config --cflags --libs sealpush: $flags"
else
	not_ok "pkg-config --cflags --libs sealpush"
	finish
fi
requires=$(pkg-config --print-requires sealpush 2>&1 | tr '\n' ' ')
case "$requires" in
*openssl*libevent_core* | *libevent_core*openssl*) ok "sealpush.pc requires: $requires" ;;
*)
	echo "$requires" >"$work/log"
	not_ok "sealpush.pc requires openssl and libevent_core"
	;;
esac
for h in sealpush.h sealpush/sp_seal.h sealpush/sp_card.h sealpush/sp_seal_replay.h sealpush/sp_identity.h sealpush/sp_dir.h sealpush/sp_ucard.h sealpush/sp_bucket.h; do
	[ -f "$work/root$prefix/include/$h" ] || {
		echo "missing $h" >"$work/log"
		not_ok "public headers are installed"
		finish
	}
done
ok "public headers are installed (sealpush.h, sealpush/sp_seal.h, sp_card.h, sp_seal_replay.h, sp_identity.h, sp_dir.h, sp_ucard.h, sp_bucket.h)"

san=
[ "$sanitize" != none ] && [ -n "$sanitize" ] && san="-fsanitize=$sanitize"
libdir=$(pkg-config --variable=libdir sealpush)
# shellcheck disable=SC2086
if "$@" -std=c17 -Wall -Wextra -Werror $san -o "$work/installed_seal" "$src" $flags \
	-Wl,-rpath,"$libdir" >"$work/log" 2>&1; then
	ok "a program compiles and links against the installed library with pkg-config alone"
else
	not_ok "a program compiles and links against the installed library with pkg-config alone"
	finish
fi
if ldd "$work/installed_seal" 2>/dev/null | grep -q "$libdir/libsealpush.so"; then
	ok "it loads the installed libsealpush.so ($libdir)"
else
	ldd "$work/installed_seal" >"$work/log" 2>&1
	not_ok "it loads the installed libsealpush.so"
fi
if "$work/installed_seal" >"$work/log" 2>&1; then
	sed 's/^/#   /' "$work/log"
	ok "it seals, opens, refuses a duplicate and round-trips a receipt"
else
	not_ok "it seals, opens, refuses a duplicate and round-trips a receipt"
fi
if command -v nm >/dev/null 2>&1; then
	so=$(ls "$libdir"/libsealpush.so.*.*.* | head -n 1)
	nm -D --defined-only "$so" | awk '$2 ~ /^[TDBR]$/ {print $3}' >"$work/syms"
	bad=$(grep -v -E '^(sp_client_|sp_seal$|sp_seal_|sp_sealer_|sp_card_|sp_token_|sp_wp_|sp_dir_|sp_ucard_)' "$work/syms" | tr '\n' ' ')
	have=$(grep -c -E '^(sp_seal|sp_sealer_new|sp_card_parse|sp_seal_open|sp_client_new)$' "$work/syms")
	if [ -z "$bad" ] && [ "$have" -eq 5 ]; then
		ok "the shared library exports $(wc -l <"$work/syms") symbols, only the public API"
	else
		echo "not public: $bad; $have of 5 expected found" >"$work/log"
		not_ok "the shared library exports only the public API"
	fi
fi
finish
