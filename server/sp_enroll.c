/*
 * sp_enroll.c: device enrollment (sp_enroll.h, PROTOCOL.md 16): the strict CSR check, the
 * signing with the intermediate CA, the Redis scripts for the rate limit and the code, and
 * the answer on the provider door.
 *
 * Threads: srv->enroll (the CA) belongs to the main thread, which swaps it under e->lock on
 * reload; a worker takes references to the certificate and key under the lock and signs with
 * them outside it. Everything else here runs on the worker that owns the request.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_b64.h"
#include "sp_conn.h"
#include "sp_enroll.h"
#include "sp_enrollcode.h"
#include "sp_identity.h"
#include "sp_log.h"
#include "sp_provider.h"
#include "sp_time.h"
#include "sp_tls.h"
#include "sp_worker.h"

#define RATE_WINDOW_MS  60000
#define RATE_KEY_PREFIX "sp:enroll:rate:"
#define SERIAL_BITS     128
#define RETRY_AFTER_S   60

/* KEYS[1] the address's counter; ARGV[1] the window in ms. Returns the count in the window. */
static const char rate_lua[] =
        "local n = redis.call('INCR', KEYS[1]) "
        "if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n";

/* KEYS[1] the code's key; ARGV: now (Unix s), the code's limit per minute. Returns {1, label}
 * (one use taken), {0} unknown or used up, {-1} expired, {-2} over the code's rate. */
static const char use_lua[] =
        "local h = redis.call('HMGET', KEYS[1], 'uses', 'exp', 'label', 'ws', 'wn') "
        "if not h[1] then return {0} end "
        "local now = tonumber(ARGV[1]) "
        "if tonumber(h[2]) <= now then redis.call('DEL', KEYS[1]) return {-1} end "
        "local ws, wn = tonumber(h[4]) or 0, tonumber(h[5]) or 0 "
        "if now >= ws + 60 then ws = now wn = 0 end "
        "if wn >= tonumber(ARGV[2]) then return {-2} end "
        "local uses = tonumber(h[1]) - 1 "
        "if uses <= 0 then redis.call('DEL', KEYS[1]) "
        "else redis.call('HSET', KEYS[1], 'uses', uses, 'ws', ws, 'wn', wn + 1) end "
        "return {1, h[3]}";

struct sp_enroll {
	pthread_mutex_t lock;
	X509 *ca; /* the intermediate, or NULL when enrollment is off */
	EVP_PKEY *cakey;
	char why[160]; /* why it is off */
};

/* One request on its way through Redis. */
struct enroll_op {
	sp_worker_t *w;
	sp_preq_t *r;
	EVP_PKEY *key;
	char code_key[SP_ENROLL_KEY_LEN + 1];
};

/* ---- the CA --------------------------------------------------------------------------------- */

static X509 *read_cert(const char *file, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(file, "r");
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	if (!x)
		snprintf(err, errlen, "cannot read enroll_ca_cert %s", file);
	ERR_clear_error();
	return x;
}

static EVP_PKEY *read_key(const char *file, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(file, "r");
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	if (!k)
		snprintf(err, errlen, "cannot read enroll_ca_key %s (unencrypted PEM)", file);
	ERR_clear_error();
	return k;
}

/* Loads the files into e (replacing what it held). Returns 0, or -1 with err set: e is then
 * off. A CA that does not verify against the client CA and CRLs is loaded as off (logged)
 * and returns 0. */
static int load_ca(sp_server_t *srv, sp_enroll_t *e, char *err, size_t errlen)
{
	const sp_server_config_t *cfg = &srv->cfg;
	X509 *x = read_cert(cfg->enroll_ca_cert, err, errlen), *old;
	EVP_PKEY *k = x ? read_key(cfg->enroll_ca_key, err, errlen) : NULL, *oldk;
	char why[160] = "";
	int r = 0;

	if (!x || !k) {
		snprintf(why, sizeof(why), "%s", err);
		r = -1;
	} else if (X509_check_private_key(x, k) != 1) {
		snprintf(err, errlen, "enroll_ca_key does not match enroll_ca_cert");
		snprintf(why, sizeof(why), "%s", err);
		r = -1;
	} else if (sp_tls_verify_ca(srv, x, why, sizeof(why)) < 0) {
		SP_LOG(SP_LOG_ERROR, "enroll_ca_unusable",
		       "file=%s reason=\"%s\" msg=\"enrollment is off until a reload brings a good "
		       "intermediate CA\"",
		       cfg->enroll_ca_cert, why);
	}
	ERR_clear_error();
	if (r < 0 || why[0]) {
		X509_free(x);
		EVP_PKEY_free(k);
		x = NULL;
		k = NULL;
	}
	pthread_mutex_lock(&e->lock);
	old = e->ca;
	oldk = e->cakey;
	e->ca = x;
	e->cakey = k;
	snprintf(e->why, sizeof(e->why), "%s", why);
	pthread_mutex_unlock(&e->lock);
	X509_free(old);
	EVP_PKEY_free(oldk);
	return r;
}

int sp_enroll_start(sp_server_t *srv, char *err, size_t errlen)
{
	const sp_server_config_t *cfg = &srv->cfg;
	sp_enroll_t *e;

	srv->enroll = NULL;
	if (!cfg->enroll_ca_cert || !cfg->enroll_ca_cert[0])
		return 0;
	if (!cfg->enroll_ca_key || !cfg->enroll_ca_key[0]) {
		snprintf(err, errlen, "enroll_ca_cert needs enroll_ca_key");
		return -1;
	}
	if (!cfg->provider_listen || !cfg->provider_listen[0]) {
		snprintf(err, errlen,
		         "enroll_ca_cert needs provider_listen (enrollment is served "
		         "on the provider door)");
		return -1;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&e->lock, NULL);
	srv->enroll = e;
	if (load_ca(srv, e, err, errlen) < 0) {
		sp_enroll_stop(srv);
		return -1;
	}
	if (e->ca)
		SP_LOG(SP_LOG_INFO, "enroll_ready", "ca=%s days=%lld", cfg->enroll_ca_cert,
		       (long long)cfg->enroll_cert_days);
	return 0;
}

void sp_enroll_reload(sp_server_t *srv)
{
	char err[256];

	if (!srv->enroll)
		return;
	if (load_ca(srv, srv->enroll, err, sizeof(err)) < 0)
		SP_LOG(SP_LOG_ERROR, "enroll_reload_failed", "msg=\"%s; enrollment is off\"", err);
	else if (srv->enroll->ca)
		SP_LOG(SP_LOG_INFO, "enroll_reloaded", "ca=%s", srv->cfg.enroll_ca_cert);
}

void sp_enroll_stop(sp_server_t *srv)
{
	sp_enroll_t *e = srv->enroll;

	if (!e)
		return;
	X509_free(e->ca);
	EVP_PKEY_free(e->cakey);
	pthread_mutex_destroy(&e->lock);
	free(e);
	srv->enroll = NULL;
}

/* References to the current CA, or NULL (off) with *why. The caller frees both. */
static X509 *take_ca(sp_server_t *srv, EVP_PKEY **key, char *why, size_t whylen)
{
	sp_enroll_t *e = srv->enroll;
	X509 *x = NULL;

	*key = NULL;
	if (!e) {
		snprintf(why, whylen, "enrollment is not enabled on this relay");
		return NULL;
	}
	pthread_mutex_lock(&e->lock);
	if (e->ca && X509_up_ref(e->ca) == 1) {
		x = e->ca;
		if (EVP_PKEY_up_ref(e->cakey) == 1) {
			*key = e->cakey;
		} else {
			X509_free(x);
			x = NULL;
		}
	}
	snprintf(why, whylen, "the enrollment CA is unusable: %s", e->why[0] ? e->why : "?");
	pthread_mutex_unlock(&e->lock);
	if (x && X509_cmp_time(X509_get0_notAfter(x), NULL) <= 0) {
		snprintf(why, whylen, "the enrollment CA has expired");
		X509_free(x);
		EVP_PKEY_free(*key);
		*key = NULL;
		x = NULL;
	}
	return x;
}

/* ---- pure parts ----------------------------------------------------------------------------- */

static bool all_hex(const unsigned char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (OPENSSL_hexchar2int(s[i]) < 0)
			return false;
	return true;
}

int sp_enroll_check_csr(const uint8_t *der, size_t len, EVP_PKEY **key, const char **why)
{
	const unsigned char *p = der;
	unsigned char *re = NULL;
	X509_REQ *req = NULL;
	EVP_PKEY *pk;
	const X509_NAME *subj;
	char group[64];
	size_t glen = 0;
	int r, relen, sig;

	*key = NULL;
	if (len == 0 || len > SP_ENROLL_CSR_MAX) {
		*why = "the CSR is empty or too large";
		return -SP_ENROLL_R_CSR_DER;
	}
	req = d2i_X509_REQ(NULL, &p, (long)len);
	if (!req || p != der + len) {
		*why = "not a CSR (PKCS #10, DER)";
		r = -SP_ENROLL_R_CSR_DER;
		goto out;
	}
	relen = i2d_X509_REQ(req, &re);
	if (relen < 0 || (size_t)relen != len || memcmp(re, der, len) != 0) {
		*why = "the CSR is not in exact DER";
		r = -SP_ENROLL_R_CSR_DER;
		goto out;
	}
	if (X509_REQ_get_version(req) != X509_REQ_VERSION_1) {
		*why = "the CSR must be version 1";
		r = -SP_ENROLL_R_CSR_DER;
		goto out;
	}
	pk = X509_REQ_get0_pubkey(req);
	if (!pk || !EVP_PKEY_is_a(pk, "EC")) {
		*why = "wrong key type: only EC P-256 keys are enrolled";
		r = -SP_ENROLL_R_KEY_TYPE;
		goto out;
	}
	if (EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) != 1 ||
	    strcmp(group, "prime256v1") != 0 || EVP_PKEY_get_bits(pk) != 256) {
		*why = "wrong key size: only EC P-256 keys are enrolled";
		r = -SP_ENROLL_R_KEY_SIZE;
		goto out;
	}
	sig = X509_REQ_get_signature_nid(req);
	if ((sig != NID_ecdsa_with_SHA256 && sig != NID_ecdsa_with_SHA384 &&
	     sig != NID_ecdsa_with_SHA512) ||
	    X509_REQ_verify(req, pk) != 1) {
		*why = "the CSR's signature does not verify (tampered, or not ECDSA with SHA-2)";
		r = -SP_ENROLL_R_SIGNATURE;
		goto out;
	}
	if (X509_REQ_get_attr_count(req) != 0) {
		*why = "the CSR carries attributes or extension requests; the relay sets every "
		       "extension itself";
		r = -SP_ENROLL_R_EXTENSIONS;
		goto out;
	}
	subj = X509_REQ_get_subject_name(req);
	if (X509_NAME_entry_count(subj) > 1 ||
	    (X509_NAME_entry_count(subj) == 1 &&
	     OBJ_obj2nid(X509_NAME_ENTRY_get_object(X509_NAME_get_entry(subj, 0))) !=
	             NID_commonName)) {
		*why = "the subject may be empty or one CN, nothing else";
		r = -SP_ENROLL_R_SUBJECT;
		goto out;
	}
	if (X509_NAME_entry_count(subj) == 1) {
		const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, 0));
		int n = ASN1_STRING_length(cn);

		if (n > 64 || (n == SP_TOKEN_HEX_LEN && all_hex(ASN1_STRING_get0_data(cn), n))) {
			*why = "the subject cannot pick a token: a token is the hash of the key";
			r = -SP_ENROLL_R_SUBJECT;
			goto out;
		}
	}
	if (EVP_PKEY_up_ref(pk) != 1) {
		*why = "out of memory";
		r = -SP_ENROLL_R_INTERNAL;
		goto out;
	}
	*key = pk;
	r = 0;
out:
	OPENSSL_free(re);
	X509_REQ_free(req);
	ERR_clear_error();
	return r;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = ext && X509_add_ext(x, ext, -1);

	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

int sp_enroll_sign(X509 *ca, EVP_PKEY *cakey, EVP_PKEY *key, int64_t days, time_t now, X509 **out)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	BIGNUM *bn = BN_new();
	ASN1_INTEGER *serial = NULL;
	uint8_t token[SP_TOKEN_LEN];
	char hex[SP_TOKEN_HEX_LEN + 1];
	time_t nb = now - SP_ENROLL_SKEW_S;
	X509V3_CTX ctx;
	int r = -1;

	*out = NULL;
	if (!x || !name || !bn || sp_token_from_pkey(key, token) < 0)
		goto out;
	sp_token_hex(token, hex);
	do {
		if (!BN_rand(bn, SERIAL_BITS, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
			goto out;
	} while (BN_is_zero(bn));
	serial = BN_to_ASN1_INTEGER(bn, NULL);
	if (!serial || !X509_set_version(x, X509_VERSION_3) || !X509_set_serialNumber(x, serial) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)hex, -1,
	                                -1, 0) ||
	    !X509_set_subject_name(x, name) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca)) ||
	    !X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &nb) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, SP_ENROLL_SKEW_S, &nb) ||
	    !X509_set_pubkey(x, key))
		goto out;
	/* Never past the CA: the chain would stop verifying before the certificate does. */
	if (ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0 &&
	    !X509_set1_notAfter(x, X509_get0_notAfter(ca)))
		goto out;
	X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
	if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(x, &ctx, NID_ext_key_usage, "clientAuth") < 0 ||
	    add_ext(x, &ctx, NID_subject_key_identifier, "hash") < 0)
		goto out;
	/* The CA's key id, when it has one (sealpush-ca's always do). */
	if (X509_get0_subject_key_id(ca) &&
	    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") < 0)
		goto out;
	if (X509_sign(x, cakey, EVP_sha256()) <= 0)
		goto out;
	*out = x;
	x = NULL;
	r = 0;
out:
	ERR_clear_error();
	ASN1_INTEGER_free(serial);
	BN_free(bn);
	X509_NAME_free(name);
	X509_free(x);
	return r;
}

/* ---- the request ---------------------------------------------------------------------------- */

static void refuse(sp_worker_t *w, sp_preq_t *r, int reason, int status, const char *why)
{
	sp_metric_inc(&w->metrics, SP_M_ENROLL_REFUSED + (unsigned)reason - 1);
	SP_LOG(SP_LOG_INFO, "enroll_refused", "status=%d reason=\"%s\"", status, why);
	if (status == 429 || status == 503)
		sp_provider_req_retry_after(r, status == 429 ? RETRY_AFTER_S : 1);
	sp_provider_req_answer(r, status, NULL, why, strlen(why));
}

static void op_free(struct enroll_op *op)
{
	if (!op)
		return;
	EVP_PKEY_free(op->key);
	free(op);
}

/* The certificate, then the CA's: what the device sends as its chain. */
static char *chain_pem(X509 *leaf, X509 *ca)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *s = NULL;
	long n;

	if (b && PEM_write_bio_X509(b, leaf) && PEM_write_bio_X509(b, ca) &&
	    (n = BIO_get_mem_data(b, &data)) > 0 && (s = malloc((size_t)n + 1))) {
		memcpy(s, data, (size_t)n);
		s[n] = '\0';
	}
	BIO_free(b);
	return s;
}

static void issue(struct enroll_op *op, const char *label)
{
	sp_worker_t *w = op->w;
	sp_server_t *srv = w->srv;
	EVP_PKEY *cakey = NULL;
	X509 *ca, *cert = NULL;
	char why[200], tok[SP_TOKEN_HEX_LEN + 1], shorttok[SP_TOKEN_SHORT_LEN + 1], na[32];
	char *pem = NULL, *serial = NULL, *body = NULL;
	uint8_t token[SP_TOKEN_LEN];
	BIGNUM *bn = NULL;
	json_t *j = NULL;
	struct tm tm;

	ca = take_ca(srv, &cakey, why, sizeof(why));
	if (!ca) {
		refuse(w, op->r, SP_ENROLL_R_CA, 503, why);
		return;
	}
	if (sp_enroll_sign(ca, cakey, op->key, srv->cfg.enroll_cert_days,
	                   (time_t)(sp_time_wall_ms() / 1000), &cert) < 0 ||
	    sp_token_from_cert(cert, token) < 0 || !(pem = chain_pem(cert, ca)) ||
	    !(bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL)) ||
	    !(serial = BN_bn2hex(bn)) || !ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm)) {
		refuse(w, op->r, SP_ENROLL_R_INTERNAL, 500, "signing the certificate failed");
		goto out;
	}
	sp_token_hex(token, tok);
	sp_token_short(token, shorttok);
	strftime(na, sizeof(na), "%Y-%m-%dT%H:%M:%SZ", &tm);
	j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "token", tok, "serial", serial, "not_after", na,
	              "certificate", pem, "label", label);
	body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (!body) {
		refuse(w, op->r, SP_ENROLL_R_INTERNAL, 500, "out of memory");
		goto out;
	}
	sp_metric_inc(&w->metrics, SP_M_ENROLL_ISSUED);
	SP_LOG(SP_LOG_INFO, "enrolled", "token=%s serial=%s not_after=%s label=\"%s\"", shorttok,
	       serial, na, label);
	sp_provider_req_answer(op->r, 201, "application/json", body, strlen(body));
out:
	free(body);
	json_decref(j);
	OPENSSL_free(serial);
	BN_free(bn);
	free(pem);
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(cakey);
}

static void on_use(redisAsyncContext *ac, void *reply, void *arg)
{
	struct enroll_op *op = arg;
	const redisReply *rep = reply;
	long long st;

	(void)ac;
	op->r = sp_provider_req_resume(op->r);
	if (!op->r)
		goto out;
	op->w->now = sp_now_ms();
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER) {
		refuse(op->w, op->r, SP_ENROLL_R_STORE, 503, "the code store is unavailable");
		goto out;
	}
	st = rep->element[0]->integer;
	if (st == 0)
		refuse(op->w, op->r, SP_ENROLL_R_CODE, 403, "unknown or used enrollment code");
	else if (st == -1)
		refuse(op->w, op->r, SP_ENROLL_R_CODE_EXPIRED, 403,
		       "the enrollment code has expired");
	else if (st == -2)
		refuse(op->w, op->r, SP_ENROLL_R_RATE_CODE, 429,
		       "too many enrollments with this code; try later");
	else if (st == 1 && rep->elements == 2 && rep->element[1]->type == REDIS_REPLY_STRING &&
	         sp_enroll_label_valid(rep->element[1]->str, rep->element[1]->len))
		issue(op, rep->element[1]->str);
	else
		refuse(op->w, op->r, SP_ENROLL_R_STORE, 503, "a malformed code record");
out:
	op_free(op);
}

static void on_rate(redisAsyncContext *ac, void *reply, void *arg)
{
	struct enroll_op *op = arg;
	const redisReply *rep = reply;
	char now[24], limit[24];

	op->r = sp_provider_req_resume(op->r);
	if (!op->r)
		goto fail;
	op->w->now = sp_now_ms();
	if (!rep || rep->type != REDIS_REPLY_INTEGER) {
		refuse(op->w, op->r, SP_ENROLL_R_STORE, 503, "the code store is unavailable");
		goto fail;
	}
	if (rep->integer > op->w->srv->cfg.enroll_rate_per_addr) {
		refuse(op->w, op->r, SP_ENROLL_R_RATE_ADDR, 429,
		       "too many enrollments from this address; try later");
		goto fail;
	}
	snprintf(now, sizeof(now), "%llu", (unsigned long long)(sp_time_wall_ms() / 1000));
	snprintf(limit, sizeof(limit), "%lld", (long long)op->w->srv->cfg.enroll_rate_per_code);
	if (redisAsyncCommand(ac, on_use, op, "EVAL %s 1 %s %s %s", use_lua, op->code_key, now,
	                      limit) != REDIS_OK) {
		refuse(op->w, op->r, SP_ENROLL_R_STORE, 503, "the code store is unavailable");
		goto fail;
	}
	sp_provider_req_wait(op->r);
	return;
fail:
	op_free(op);
}

void sp_enroll_request(sp_worker_t *w, sp_preq_t *r)
{
	size_t len = 0;
	const uint8_t *body = sp_provider_req_body(r, &len);
	json_t *j = NULL;
	json_error_t jerr;
	const char *code, *csr, *why = NULL;
	uint8_t der[SP_ENROLL_CSR_MAX];
	long dlen;
	char addr[64], rkey[sizeof(RATE_KEY_PREFIX) + 64], window[16], cawhy[200];
	struct enroll_op *op = NULL;
	redisAsyncContext *ac;
	EVP_PKEY *cakey = NULL;
	X509 *ca;
	int rc;

	if (strcmp(sp_provider_req_method(r), "POST") != 0) {
		refuse(w, r, SP_ENROLL_R_METHOD, 405, "only POST to /enroll");
		return;
	}
	ca = take_ca(w->srv, &cakey, cawhy, sizeof(cawhy));
	X509_free(ca);
	EVP_PKEY_free(cakey);
	if (!ca) {
		refuse(w, r, w->srv->enroll ? SP_ENROLL_R_CA : SP_ENROLL_R_DISABLED,
		       w->srv->enroll ? 503 : 404, cawhy);
		return;
	}
	j = body ? json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
	code = json_string_value(json_object_get(j, "code"));
	csr = json_string_value(json_object_get(j, "csr"));
	if (!json_is_object(j) || !code || !csr) {
		refuse(w, r, SP_ENROLL_R_REQUEST, 400,
		       "expected JSON {\"code\": CODE, \"csr\": base64url DER}");
		goto out;
	}
	dlen = sp_b64url_decode(csr, strlen(csr), der, sizeof(der));
	if (dlen <= 0) {
		refuse(w, r, SP_ENROLL_R_CSR_DER, 400, "csr: not base64url of at most 2048 bytes");
		goto out;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		refuse(w, r, SP_ENROLL_R_INTERNAL, 500, "out of memory");
		goto out;
	}
	op->w = w;
	op->r = r;
	rc = sp_enroll_check_csr(der, (size_t)dlen, &op->key, &why);
	if (rc < 0) {
		refuse(w, r, -rc, 400, why);
		goto out;
	}
	if (!sp_enroll_code_valid(code, strlen(code))) {
		refuse(w, r, SP_ENROLL_R_CODE, 403, "unknown or used enrollment code");
		goto out;
	}
	if (sp_enroll_code_key(code, strlen(code), op->code_key) < 0) {
		refuse(w, r, SP_ENROLL_R_INTERNAL, 500, "hashing the code failed");
		goto out;
	}
	ac = sp_provider_redis(r);
	if (!ac || sp_provider_req_peer(r, addr, sizeof(addr)) < 0) {
		refuse(w, r, SP_ENROLL_R_STORE, 503, "the code store is unavailable");
		goto out;
	}
	snprintf(rkey, sizeof(rkey), RATE_KEY_PREFIX "%s", addr);
	snprintf(window, sizeof(window), "%d", RATE_WINDOW_MS);
	if (redisAsyncCommand(ac, on_rate, op, "EVAL %s 1 %s %s", rate_lua, rkey, window) !=
	    REDIS_OK) {
		refuse(w, r, SP_ENROLL_R_STORE, 503, "the code store is unavailable");
		goto out;
	}
	sp_provider_req_wait(r);
	op = NULL;
out:
	op_free(op);
	json_decref(j);
}

/* ---- renewal over the device's connection --------------------------------------------------- */

bool sp_enroll_enabled(const sp_server_t *srv)
{
	return srv->enroll != NULL;
}

static void renew_refuse(sp_conn_t *c, const sp_frame_t *f, int reason, unsigned code,
                         const char *why)
{
	char tok[SP_TOKEN_SHORT_LEN + 1];

	sp_metric_inc(&c->w->metrics, SP_M_ENROLL_REFUSED + (unsigned)reason - 1);
	sp_token_short(c->token, tok);
	SP_LOG(SP_LOG_INFO, "renew_refused", "token=%s reason=\"%s\"", tok, why);
	sp_conn_error(c, code, false, why, f);
}

void sp_enroll_renew(sp_conn_t *c, const sp_frame_t *f)
{
	sp_worker_t *w = c->w;
	sp_server_t *srv = w->srv;
	EVP_PKEY *key = NULL, *cakey = NULL;
	X509 *ca = NULL, *cert = NULL;
	char why[200], *pem = NULL, tok[SP_TOKEN_SHORT_LEN + 1];
	const char *cwhy = NULL;
	uint8_t token[SP_TOKEN_LEN];
	const ASN1_TIME *na;
	time_t na_t = 0;
	struct tm tm;
	int rc;

	if (!srv->enroll) {
		renew_refuse(c, f, SP_ENROLL_R_DISABLED, SP_ERR_RENEW_UNAVAILABLE,
		             "this relay does not renew certificates");
		return;
	}
	if (c->renew_t && w->now - c->renew_t < (uint64_t)srv->cfg.renew_min_interval) {
		renew_refuse(c, f, SP_ENROLL_R_RENEW_TOO_SOON, SP_ERR_RENEW_REFUSED,
		             "renewed a moment ago; try later");
		return;
	}
	rc = sp_enroll_check_csr(f->csr, f->csr_len, &key, &cwhy);
	if (rc < 0) {
		renew_refuse(c, f, -rc, SP_ERR_RENEW_REFUSED, cwhy);
		return;
	}
	ca = take_ca(srv, &cakey, why, sizeof(why));
	if (!ca) {
		renew_refuse(c, f, SP_ENROLL_R_CA, SP_ERR_RENEW_UNAVAILABLE, why);
		goto out;
	}
	if (sp_enroll_sign(ca, cakey, key, srv->cfg.enroll_cert_days,
	                   (time_t)(sp_time_wall_ms() / 1000), &cert) < 0 ||
	    sp_token_from_cert(cert, token) < 0 || !(pem = chain_pem(cert, ca)) ||
	    strlen(pem) > SP_CHAIN_MAX) {
		renew_refuse(c, f, SP_ENROLL_R_INTERNAL, SP_ERR_RENEW_UNAVAILABLE,
		             "signing the certificate failed");
		goto out;
	}
	na = X509_get0_notAfter(cert);
	if (ASN1_TIME_to_tm(na, &tm))
		na_t = timegm(&tm);
	{
		sp_frame_t r = {.type = SP_RENEWED,
		                .fields = SP_BIT(SP_F_MSG_ID) | SP_BIT(SP_F_CERT_CHAIN) |
		                          SP_BIT(SP_F_NOT_AFTER) | SP_BIT(SP_F_TOKEN),
		                .msg_id = f->msg_id,
		                .cert_chain = (const uint8_t *)pem,
		                .cert_chain_len = (uint32_t)strlen(pem),
		                .not_after =
		                        na_t > 0 && na_t <= (time_t)UINT32_MAX ? (uint32_t)na_t : 0,
		                .token = token};

		c->renew_t = w->now ? w->now : 1;
		sp_metric_inc(&w->metrics, SP_M_ENROLL_RENEWED);
		sp_token_short(c->token, tok);
		SP_LOG(SP_LOG_INFO, "renewed", "token=%s same_key=%s not_after=%lld", tok,
		       memcmp(token, c->token, SP_TOKEN_LEN) == 0 ? "yes" : "no", (long long)na_t);
		sp_conn_send(c, &r);
	}
out:
	free(pem);
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(cakey);
	EVP_PKEY_free(key);
}
