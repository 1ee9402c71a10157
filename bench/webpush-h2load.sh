#!/bin/bash
# bench/webpush-h2load.sh BUILD [N]: Web Push notifications/s through the provider door
# (issue 15), measured with h2load (Debian's nghttp2-client) over ONE HTTP/2 connection with
# 100 concurrent streams, to 100 connected devices that ACK every DELIVER (sealpush-bench idle
# --register: bench-r0..99), 100 subscriptions round robin (h2load -i). A 201 means the
# device's ACK came back (live delivery, the SEND path). Then the same at a fixed rate
# (--rps) for latency. Prints h2load's summaries; leaves its files in $W (default
# /tmp/wp-bench). VAPID=1 adds an Authorization: vapid header (one ES256 JWT for the whole
# run, as app servers reuse theirs; made here with the openssl CLI).
set -eu
BUILD=${1:?usage: bench/webpush-h2load.sh BUILD [N] [RPS]}
N=${2:-300000}
RPS=${3:-15000}
W=${W:-/tmp/wp-bench}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=${PORT:-$(free_port)}
PPORT=${PPORT:-$(free_port)}
CA=$W/ca
mkdir -p "$W/redis"
[ -f "$CA/ca.crt" ] || { "$BUILD/tools/sealpush-ca" init "$CA" >/dev/null &&
	"$BUILD/tools/sealpush-ca" server "$CA" --name localhost --ip 127.0.0.1 >/dev/null; }
redis-server --port 0 --unixsocket "$W/redis/sock" --save '' --appendonly no --daemonize yes \
	--pidfile "$W/redis/pid" --logfile "$W/redis/log" --dir "$W/redis"
sleep 0.5
R() { redis-cli -s "$W/redis/sock" "$@"; }
cleanup() {
	[ -n "${BPID:-}" ] && kill "$BPID" 2>/dev/null
	[ -n "${DPID:-}" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
	# Waited for: an exiting Redis removes its socket file, which may already be the next
	# run's (same path).
	local rp
	rp=$(cat "$W/redis/pid" 2>/dev/null) || return 0
	kill "$rp" 2>/dev/null || return 0
	for _ in $(seq 50); do kill -0 "$rp" 2>/dev/null || return 0; sleep 0.1; done
}
trap cleanup EXIT
"$BUILD/server/sealpushd" --listen 127.0.0.1:$PORT --tls-cert "$CA/server.crt" \
	--tls-key "$CA/server.key" --client-ca "$CA/ca.crt" --crl "$CA/crl.pem" \
	--redis "unix://$W/redis/sock" --workers 2 --log-level warn \
	--provider-listen 127.0.0.1:$PPORT --provider-origin https://127.0.0.1:$PPORT \
	--keepalive 3600 --keepalive-max 3600 --hello-timeout 300s 2>"$W/d.log" &
DPID=$!
sleep 1
"$BUILD/bench/sealpush-bench" idle --server 127.0.0.1:$PORT --ca-dir "$CA" --conns 100 \
	--register --hold 3600 --settle 1 --quiet >"$W/idle.out" 2>&1 &
BPID=$!
# Subscriptions for bench-r0..99, written as the relay stores them (PROTOCOL.md 14.3).
for i in $(seq 0 99); do
	while [ ! -f "$CA/bench-r$i.crt" ]; do sleep 0.2; done
done
: >"$W/uris"
for i in $(seq 0 99); do
	tok=$(openssl x509 -in "$CA/bench-r$i.crt" -pubkey -noout | openssl pkey -pubin -outform DER |
		sha256sum | cut -c1-64)
	raw=$(head -c 32 /dev/urandom | xxd -p -c 64)
	cap=$(echo "$raw" | xxd -r -p | base64 -w0 | tr '+/' '-_' | tr -d '=')
	h=$(echo "$raw" | xxd -r -p | sha256sum | cut -c1-64)
	sub=$(head -c 16 /dev/urandom | xxd -p)
	printf 'HSET sp:wp:cap:%s token "%s" sub "%s"\n' "$h" \
		"$(echo "$tok" | sed 's/../\\x&/g')" "$(echo "$sub" | sed 's/../\\x&/g')" >>"$W/redis.cmds"
	echo "https://127.0.0.1:$PPORT/push/$cap" >>"$W/uris"
done
R <"$W/redis.cmds" >/dev/null
rm -f "$W/redis.cmds"
sleep 3 # the 100 devices registered
# A 4,096-byte aes128gcm body: RFC 8188 header (rs 4096, 65-byte key id) and one record.
{ head -c 16 /dev/urandom; printf '\x00\x00\x10\x00\x41\x04'; head -c 64 /dev/urandom
  head -c 4010 /dev/urandom; } >"$W/body"
H=(-H 'ttl: 60' -H 'content-encoding: aes128gcm' -H 'urgency: high')
if [ "${VAPID:-0}" = 1 ]; then
	[ -f "$W/vapid.pem" ] || openssl ecparam -genkey -name prime256v1 -noout -out "$W/vapid.pem"
	AUTH=$(python3 - "$W/vapid.pem" "https://127.0.0.1:$PPORT" <<'PY'
import base64, json, subprocess, sys, time
pem, aud = sys.argv[1], sys.argv[2]
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
pub = subprocess.run(["openssl", "ec", "-in", pem, "-pubout", "-outform", "DER"],
                     capture_output=True, check=True).stdout[-65:]
inp = "%s.%s" % (b(json.dumps({"typ": "JWT", "alg": "ES256"}).encode()),
                 b(json.dumps({"aud": aud, "exp": int(time.time()) + 43200,
                               "sub": "mailto:bench@example.org"}).encode()))
der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", pem], input=inp.encode(),
                     capture_output=True, check=True).stdout
i = 2 if der[1] < 0x80 else 3
r = der[i + 2:i + 2 + der[i + 1]]
j = i + 2 + der[i + 1]
s = der[j + 2:j + 2 + der[j + 1]]
sig = r[-32:].rjust(32, b"\0") + s[-32:].rjust(32, b"\0")
print("vapid t=%s.%s, k=%s" % (inp, b(sig), b(pub)))
PY
)
	H+=(-H "authorization: $AUTH")
fi
# CPU time (user + system, all threads) of a process, in clock ticks
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RPID=$(cat "$W/redis/pid")
echo "== throughput: h2load -n $N -c 1 -m 100 (one connection, 100 streams)"
c0=$(cpu "$DPID"); b0=$(cpu "$BPID"); r0=$(cpu "$RPID")
TIMEFORMAT='h2load CPU: user %U s, system %S s, elapsed %R s'
time h2load -n "$N" -c 1 -m 100 -d "$W/body" "${H[@]}" -i "$W/uris" >"$W/tput.txt"
cat "$W/tput.txt"
c1=$(cpu "$DPID"); b1=$(cpu "$BPID"); r1=$(cpu "$RPID")
awk -v d=$((c1 - c0)) -v b=$((b1 - b0)) -v r=$((r1 - r0)) -v n="$N" -v hz="$(getconf CLK_TCK)" \
	'BEGIN {printf "CPU per push: relay %.1f us, devices (sealpush-bench) %.1f us, redis %.1f us\n", d * 1e6 / hz / n, b * 1e6 / hz / n, r * 1e6 / hz / n}'
rm -f "$W/lat.log"
echo "== latency at $RPS/s: h2load -c 1 -m 100 --rps $RPS -D 10 --warm-up-time 2"
h2load -c 1 -m 100 --rps "$RPS" -D 10 --warm-up-time 2 -d "$W/body" "${H[@]}" -i "$W/uris" \
	--log-file "$W/lat.log" | tee "$W/lat.txt"
# p50/p99 of the request times (microseconds, 3rd column of the log)
sort -n -k3 "$W/lat.log" | awk '{a[NR]=$3} END {printf "latency over %d requests: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n", NR, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, a[int(NR*0.999)]/1000}'
grep -c . "$W/d.log" >/dev/null || true
