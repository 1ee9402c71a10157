#!/usr/bin/env bash
# tests/container/run.sh: builds deploy/Containerfile with buildah and runs the relay inside the
# image. Run by `tests/run --container`; prints TAP and exits non-zero if a case failed.
#
#   tests/container/run.sh [SOURCE_DIR]
#
# Base images cannot be pulled on every machine, so the test makes its own: it debootstraps a
# minimal Debian 13 (trixie) once, imports it into a private buildah store as
# localhost/debian:trixie and localhost/debian:trixie-slim, and builds the Containerfile
# with BASE_IMAGE/RUNTIME_IMAGE pointing at them (buildah --isolation chroot, vfs storage; no
# daemon, no registry). The build context is what a clean clone would have: the files git
# tracks plus new files it does not ignore. In the image it then checks the config (user,
# health check, stop signal, ports, no compiler), runs `sealpushd --version`, makes a PKI with
# the image's sealpush-ca, runs `--check-config` on the shipped example config, starts the
# relay against a real redis-server on loopback, passes messages through it with the image's
# own `sealpush` CLI, sealed end to end (sealing keys and a contact card made in the image;
# queued in Redis, then delivered live; bob's listen shows alice's token and the text, and
# alice gets bob's sealed receipt), reloads it (SIGHUP) and drains it (SIGTERM, exit 0).
#
# Needs root, buildah, debootstrap, redis-server and python3; skips with a message otherwise.
# The debootstrapped tree and the image store stay in CACHE (default build/container-cache;
# `rm -rf build/container-cache` starts over; about 450 MB). On our 2-core machine a cold run
# (tests/run --container, nothing cached, Debian 13 base) took 2 min 5 s (debootstrap 43 s,
# image build 45 s, the checks and the sealed exchange the rest). The image build runs apt-get in
# both stages every time, so it needs the Debian mirror even when warm.
#
# Environment: CACHE, DEBIAN_MIRROR (default http://deb.debian.org/debian), KEEP=1 keeps the
# work directory and the containers for a look afterwards.
set -u

top=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/../..}" && pwd)
cache=${CACHE:-$top/build/container-cache}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
image=localhost/sealpush:test
base=localhost/debian:trixie
slim=localhost/debian:trixie-slim

# The exchange: "sealed" (the default via "auto", which picks it when the image has
# /usr/bin/sealpush) uses the image's `sealpush` CLI, sealed end to end; "demo"
# (EXCHANGE=demo) uses deploy/demo-client from the host, unsealed.
exchange_mode=${EXCHANGE:-auto}

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
	if [ -n "${2:-}" ]; then printf '%s\n' "$2" | tail -n 30 | sed 's/^/#   /'; fi
	return 0
}
note() { echo "# $*"; }
skip_all() {
	echo "1..0 # SKIP $*"
	exit 0
}
bail() {
	echo "Bail out! $*"
	exit 1
}

[ "${SEALPUSH_CONTAINER_TEST:-0}" = 1 ] || skip_all "slow; run it with tests/run --container"
[ "$(id -u)" = 0 ] || skip_all "needs root (debootstrap and buildah's chroot isolation)"
for tool in buildah debootstrap; do
	command -v "$tool" >/dev/null ||
		skip_all "$tool is not installed (apt-get install buildah debootstrap)"
done
for tool in redis-server redis-cli python3 tar; do
	command -v "$tool" >/dev/null || skip_all "$tool is not installed"
done

mkdir -p "$cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/sealpush-container.XXXXXX") || bail "mktemp failed"
B=(buildah --root "$cache/storage" --runroot "$cache/runroot" --storage-driver vfs)
ctrs=()
relay_pid=
redis_pid=

cleanup() {
	if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
		kill -KILL "$relay_pid" 2>/dev/null
		wait "$relay_pid" 2>/dev/null
	fi
	if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
		kill -TERM "$redis_pid" 2>/dev/null
		wait "$redis_pid" 2>/dev/null
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "# kept $work and containers ${ctrs[*]:-none} (${B[*]} rm --all)"
		return
	fi
	for c in "${ctrs[@]}"; do "${B[@]}" rm "$c" >/dev/null 2>&1; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- 1. Base images from debootstrap (cached) ---

rootfs=$cache/rootfs-trixie
if [ ! -f "$cache/rootfs-trixie.ok" ]; then
	rm -rf "$rootfs" "$cache/rootfs-trixie.ok" "$cache"/trixie*.tar
	t0=$(date +%s)
	if debootstrap --variant=minbase trixie "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
		# As in the official image: trixie, its updates and security, in deb822 form.
		rm -f "$rootfs/etc/apt/sources.list"
		cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
		rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
			"$rootfs"/var/log/* "$rootfs"/tmp/*
		touch "$cache/rootfs-trixie.ok"
		ok "debootstrap a minimal trixie ($(($(date +%s) - t0)) s, cached in ${cache#$top/})"
	else
		not_ok "debootstrap a minimal trixie from $mirror" "$(cat "$work/debootstrap.log")"
		bail "no base system"
	fi
else
	ok "debootstrap a minimal trixie (cached in ${cache#$top/})"
fi

# import NAME TAR: a one-layer image from a root filesystem tarball.
import_image() {
	local ctr
	ctr=$("${B[@]}" from --pull-never scratch) || return 1
	"${B[@]}" add "$ctr" "$2" / >/dev/null &&
		"${B[@]}" config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			--label org.opencontainers.image.description="debootstrap trixie for tests" "$ctr" &&
		"${B[@]}" commit --quiet --rm "$ctr" "$1" >/dev/null
}

if ! "${B[@]}" inspect --type image "$base" >/dev/null 2>&1 ||
	! "${B[@]}" inspect --type image "$slim" >/dev/null 2>&1; then
	tar -C "$rootfs" -cf "$cache/trixie.tar" . &&
		# slim: the same without documentation, manuals and translations, as debian:*-slim.
		tar -C "$rootfs" --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' \
			--exclude='./usr/share/info/*' --exclude='./usr/share/locale/*' \
			-cf "$cache/trixie-slim.tar" . &&
		import_image "$base" "$cache/trixie.tar" >"$work/import.log" 2>&1 &&
		import_image "$slim" "$cache/trixie-slim.tar" >>"$work/import.log" 2>&1
	rc=$?
	rm -f "$cache"/trixie*.tar
	if [ $rc -eq 0 ]; then
		ok "import $base and $slim into the private buildah store"
	else
		not_ok "import $base and $slim into the private buildah store" "$(cat "$work/import.log")"
		bail "no base images"
	fi
else
	ok "$base and $slim are in the store"
fi

# --- 2. Build ---

# The context a clean clone has: files git tracks (and still exist) plus untracked, unignored ones.
ctx=$work/context
mkdir -p "$ctx"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$top" ls-files -z --cached --others --exclude-standard |
		(cd "$top" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) |
		tar -C "$top" --null -T - -cf - | tar -C "$ctx" -xf -
else
	tar -C "$top" --exclude=./build --exclude='./build-*' -cf - . | tar -C "$ctx" -xf -
fi
old_id=$("${B[@]}" inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null)
t0=$(date +%s)
if "${B[@]}" build --isolation chroot --format docker --pull-never \
	--build-arg BASE_IMAGE="$base" --build-arg RUNTIME_IMAGE="$slim" \
	-f "$ctx/deploy/Containerfile" -t "$image" "$ctx" >"$work/build.log" 2>&1; then
	build_s=$(($(date +%s) - t0))
	ok "buildah build deploy/Containerfile ($build_s s)"
else
	not_ok "buildah build deploy/Containerfile" "$(cat "$work/build.log")"
	bail "the image did not build"
fi
if grep -qi "not supported for OCI\|ignored" "$work/build.log"; then
	not_ok "the build has no warnings about ignored instructions" "$(grep -i "not supported\|ignored" "$work/build.log")"
fi
# The image from the previous run is now untagged; drop it (and only dangling images).
if [ -n "$old_id" ]; then "${B[@]}" rmi --prune >/dev/null 2>&1; fi

size=$("${B[@]}" images --format '{{.Size}}' "$image" 2>/dev/null | head -n 1)
note "image $image: $size (uncompressed)"

# --- 3. Image configuration ---

"${B[@]}" inspect --type image "$image" >"$work/inspect.json" 2>&1 || bail "buildah inspect failed"
cfgcheck() { # cfgcheck DESC PYTHON-EXPR (c = the Docker config dict)
	local out
	if out=$(python3 - "$work/inspect.json" "$2" <<'PY' 2>&1
import json, sys
c = json.load(open(sys.argv[1]))["Docker"]["config"]
sys.exit(0 if eval(sys.argv[2]) else "config: " + json.dumps({k: c.get(k) for k in (
    "User", "Entrypoint", "Cmd", "StopSignal", "ExposedPorts", "Healthcheck")}))
PY
	); then ok "$1"; else not_ok "$1" "$out"; fi
}
cfgcheck "runs as uid/gid 10001, not root" 'c.get("User") == "10001:10001"'
cfgcheck "ENTRYPOINT and CMD are exec form: sealpushd -c /etc/sealpush/sealpushd.json" \
	'c.get("Entrypoint") == ["/usr/sbin/sealpushd"] and c.get("Cmd") == ["-c", "/etc/sealpush/sealpushd.json"]'
cfgcheck "STOPSIGNAL is SIGTERM (the drain)" 'c.get("StopSignal") == "SIGTERM"'
cfgcheck "exposes 7443/tcp and 9090/tcp" 'set((c.get("ExposedPorts") or {}).keys()) == {"7443/tcp", "9090/tcp"}'
cfgcheck "HEALTHCHECK runs sealpush-healthcheck on /readyz without a shell" \
	'(c.get("Healthcheck") or {}).get("Test", [None])[0] == "CMD" and c["Healthcheck"]["Test"][1] == "/usr/bin/sealpush-healthcheck" and c["Healthcheck"]["Test"][-1].endswith("/readyz")'

health_cmd=$(python3 -c 'import json, sys
print("\n".join(json.load(open(sys.argv[1]))["Docker"]["config"]["Healthcheck"]["Test"][1:]))' \
	"$work/inspect.json" 2>/dev/null)
entry=$(python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))["Docker"]["config"]
print("\n".join((c.get("Entrypoint") or []) + (c.get("Cmd") or [])))' "$work/inspect.json" 2>/dev/null)

# --- 4. Inside the image ---

# new_ctr VAR: a working container from the image, removed at exit.
new_ctr() {
	local c
	c=$("${B[@]}" from --pull-never "$image" 2>"$work/from.log") || bail "buildah from: $(cat "$work/from.log")"
	ctrs+=("$c")
	printf -v "$1" '%s' "$c"
}
# in CTR [-v SRC:DST[:ro]]... -- CMD...: runs CMD in CTR as the image's user, stdout/stderr to
# $work/out and $work/err, status in rc.
in_ctr() {
	local c=$1
	shift
	local mounts=()
	while [ "$1" != "--" ]; do
		mounts+=(--volume "$2")
		shift 2
	done
	shift
	"${B[@]}" run --isolation chroot "${mounts[@]}" "$c" -- "$@" >"$work/out" 2>"$work/err"
	rc=$?
}

ctr='' relay_ctr='' probe_ctr='' # set by new_ctr
new_ctr ctr
in_ctr "$ctr" -- id -u
if [ $rc -eq 0 ] && [ "$(cat "$work/out")" = 10001 ]; then ok "buildah run uses uid 10001"; else not_ok "buildah run uses uid 10001" "$(cat "$work/out" "$work/err")"; fi

in_ctr "$ctr" -- /usr/sbin/sealpushd --version
version=$(sed -n "s/^ *version : '\(.*\)',\$/\1/p" "$top/meson.build" | head -n 1)
# The image is Debian 13: its OpenSSL 3.5 gives the hybrid post-quantum TLS group.
if [ $rc -eq 0 ] && grep -q "^sealpushd $version (protocol sealpush/1; OpenSSL 3\.[5-9].*; features: .*pq-tls.*)\$" "$work/out"; then
	ok "sealpushd --version in the image (Debian 13, pq-tls): $(cat "$work/out")"
else
	not_ok "sealpushd --version in the image" "rc=$rc $(cat "$work/out" "$work/err")"
fi

absent=()
for f in /usr/bin/gcc /usr/bin/cc /usr/include/openssl /usr/bin/meson /usr/bin/sealpush-bench /src /build; do
	in_ctr "$ctr" -- /usr/bin/test -e "$f"
	[ $rc -eq 0 ] && absent+=("$f")
done
if [ ${#absent[@]} -eq 0 ]; then ok "no compiler, headers, build tree or bench in the runtime image"; else not_ok "no compiler, headers, build tree or bench in the runtime image" "present: ${absent[*]}"; fi

missing=()
for f in /usr/bin/sealpush-ca /usr/bin/sealpush-healthcheck /usr/share/doc/sealpush/sealpushd.example.json /usr/share/doc/sealpush/OPERATIONS.md; do
	in_ctr "$ctr" -- /usr/bin/test -f "$f"
	[ $rc -eq 0 ] || missing+=("$f")
done
if [ ${#missing[@]} -eq 0 ]; then ok "sealpush-ca, sealpush-healthcheck, example config and guide are installed"; else not_ok "sealpush-ca, sealpush-healthcheck, example config and guide are installed" "missing: ${missing[*]}"; fi

in_ctr "$ctr" -- /usr/bin/test -x /usr/bin/sealpush
have_cli=0
[ $rc -eq 0 ] && have_cli=1
note "the image $([ $have_cli = 1 ] && echo has || echo does not have) the sealpush CLI"

# A development PKI, made by the image's sealpush-ca (as uid 10001, into a host directory).
pki=$work/pki
mkdir -p "$pki" && chown 10001:10001 "$pki"
pki_ok=1
for args in "init /pki --name container-test-CA" "server /pki --name localhost --ip 127.0.0.1" \
	"device /pki alice" "device /pki bob" "crl /pki"; do
	# shellcheck disable=SC2086
	in_ctr "$ctr" -v "$pki:/pki" -- /usr/bin/sealpush-ca $args
	if [ $rc -ne 0 ]; then
		pki_ok=0
		not_ok "sealpush-ca $args in the image" "$(cat "$work/out" "$work/err")"
		break
	fi
done
[ $pki_ok = 1 ] && ok "sealpush-ca in the image makes a PKI (CA, server, alice, bob, CRL)"
[ $pki_ok = 1 ] || bail "no PKI"
bob=$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["token"])' "$pki/devices/bob.json")
# What the relay gets: the public parts and its own key pair, never ca.key.
relay_pki=$work/relay-pki
mkdir -p "$relay_pki"
cp "$pki/server.crt" "$pki/server.key" "$pki/ca.crt" "$pki/crl.pem" "$relay_pki/"
chown -R 10001:10001 "$relay_pki"
chmod 0400 "$relay_pki/server.key"

in_ctr "$ctr" -v "$relay_pki:/etc/sealpush/pki:ro" -- \
	/usr/sbin/sealpushd -c /usr/share/doc/sealpush/sealpushd.example.json --check-config
if [ $rc -eq 0 ] && grep -q "configuration OK" "$work/err" && grep -q '"tls_cert"' "$work/out"; then
	ok "sealpushd --check-config accepts the shipped example config with a read-only PKI"
else
	not_ok "sealpushd --check-config accepts the shipped example config with a read-only PKI" "rc=$rc $(cat "$work/out" "$work/err")"
fi
in_ctr "$ctr" -- /usr/sbin/sealpushd -c /usr/share/doc/sealpush/sealpushd.example.json --check-config
if [ $rc -eq 1 ] && grep -q "/etc/sealpush/pki/server.crt" "$work/err"; then
	ok "without the PKI mounted, --check-config fails and names the missing file"
else
	not_ok "without the PKI mounted, --check-config fails and names the missing file" "rc=$rc $(cat "$work/err")"
fi

# deploy/compose.yaml runs the image with its own command (Redis by service name, admin on
# 0.0.0.0:9090) over the example config: the relay in the image must accept that command.
compose_cmd=$(python3 -c 'import sys, yaml
print("\n".join(str(x) for x in yaml.safe_load(open(sys.argv[1]))["services"]["sealpushd"]["command"]))' \
	"$top/deploy/compose.yaml" 2>"$work/yaml.err")
if [ -n "$compose_cmd" ]; then
	mapfile -t compose_argv <<<"$compose_cmd"
	in_ctr "$ctr" -v "$top/deploy/sealpushd.example.json:/etc/sealpush/sealpushd.json:ro" \
		-v "$relay_pki:/etc/sealpush/pki:ro" -- /usr/sbin/sealpushd "${compose_argv[@]}" --check-config
	if [ $rc -eq 0 ] && grep -q '"redis": "redis://redis:6379"' "$work/out"; then
		ok "the image accepts compose.yaml's command (--check-config): ${compose_argv[*]}"
	else
		not_ok "the image accepts compose.yaml's command (--check-config)" "rc=$rc $(cat "$work/out" "$work/err")"
	fi
else
	note "compose.yaml's command not checked (no PyYAML: $(head -n 1 "$work/yaml.err"))"
fi

# --- 5. The relay in the image, Redis on loopback ---

rport=$(free_port)
mkdir -p "$work/redis"
redis-server --bind 127.0.0.1 --port "$rport" --dir "$work/redis" --appendonly yes \
	--appendfsync everysec --save "" --logfile "$work/redis/redis.log" --daemonize no &
redis_pid=$!
for _ in $(seq 50); do
	redis-cli -p "$rport" ping >/dev/null 2>&1 && break
	sleep 0.1
done
redis-cli -p "$rport" ping >/dev/null 2>&1 || bail "redis-server did not start: $(cat "$work/redis/redis.log")"

port=$(free_port)
aport=$(free_port)
mkdir -p "$work/etc"
cat >"$work/etc/sealpushd.json" <<EOF
{
  "listen": "127.0.0.1:$port",
  "tls_cert": "/etc/sealpush/pki/server.crt",
  "tls_key": "/etc/sealpush/pki/server.key",
  "client_ca": "/etc/sealpush/pki/ca.crt",
  "crl": "/etc/sealpush/pki/crl.pem",
  "redis": "redis://127.0.0.1:$rport",
  "admin_listen": "127.0.0.1:$aport",
  "workers": 2,
  "shutdown_grace": "5s"
}
EOF
chmod 0644 "$work/etc/sealpushd.json"

new_ctr relay_ctr
mapfile -t entry_argv <<<"$entry"
"${B[@]}" run --isolation chroot --volume "$work/etc/sealpushd.json:/etc/sealpush/sealpushd.json:ro" \
	--volume "$relay_pki:/etc/sealpush/pki:ro" "$relay_ctr" -- "${entry_argv[@]}" \
	>"$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!

# The relay's own pid (a descendant of buildah run), for signals: by pid, never by name.
find_relay() {
	local queue=("$relay_pid") p kids
	while [ ${#queue[@]} -gt 0 ]; do
		p=${queue[0]}
		queue=("${queue[@]:1}")
		if [ "$p" != "$relay_pid" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = sealpushd ]; then
			echo "$p"
			return 0
		fi
		kids=$(cat /proc/"$p"/task/*/children 2>/dev/null)
		# shellcheck disable=SC2206
		queue+=($kids)
	done
	return 1
}

# The image's own HEALTHCHECK command, run in the image, with the test's admin port.
mapfile -t health_argv <<<"${health_cmd//:9090\//:$aport/}"
new_ctr probe_ctr
ready=0
for _ in $(seq 100); do
	kill -0 "$relay_pid" 2>/dev/null || break
	in_ctr "$probe_ctr" -- "${health_argv[@]}"
	if [ $rc -eq 0 ]; then
		ready=1
		break
	fi
	sleep 0.2
done
if [ $ready = 1 ]; then
	ok "the relay in the image starts and the image's health check passes ($(cat "$work/out"))"
else
	not_ok "the relay in the image starts and the image's health check passes" "$(cat "$work/out" "$work/err" "$work/relay.log")"
	bail "the relay did not start"
fi
spid=$(find_relay)
[ -n "$spid" ] || bail "cannot find the relay's pid under buildah run ($relay_pid)"

metrics=$(python3 -c 'import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=3).read().decode())' "$aport" 2>&1)
if grep -q '^sealpush_redis_up 1$' <<<"$metrics"; then ok "/metrics from the host: sealpush_redis_up 1"; else not_ok "/metrics from the host: sealpush_redis_up 1" "$metrics"; fi

demo=$top/deploy/demo-client
demo_send() { python3 "$demo" --server "127.0.0.1:$port" --pki "$pki" --cert alice send --to "$bob" --message "$1"; }
demo_listen() { timeout 30 python3 "$demo" --server "127.0.0.1:$port" --pki "$pki" --cert bob listen --count "$1"; }

# The sealed exchange with the image's CLI (issue 7). Sealing keys are made beside the device
# keys in the PKI directory (mounted read-write: `listen` keeps its replay cache there too).
alice=$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["token"])' "$pki/devices/alice.json")
sp_id() { echo --server "127.0.0.1:$port" --ca /pki/ca.crt --cert "/pki/$1.crt" --key "/pki/$1.key"; }
sealed_send() { # sealed_send TEXT [SEND OPTIONS]: prints "TOKEN STATUS"
	local text=$1
	shift
	# shellcheck disable=SC2046
	in_ctr "$probe_ctr" -v "$pki:/pki" -- /usr/bin/sealpush $(sp_id alice) send --to /pki/bob.card \
		--message "$text" "$@"
	cat "$work/out" "$work/err"
	return $rc
}
sealed_listen() { # sealed_listen COUNT [WHO]: prints "SENDER MSG_ID LENGTH TEXT" per message
	# shellcheck disable=SC2046
	timeout 30 "${B[@]}" run --isolation chroot --volume "$pki:/pki" "$probe_ctr" -- \
		/usr/bin/sealpush $(sp_id "${2:-bob}") listen --count "$1" --timeout 25
}
sealed_setup() {
	local who
	for who in alice bob; do
		in_ctr "$probe_ctr" -v "$pki:/pki" -- /usr/bin/sealpush init --cert "/pki/$who.crt" --key "/pki/$who.key"
		[ $rc -eq 0 ] || return 1
	done
	in_ctr "$probe_ctr" -v "$pki:/pki" -- /usr/bin/sealpush card --cert /pki/bob.crt --key /pki/bob.key
	[ $rc -eq 0 ] || return 1
	cp "$work/out" "$pki/bob.card"
	in_ctr "$probe_ctr" -v "$pki:/pki" -- /usr/bin/sealpush verify-card /pki/bob.card
	[ $rc -eq 0 ] && [ "$(cat "$work/out")" = "$bob" ]
}

if [ "$exchange_mode" = auto ]; then
	exchange_mode=demo
	[ $have_cli = 1 ] && exchange_mode=sealed
fi
if [ "$exchange_mode" = sealed ]; then
	send=sealed_send listen=sealed_listen
	note "exchange: the sealpush CLI in the image (sealed end to end)"
	if sealed_setup; then
		ok "sealpush init (alice, bob), card and verify-card in the image: bob's card names his token"
	else
		not_ok "sealpush init, card and verify-card in the image" "rc=$rc $(cat "$work/out" "$work/err")"
		bail "no sealing identities"
	fi
else
	send=demo_send listen=demo_listen
	note "exchange: deploy/demo-client from the host, NOT sealed end to end (EXCHANGE=demo, or the"
	note "image has no sealpush CLI)"
fi

# a. bob is offline: the message waits in Redis.
out=$($send "first, while bob is away" 2>&1)
if [ "$out" = "$bob QUEUED" ]; then ok "alice -> bob while bob is offline: QUEUED"; else not_ok "alice -> bob while bob is offline: QUEUED" "$out"; fi
keys=$(redis-cli -p "$rport" dbsize 2>&1)
if [ "${keys:-0}" -gt 0 ] 2>/dev/null; then ok "the queued message is in Redis ($keys keys)"; else not_ok "the queued message is in Redis" "dbsize: $keys"; fi

# b. bob connects: he gets the queued message, then one sent while he listens.
$listen 2 >"$work/bob.out" 2>"$work/bob.err" &
bob_pid=$!
for _ in $(seq 100); do
	grep -q "first, while bob is away" "$work/bob.out" 2>/dev/null && break
	sleep 0.1
done
if [ "$exchange_mode" = sealed ]; then
	out=$($send "second, live" --receipt --json 2>&1)
	second_id=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["results"][0]["msg_id"])' "$out" 2>/dev/null)
	out=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1])["results"][0]; print(r["token"], r["status"])' "$out" 2>&1)
else
	out=$($send "second, live" 2>&1)
fi
if [ "$out" = "$bob DELIVERED" ]; then ok "alice -> bob while bob listens: DELIVERED"; else not_ok "alice -> bob while bob listens: DELIVERED" "$out"; fi
wait "$bob_pid"
bob_rc=$?
if [ "$exchange_mode" = sealed ]; then
	# "SENDER MSG_ID LENGTH TEXT": the sender is alice, authenticated inside the seal.
	got=$(awk -v a="$alice" '{ s = ($1 == a) ? "alice" : $1; $1 = $2 = $3 = ""; sub(/^ +/, ""); print s ": " $0 }' "$work/bob.out")
	want=$(printf 'alice: first, while bob is away\nalice: second, live')
else
	got=$(cut -d' ' -f2- "$work/bob.out")
	want=$(printf 'first, while bob is away\nsecond, live')
fi
if [ $bob_rc -eq 0 ] && [ "$got" = "$want" ]; then
	ok "bob received both messages, in order$([ "$exchange_mode" = sealed ] && echo ", opened, from alice's token"), and ACKed them"
else
	not_ok "bob received both messages, in order, and ACKed them" "rc=$bob_rc $(cat "$work/bob.out" "$work/bob.err")"
fi
if [ "$exchange_mode" = sealed ]; then
	# The second message asked for a receipt: bob's listen sent it back, sealed, to alice.
	out=$(sealed_listen 1 alice 2>&1)
	if [ "$out" = "receipt $bob $second_id received" ]; then
		ok "alice's listen gets bob's sealed receipt: receipt BOB ${second_id:0:8}... received"
	else
		not_ok "alice's listen gets bob's sealed receipt" "want: receipt $bob $second_id received; got: $out"
	fi
fi

# c. SIGHUP reloads; SIGTERM drains and the relay exits 0.
kill -HUP "$spid"
for _ in $(seq 50); do
	grep -q "event=reloaded" "$work/relay.log" && break
	sleep 0.1
done
if grep -q "event=reloaded" "$work/relay.log"; then ok "SIGHUP to the relay in the image: reloaded"; else not_ok "SIGHUP to the relay in the image: reloaded" "$(cat "$work/relay.log")"; fi

kill -TERM "$spid"
t0=$(date +%s)
relay_rc=
for _ in $(seq 150); do
	if ! kill -0 "$relay_pid" 2>/dev/null; then
		wait "$relay_pid"
		relay_rc=$?
		break
	fi
	sleep 0.1
done
if [ "$relay_rc" = 0 ] && grep -q "event=draining" "$work/relay.log" && grep -q "event=stopped" "$work/relay.log"; then
	ok "SIGTERM drains the relay in the image: exit 0 in $(($(date +%s) - t0)) s"
	relay_pid=
else
	not_ok "SIGTERM drains the relay in the image: exit 0" "rc=${relay_rc:-still running} $(cat "$work/relay.log")"
fi

echo "1..$n"
[ "$failed" -eq 0 ]
