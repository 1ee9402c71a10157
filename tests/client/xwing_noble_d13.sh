#!/usr/bin/env bash
# xwing_noble_d13.sh: the @noble/post-quantum interoperation test (test_xwing_noble.sh) for the
# Debian 13 build, whose root (tests/debian13) has no Node.js: node and npm run on this host,
# test_xwing runs inside the root (OpenSSL 3.5) through chroot, and the two exchange hex files
# under the root's /tmp. Run as root after `tests/run --debian13 client` has built test_xwing.
#
#   tests/client/xwing_noble_d13.sh [N]
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
root=${D13_ROOT:-$top/build/debian13/root}
prog=/build/sanitize/tests/client/test_xwing
[ -x "$root$prog" ] || {
	echo "xwing_noble_d13.sh: $root$prog is missing (run tests/run --debian13 client)" >&2
	exit 2
}
wrap=$(mktemp "$root/tmp/xwing-wrap.XXXXXX")
proc=0
cleanup() {
	rm -f "$wrap"
	if [ "$proc" = 1 ]; then umount -l "$root/proc" 2>/dev/null || true; fi
}
trap cleanup EXIT
# The sanitizers need /proc inside the root (tests/debian13 unmounts it after its run).
if ! mountpoint -q "$root/proc"; then
	mount -t proc proc "$root/proc" && proc=1
fi
# The wrapper runs test_xwing in the root with the root-relative file names.
cat >"$wrap" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do args+=("\${a#$root}"); done
exec chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin $prog "\${args[@]}"
WRAP
chmod +x "$wrap"
TMPDIR=$root/tmp "$top/tests/client/test_xwing_noble.sh" "$top/build" \
	"$top/tests/client/xwing_noble.mjs" "$wrap" "${1:-32}"
