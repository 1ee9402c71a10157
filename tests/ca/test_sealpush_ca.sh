#!/usr/bin/env bash
# tests/ca/test_sealpush_ca.sh: end-to-end test of the real sealpush-ca binary, with the openssl
# CLI as an independent checker. Works in a temporary directory that it removes at exit.
#
#   test_sealpush_ca.sh /path/to/sealpush-ca
#
# Prints TAP ("ok N - ..." / "not ok N - ...", then "1..N"); exits non-zero if any case failed.
set -u

ca=${1:?usage: test_sealpush_ca.sh /path/to/sealpush-ca}
if ! command -v openssl >/dev/null; then
	echo "1..0 # SKIP the openssl CLI is not installed"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sealpush-ca-test.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
A=$tmp/a # the main CA
B=$tmp/b # a second, unrelated CA

n=0
failed=0
rc=0

ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}

not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	# The last command's output, as TAP diagnostics.
	[ -s "$tmp/out" ] && sed 's/^/#   out: /' "$tmp/out" | head -n 20
	[ -s "$tmp/err" ] && sed 's/^/#   err: /' "$tmp/err" | head -n 20
	return 0
}

# run CMD...: runs a command, keeping its stdout, stderr and exit status for the checks below.
run() {
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
}

# check DESC CMD...: a case that passes if CMD succeeds (CMD's own output is discarded).
check() {
	local desc=$1
	shift
	if "$@" >/dev/null 2>&1; then ok "$desc"; else not_ok "$desc"; fi
}

# check_not DESC CMD...: a case that passes if CMD fails.
check_not() {
	local desc=$1
	shift
	if "$@" >/dev/null 2>&1; then not_ok "$desc"; else ok "$desc"; fi
}

# verdict DESC [DETAIL]: a case from the status of the command just before it; DETAIL is shown
# only on failure. Usage: [[ $x == y ]]; verdict "x is y" "$x"
verdict() {
	local st=$?
	if [ "$st" = 0 ]; then ok "$1"; else not_ok "$1${2:+ ($2)}"; fi
}

# sanitizer_clean: no ASan/UBSan report in the last run's stderr.
sanitizer_clean() {
	! grep -qE 'Sanitizer|runtime error:' "$tmp/err"
}

# expect_ok DESC: the last run exited 0 without sanitizer reports.
expect_ok() {
	if [ "$rc" = 0 ] && sanitizer_clean; then ok "$1"; else not_ok "$1 (exit $rc)"; fi
}

# expect_fail DESC CODE: the last run exited CODE with one line "sealpush-ca: ..." on stderr.
expect_fail() {
	if [ "$rc" = "$2" ] && [ "$(wc -l <"$tmp/err")" = 1 ] &&
		grep -q '^sealpush-ca: ' "$tmp/err" && sanitizer_clean; then
		ok "$1"
	else
		not_ok "$1 (exit $rc, want $2)"
	fi
}

mode_is() { [ "$(stat -c %a "$1")" = "$2" ]; }

# subject_is CERT "CN = X": OpenSSL 3.0 prints "subject=CN = X", 3.5 "subject=CN=X".
subject_is() {
	[ "$(openssl x509 -in "$1" -noout -subject 2>/dev/null | sed 's/ *= */=/g')" = \
		"subject=$(echo "$2" | sed 's/ *= */=/g')" ]
}

# valid_for CERT DAYS: still valid in DAYS - 1 days, expired in DAYS + 1 days.
valid_for() {
	openssl x509 -in "$1" -noout -checkend $((($2 - 1) * 86400)) >/dev/null 2>&1 &&
		! openssl x509 -in "$1" -noout -checkend $((($2 + 1) * 86400)) >/dev/null 2>&1
}

expired() { ! openssl x509 -in "$1" -noout -checkend 0 >/dev/null 2>&1; }

# dated CERT startdate|enddate DAYS: the certificate's notBefore or notAfter is DAYS from now
# (negative: in the past), within five minutes.
dated() {
	local when
	when=$(openssl x509 -in "$1" -noout "-$2" 2>/dev/null | cut -d= -f2)
	when=$(date -d "${when:?}" +%s) || return 1
	when=$((when - $(date +%s)))
	[ "$when" -gt $(($3 * 86400 - 300)) ] && [ "$when" -le $(($3 * 86400 + 300)) ]
}

# next_update_in CRL DAYS: the CRL's nextUpdate is DAYS from now (within five minutes).
next_update_in() {
	local next
	next=$(openssl crl -in "$1" -noout -nextupdate 2>/dev/null | cut -d= -f2)
	next=$(date -d "${next:?}" +%s) || return 1
	next=$((next - $(date +%s)))
	[ "$next" -gt $(($2 * 86400 - 300)) ] && [ "$next" -le $(($2 * 86400 + 300)) ]
}

# spki_token FILE: SHA-256 of the DER SubjectPublicKeyInfo of a certificate, by openssl alone.
spki_token() {
	openssl x509 -in "$1" -pubkey -noout 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null |
		sha256sum | cut -d' ' -f1
}

# ext CERT NAME: one extension of a certificate as openssl prints it, on one line.
ext() { openssl x509 -in "$1" -noout -ext "$2" 2>/dev/null | tr '\n' ' '; }

verify() { openssl verify -CAfile "$A/ca.crt" "$@" >"$tmp/verify" 2>&1; }

serial_of() { openssl x509 -in "$1" -noout -serial 2>/dev/null | cut -d= -f2; }

# crl_number FILE: the crlNumber of a CRL, in decimal (openssl prints hex, with or without 0x).
crl_number() {
	local h
	h=$(openssl crl -in "$1" -noout -crlnumber 2>/dev/null | cut -d= -f2)
	h=${h#0x}
	[[ $h =~ ^[0-9A-Fa-f]+$ ]] || h=0
	echo $((16#$h))
}

# --- usage ---

# lists_all FILE WORD...: FILE mentions every WORD.
lists_all() {
	local f=$1 w
	shift
	for w in "$@"; do
		grep -q -- "$w" "$f" || return 1
	done
}

run "$ca" --help
if [ "$rc" = 0 ] && grep -q '^usage: sealpush-ca' "$tmp/out" &&
	lists_all "$tmp/out" init server device intermediate revoke revoke-serial crl enroll-code --days --name --ip --backdate --version; then
	ok "--help exits 0 and lists every command and option"
else
	not_ok "--help exits 0 and lists every command and option"
fi
run "$ca" -h
expect_ok "-h exits 0"
run "$ca" device --help
expect_ok "COMMAND --help exits 0"
run "$ca" --version
if [ "$rc" = 0 ] && grep -qE '^sealpush-ca [0-9]+\.[0-9]+' "$tmp/out"; then
	ok "--version prints the version"
else
	not_ok "--version prints the version"
fi
run "$ca"
if [ "$rc" = 2 ] && grep -q '^usage:' "$tmp/err"; then
	ok "no arguments: usage on stderr, exit 2"
else
	not_ok "no arguments: usage on stderr, exit 2"
fi
run "$ca" frobnicate "$A"
expect_fail "unknown command is a usage error" 2
run "$ca" init "$A" --ip 10.0.0.1
expect_fail "an option of another command is a usage error" 2
for bad in 0 -1 abc 1x 36501 ''; do
	run "$ca" init "$A" --days "$bad"
	expect_fail "--days '$bad' is a usage error" 2
done
run "$ca" init
expect_fail "init without DIR is a usage error" 2
check "usage errors created nothing" test ! -e "$A"

# --- init ---

run "$ca" init "$A" --name "Test Device CA"
expect_ok "init creates a CA"
check "DIR is created 0700" mode_is "$A" 700
check "ca.key is 0600" mode_is "$A/ca.key" 600
check "index.json is 0600" mode_is "$A/index.json" 600
check "ca.crt exists" test -s "$A/ca.crt"
check "init also writes an (empty) crl.pem" test -s "$A/crl.pem"
check "ca.key is PEM PKCS#8" grep -qx -- '-----BEGIN PRIVATE KEY-----' "$A/ca.key"
if openssl pkey -in "$A/ca.key" -noout -text 2>/dev/null | grep -q 'NIST CURVE: P-256'; then
	ok "ca.key is an ECDSA P-256 key"
else
	not_ok "ca.key is an ECDSA P-256 key"
fi
check "ca.crt is a valid self-signed certificate" verify "$A/ca.crt"
check "ca.crt subject is CN = Test Device CA" subject_is "$A/ca.crt" "CN = Test Device CA"
e=$(ext "$A/ca.crt" basicConstraints)
if [[ $e == *critical* && $e == *"CA:TRUE, pathlen:1"* ]]; then
	ok "CA basicConstraints critical CA:TRUE pathlen:1"
else
	not_ok "CA basicConstraints critical CA:TRUE pathlen:1 ($e)"
fi
e=$(ext "$A/ca.crt" keyUsage)
if [[ $e == *critical* && $e == *"Certificate Sign, CRL Sign"* && $e != *"Digital"* ]]; then
	ok "CA keyUsage critical keyCertSign cRLSign"
else
	not_ok "CA keyUsage critical keyCertSign cRLSign ($e)"
fi
e=$(ext "$A/ca.crt" subjectKeyIdentifier)
[[ $e == *"Subject Key Identifier"* ]]
verdict "CA has a subjectKeyIdentifier"
openssl x509 -in "$A/ca.crt" -noout -text | grep -q "Signature Algorithm: ecdsa-with-SHA256"
verdict "CA is signed with ecdsa-with-SHA256"
check "CA is valid for 3650 days by default" valid_for "$A/ca.crt" 3650
s=$(serial_of "$A/ca.crt")
if [[ $s =~ ^[0-9A-F]+$ ]] && [ ${#s} -ge 16 ] && [ ${#s} -le 34 ] &&
	! openssl x509 -in "$A/ca.crt" -noout -text | grep -q 'Serial Number: *(Negative)'; then
	ok "CA serial is a large positive random number ($s)"
else
	not_ok "CA serial is a large positive random number ($s)"
fi
check "empty crl.pem from init verifies with the CA" \
	openssl crl -in "$A/crl.pem" -CAfile "$A/ca.crt" -noout

ca_key_sum=$(sha256sum <"$A/ca.key")
run "$ca" init "$A"
expect_fail "a second init into the same DIR is refused" 1
check "the refused init left ca.key alone" test "$(sha256sum <"$A/ca.key")" = "$ca_key_sum"
grep -qi 'already' "$tmp/err"
verdict "the refusal says the CA exists"

run "$ca" init "$tmp/no/such/parent/dir"
expect_fail "init with a missing parent directory fails cleanly" 1

# --- server ---

run "$ca" server "$A"
expect_fail "server without --name is a usage error" 2
run "$ca" server "$A" --name 10.1.2.3
expect_fail "server --name with an address is a usage error" 2
run "$ca" server "$A" --name relay.example --ip not-an-ip
expect_fail "server --ip with a non-address is a usage error" 2
run "$ca" server "$A" --name 'bad name'
expect_fail "server --name with a space is a usage error" 2
check "refused server commands created no server.key" test ! -e "$A/server.key"

run "$ca" server "$A" --name relay.example --name localhost --ip 127.0.0.1 --ip 2001:db8::7 --days 90
expect_ok "server issues a certificate"
check "server.key is 0600" mode_is "$A/server.key" 600
check "server.crt verifies against the CA" verify "$A/server.crt"
check "server.crt verifies for purpose sslserver" verify -purpose sslserver "$A/server.crt"
check "server.crt matches relay.example" verify -verify_hostname relay.example "$A/server.crt"
check "server.crt matches localhost" verify -verify_hostname localhost "$A/server.crt"
check "server.crt matches 127.0.0.1" verify -verify_ip 127.0.0.1 "$A/server.crt"
check "server.crt matches 2001:db8::7" verify -verify_ip 2001:db8::7 "$A/server.crt"
check_not "server.crt does not match other.example" verify -verify_hostname other.example "$A/server.crt"
e=$(ext "$A/server.crt" subjectAltName)
if [[ $e == *"DNS:relay.example"* && $e == *"DNS:localhost"* && $e == *"IP Address:127.0.0.1"* &&
	$e == *"IP Address:2001:DB8:0:0:0:0:0:7"* ]]; then
	ok "server SAN lists every name and address"
else
	not_ok "server SAN lists every name and address ($e)"
fi
e=$(ext "$A/server.crt" extendedKeyUsage)
if [[ $e == *"TLS Web Server Authentication"* && $e != *Client* ]]; then
	ok "server EKU is serverAuth only"
else
	not_ok "server EKU is serverAuth only ($e)"
fi
e=$(ext "$A/server.crt" keyUsage)
[[ $e == *"Digital Signature"* && $e != *"Certificate Sign"* ]]
verdict "server keyUsage digitalSignature" "$e"
e=$(ext "$A/server.crt" basicConstraints)
[[ $e == *"CA:FALSE"* ]]
verdict "server basicConstraints CA:FALSE" "$e"
e=$(ext "$A/server.crt" authorityKeyIdentifier)
ski=$(ext "$A/ca.crt" subjectKeyIdentifier | sed 's/.*Identifier: *//; s/ *$//')
[[ -n $ski && $e == *"$ski"* ]]
verdict "server AKI is the CA's SKI" "$e / $ski"
check "server --days 90 is valid for 90 days" valid_for "$A/server.crt" 90
[ "$(openssl pkey -in "$A/server.key" -pubout)" = "$(openssl x509 -in "$A/server.crt" -noout -pubkey)" ]
verdict "server.key matches server.crt"

old_serial=$(serial_of "$A/server.crt")
run "$ca" server "$A" --name relay.example
if [ "$rc" = 0 ] && sanitizer_clean && grep -qi 'replac' "$tmp/err" &&
	[ "$(serial_of "$A/server.crt")" != "$old_serial" ]; then
	ok "server again rotates the certificate and says so"
else
	not_ok "server again rotates the certificate and says so"
fi
check "rotated server.crt verifies" verify -verify_hostname relay.example "$A/server.crt"
check "rotated server.key is still 0600" mode_is "$A/server.key" 600

# --- device ---

run "$ca" device "$A" alice
expect_ok "device issues a certificate"
token=$(cat "$tmp/out")
if [ "$(wc -l <"$tmp/out")" = 1 ] && [[ $token =~ ^[0-9a-f]{64}$ ]]; then
	ok "device prints one line: a 64-hex token"
else
	not_ok "device prints one line: a 64-hex token ($token)"
fi
check "alice.key is 0600" mode_is "$A/alice.key" 600
check "alice.key is PEM PKCS#8" grep -qx -- '-----BEGIN PRIVATE KEY-----' "$A/alice.key"
check "openssl verify -CAfile ca.crt alice.crt succeeds" verify "$A/alice.crt"
check "alice.crt verifies for purpose sslclient" verify -purpose sslclient "$A/alice.crt"
check_not "alice.crt is not a server certificate" verify -purpose sslserver "$A/alice.crt"
want=$(spki_token "$A/alice.crt")
[ "$token" = "$want" ]
verdict "token = SHA-256 of the certificate's DER SPKI (openssl)" "openssl: $want, got $token"
want=$(openssl pkey -in "$A/alice.key" -pubout -outform DER | sha256sum | cut -d' ' -f1)
[ "$token" = "$want" ]
verdict "token = SHA-256 of the key's DER SPKI" "openssl: $want, got $token"
check "alice.crt subject is CN = alice" subject_is "$A/alice.crt" "CN = alice"
e=$(ext "$A/alice.crt" extendedKeyUsage)
if [[ $e == *"TLS Web Client Authentication"* && $e != *Server* ]]; then
	ok "device EKU is clientAuth only"
else
	not_ok "device EKU is clientAuth only ($e)"
fi
e=$(ext "$A/alice.crt" keyUsage)
[[ $e == *"Digital Signature"* && $e != *"Certificate Sign"* ]]
verdict "device keyUsage digitalSignature" "$e"
e=$(ext "$A/alice.crt" basicConstraints)
[[ $e == *"CA:FALSE"* ]]
verdict "device basicConstraints CA:FALSE" "$e"
check "a device is valid for 825 days by default" valid_for "$A/alice.crt" 825

alice_sum=$(sha256sum <"$A/alice.key")
run "$ca" device "$A" alice
expect_fail "device refuses to overwrite an existing NAME" 1
check "the refused device left alice.key alone" test "$(sha256sum <"$A/alice.key")" = "$alice_sum"

# Bad names are usage errors and must not create anything anywhere.
long65=$(printf 'n%.0s' $(seq 65))
long64=$(printf 'n%.0s' $(seq 64))
for bad in '../x' 'ca' 'CA' 'server' 'Server' '' "$long65" '.hidden' 'a/b' 'a b' '..' 'x*' ; do
	run "$ca" device "$A" "$bad"
	expect_fail "device refuses the name '${bad:0:20}'" 2
done
check "no file escaped DIR" test ! -e "$tmp/x.key" -a ! -e "$tmp/x.crt"
run "$ca" device "$A" -- -dash
expect_ok "a name starting with '-' works after --"
run "$ca" device "$A" "$long64"
expect_ok "a 64-character name is accepted"
run "$ca" device "$A" "a.b_c-D9"
expect_ok "a name with . _ - digits and capitals is accepted"

old_umask=$(umask)
umask 000
run "$ca" device "$A" loose
umask "$old_umask"
expect_ok "device under umask 000"
check "keys stay 0600 even under umask 000" mode_is "$A/loose.key" 600
check "certificates are 0644 under umask 000" mode_is "$A/loose.crt" 644
check "index.json stays 0600 under umask 000" mode_is "$A/index.json" 600

run "$ca" device "$A" old --backdate 10 --days 1
expect_ok "device --backdate 10 --days 1"
if ! verify "$A/old.crt" && grep -q 'certificate has expired' "$tmp/verify"; then
	ok "a backdated device certificate fails verification as expired"
else
	not_ok "a backdated device certificate fails verification as expired ($(tr '\n' ' ' <"$tmp/verify"))"
fi
check "the backdated certificate is already past notAfter" expired "$A/old.crt"
check "--backdate 10 puts notBefore 10 days ago" dated "$A/old.crt" startdate -10
check "--backdate 10 --days 1 puts notAfter 9 days ago" dated "$A/old.crt" enddate -9
check "without --backdate notBefore is now" dated "$A/alice.crt" startdate 0

run "$ca" device "$tmp/nothing-here" eve
expect_fail "device on a DIR without a CA fails" 1
mkdir "$tmp/empty"
run "$ca" device "$tmp/empty" eve
expect_fail "device in a directory without ca.crt fails" 1

# --- index.json ---

if command -v python3 >/dev/null; then
	check "the index lists every issued certificate, one file each" python3 - "$A" "$token" <<'PY'
import json, os, subprocess, sys
d, token = sys.argv[1], sys.argv[2]
ix = json.load(open(d + "/index.json"))
assert ix["version"] == 2 and isinstance(ix["crl_number"], int) and ix["crl_number"] >= 1, ix
assert "certificates" not in ix, ix
certs = [json.load(open(d + "/certs/" + f)) for f in os.listdir(d + "/certs") if f.endswith(".json")]
for f in os.listdir(d + "/certs"):
    assert f == json.load(open(d + "/certs/" + f))["serial"] + ".json", f
kinds = [c["kind"] for c in certs]
assert kinds.count("server") == 2, kinds
for c in certs:
    for k in ("name", "kind", "serial", "issuer", "not_after", "revoked_at"):
        assert k in c, (k, c)
    assert c["revoked_at"] is None, c
alice = json.load(open(d + "/devices/alice.json"))
assert os.readlink(d + "/devices/alice.json") == "../certs/" + alice["serial"] + ".json"
assert alice["kind"] == "device" and alice["name"] == "alice", alice
assert alice["token"] == token, alice
ser = subprocess.run(["openssl", "x509", "-in", d + "/alice.crt", "-noout", "-serial"],
                     capture_output=True, text=True, check=True).stdout.strip().split("=")[1]
assert alice["serial"].upper() == ser.upper(), (alice["serial"], ser)
PY
else
	ok "index.json lists every issued certificate # SKIP python3 not installed"
fi
check_not "no temporary files are left behind" compgen -G "$A/.*.tmp"

# --- revocation and CRLs ---

run "$ca" device "$A" bob
expect_ok "device bob"
check "bob verifies with -crl_check before revocation" \
	verify -crl_check -CRLfile "$A/crl.pem" "$A/bob.crt"
crl_before=$(crl_number "$A/crl.pem")
run "$ca" revoke "$A" bob
expect_ok "revoke bob"
if ! verify -crl_check -CRLfile "$A/crl.pem" "$A/bob.crt" &&
	grep -q 'certificate revoked' "$tmp/verify"; then
	ok "after revoke, bob fails -crl_check with 'certificate revoked'"
else
	not_ok "after revoke, bob fails -crl_check with 'certificate revoked' ($(tr '\n' ' ' <"$tmp/verify"))"
fi
check "after revoke, alice still verifies with -crl_check" \
	verify -crl_check -CRLfile "$A/crl.pem" "$A/alice.crt"
check "the CRL verifies with the CA" openssl crl -in "$A/crl.pem" -CAfile "$A/ca.crt" -noout
bob_serial=$(serial_of "$A/bob.crt")
if openssl crl -in "$A/crl.pem" -noout -text | grep -q "Serial Number: $bob_serial"; then
	ok "the CRL lists bob's serial"
else
	not_ok "the CRL lists bob's serial"
fi
crl_after=$(crl_number "$A/crl.pem")
[ "$crl_before" -ge 1 ] && [ "$crl_after" -gt "$crl_before" ]
verdict "revoke increments crlNumber" "$crl_before -> $crl_after"
run "$ca" revoke "$A" bob
expect_fail "revoking bob twice is refused" 1
run "$ca" revoke "$A" nobody
expect_fail "revoking an unknown name is refused" 1
run "$ca" revoke "$A" ../x
expect_fail "revoke refuses a bad name" 2

run "$ca" crl "$A" --days 7
expect_ok "crl DIR --days 7"
crl_again=$(crl_number "$A/crl.pem")
[ "$crl_again" -gt "$crl_after" ]
verdict "crl increments crlNumber" "$crl_after -> $crl_again"
check_not "the rewritten CRL still revokes bob" verify -crl_check -CRLfile "$A/crl.pem" "$A/bob.crt"
check "crl --days 7 sets nextUpdate in 7 days" next_update_in "$A/crl.pem" 7

run "$ca" init "$B" --days 30
expect_ok "init a second CA"
rm -f "$B/crl.pem"
run "$ca" crl "$B"
expect_ok "crl on a fresh CA with nothing revoked"
run openssl crl -in "$B/crl.pem" -CAfile "$B/ca.crt" -noout
if [ "$rc" = 0 ] && grep -q 'verify OK' "$tmp/out" "$tmp/err"; then
	ok "the empty CRL is valid and signed by its CA"
else
	not_ok "the empty CRL is valid and signed by its CA"
fi
t=$(openssl crl -in "$B/crl.pem" -noout -text)
[[ $t == *"Version 2"* && $t == *"No Revoked Certificates"* && $t == *"X509v3 CRL Number"* &&
	$t == *"X509v3 Authority Key Identifier"* ]]
verdict "the empty CRL is v2 with crlNumber and AKI"
check "CRL nextUpdate defaults to 30 days" next_update_in "$B/crl.pem" 30
check_not "the other CA's CRL does not verify with the first CA" \
	openssl crl -in "$B/crl.pem" -CAfile "$A/ca.crt" -noout

# --- wrong CA ---

run "$ca" device "$B" mallory
expect_ok "device from the second CA"
check_not "a device of another CA fails verification against the first CA" verify "$B/mallory.crt"
check "it verifies against its own CA" openssl verify -CAfile "$B/ca.crt" "$B/mallory.crt"

# --- index version 1 is converted ---

if command -v python3 >/dev/null; then
	C=$tmp/c
	run "$ca" init "$C"
	run "$ca" device "$C" v1a
	run "$ca" device "$C" v1b
	run "$ca" revoke "$C" v1b
	# Rebuild the layout the old sealpush-ca wrote: every entry in index.json.
	python3 - "$C" <<'PY'
import json, os, shutil, sys
d = sys.argv[1]
certs = []
for f in sorted(os.listdir(d + "/certs")):
    e = json.load(open(d + "/certs/" + f))
    e.pop("issuer", None)
    certs.append(e)
ix = json.load(open(d + "/index.json"))
json.dump({"version": 1, "crl_number": ix["crl_number"], "certificates": certs},
          open(d + "/index.json", "w"))
shutil.rmtree(d + "/certs"); shutil.rmtree(d + "/devices"); os.unlink(d + "/revoked.log")
PY
	run "$ca" crl "$C"
	expect_ok "a version 1 index is converted on first use"
	grep -q "converted" "$tmp/err"
	verdict "the conversion is reported"
	t=$(openssl crl -in "$C/crl.pem" -noout -text)
	[[ $t == *"$(openssl x509 -in "$C/v1b.crt" -noout -serial | cut -d= -f2)"* ]]
	verdict "a revocation of the version 1 index stays in the CRL"
	run "$ca" revoke "$C" v1a
	expect_ok "revoke works on the converted index"
	run "$ca" device "$C" v1a
	expect_fail "the converted index still refuses an existing name" 1
else
	ok "a version 1 index is converted # SKIP python3 not installed"
fi

# --- intermediate CA, revoke-serial ---

I=$tmp/i
run "$ca" init "$I"
run "$ca" intermediate "$I" --days 100
expect_ok "intermediate"
im_serial=$(cat "$tmp/out")
check "intermediate.key is 0600" mode_is "$I/intermediate.key" 600
check "the intermediate verifies against the root" \
	openssl verify -CAfile "$I/ca.crt" "$I/intermediate.crt"
e=$(openssl x509 -in "$I/intermediate.crt" -noout -ext basicConstraints)
[[ $e == *critical* && $e == *"CA:TRUE, pathlen:0"* ]]
verdict "intermediate basicConstraints critical CA:TRUE pathlen:0" "$e"
[ "$(grep -c 'BEGIN X509 CRL' "$I/crl.pem")" = 2 ]
verdict "crl.pem holds the root's CRL and the intermediate's"
# A leaf signed by the intermediate (as the relay signs one), checked with both CRLs.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/leaf.key" \
	-subj /CN=leaf -out "$tmp/leaf.csr" 2>/dev/null
openssl x509 -req -in "$tmp/leaf.csr" -CA "$I/intermediate.crt" -CAkey "$I/intermediate.key" \
	-CAcreateserial -days 5 -out "$tmp/leaf.crt" 2>/dev/null
cat "$I/ca.crt" "$I/crl.pem" >"$tmp/store.pem"
check "a leaf of the intermediate verifies with -crl_check_all" \
	openssl verify -crl_check_all -CAfile "$tmp/store.pem" -untrusted "$I/intermediate.crt" \
	"$tmp/leaf.crt"
leaf_serial=$(openssl x509 -in "$tmp/leaf.crt" -noout -serial | cut -d= -f2)
run "$ca" revoke-serial "$I" "$leaf_serial"
expect_ok "revoke-serial of a leaf the intermediate issued"
cat "$I/ca.crt" "$I/crl.pem" >"$tmp/store.pem"
check_not "the revoked leaf fails -crl_check_all" \
	openssl verify -crl_check_all -CAfile "$tmp/store.pem" -untrusted "$I/intermediate.crt" \
	"$tmp/leaf.crt"
run "$ca" intermediate "$I"
expect_ok "intermediate again (rotation)"
[ "$(grep -c 'BEGIN X509 CRL' "$I/crl.pem")" = 3 ]
verdict "after rotation crl.pem holds the old intermediate's CRL too"
cat "$I/ca.crt" "$I/crl.pem" >"$tmp/store.pem"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/leaf2.key" \
	-subj /CN=leaf2 -out "$tmp/leaf2.csr" 2>/dev/null
openssl x509 -req -in "$tmp/leaf2.csr" -CA "$I/intermediates/$im_serial.crt" \
	-CAkey "$I/intermediates/$im_serial.key" -CAcreateserial -days 5 -out "$tmp/leaf2.crt" \
	2>/dev/null
check "a leaf of the old intermediate verifies before it is revoked" \
	openssl verify -crl_check_all -CAfile "$tmp/store.pem" \
	-untrusted "$I/intermediates/$im_serial.crt" "$tmp/leaf2.crt"
run "$ca" revoke-serial "$I" "$im_serial"
expect_ok "revoke-serial of the old intermediate"
cat "$I/ca.crt" "$I/crl.pem" >"$tmp/store.pem"
run openssl verify -crl_check_all -CAfile "$tmp/store.pem" \
	-untrusted "$I/intermediates/$im_serial.crt" "$tmp/leaf2.crt"
[ "$rc" != 0 ] && grep -q "revoked" "$tmp/out" "$tmp/err"
verdict "a leaf of a revoked intermediate fails -crl_check_all as revoked"
run "$ca" revoke-serial "$I" "$im_serial"
expect_fail "revoke-serial twice fails" 1
# A serial whose first byte is below 0x10 (one in 16): written "0XYZ..." by OpenSSL and in the
# entry file's name, typed "XYZ..." (or with more zeros) by a person. Devices are issued until
# one has such a serial.
Z=$tmp/z
run "$ca" init "$Z"
zs=""
for i in $(seq 1 200); do
	"$ca" device "$Z" "z$i" >/dev/null 2>&1 || break
	s=$(openssl x509 -in "$Z/z$i.crt" -noout -serial | cut -d= -f2)
	case "$s" in 0*) zs=$s zname=z$i && break ;; esac
done
if [ -n "$zs" ]; then
	run "$ca" revoke-serial "$Z" "$(echo "$zs" | sed 's/^0*//' | tr A-F a-f)"
	if [ "$rc" = 0 ] && grep -q "revoked device $zname " "$tmp/err"; then
		ok "revoke-serial finds a serial typed without its leading zero ($zs)"
	else
		not_ok "revoke-serial finds a serial typed without its leading zero ($zs): $(cat "$tmp/err")"
	fi
else
	not_ok "no serial below 0x10... in 200 devices"
fi
run "$ca" revoke-serial "$I" "xyz"
expect_fail "revoke-serial refuses a malformed serial" 2
root_serial=$(openssl x509 -in "$I/ca.crt" -noout -serial | cut -d= -f2)
run "$ca" revoke-serial "$I" "$root_serial"
expect_fail "revoke-serial refuses the root itself" 1
# However the serial is written: without leading zeros (the openssl CLI prints 0x03C9... as
# 3C9..., an odd number of digits) or with more of them.
run "$ca" revoke-serial "$I" "$(echo "$root_serial" | sed 's/^0*//')"
expect_fail "revoke-serial refuses the root without its leading zeros" 1
run "$ca" revoke-serial "$I" "000$root_serial"
expect_fail "revoke-serial refuses the root with leading zeros" 1
run "$ca" device "$I" intermediate
expect_fail "'intermediate' is not a device name" 2
run "$ca" enroll-code
expect_fail "enroll-code without --redis is a usage error" 2
run "$ca" enroll-code --redis unix:$tmp/no-such.sock
expect_fail "enroll-code without a reachable redis fails" 1
run "$ca" enroll-code --redis unix:$tmp/no-such.sock --expires 0s
expect_fail "enroll-code refuses an expiry under 1s" 2

echo "1..$n"
[ "$failed" = 0 ]
