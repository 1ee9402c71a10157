/*
 * sp_tls.c: the relay's TLS context, and the OpenSSL transport (sp_transport.h): the handshake,
 * the hand-off to the record layer, and SSL_read/SSL_write for a connection that could not be
 * handed off. The only file of the daemon, with sp_record.c, that calls OpenSSL's TLS.
 *
 * The context: TLS 1.3 only; a client certificate from the configured CA is mandatory; the CRL
 * (if configured) is checked for every chain; ALPN must offer "sealpush/1" (a ClientHello
 * without ALPN at all is refused by the client-hello callback, since OpenSSL calls the ALPN
 * callback only when the extension is present). Sessions resume through stateless TLS 1.3
 * tickets, so the server keeps no session cache, unless tls_session_cache > 0: then tickets
 * are stateful (an id into a bounded cache of that many sessions; cheaper to resume, costs
 * memory per session). Because a resumed session skips chain verification, sp_tls_established()
 * checks a resumed peer's certificate against the current CRL and its validity itself.
 *
 * Reload (SIGHUP) builds a whole new context from the files and swaps it in under the lock;
 * connections keep the context they were made with (SSL_new() holds a reference), new ones
 * get the new one. A reload that fails keeps the old context.
 */
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sp_identity.h"
#include "sp_tlsgroup.h"
#include "sp_log.h"
#include "sp_server.h"
#include "sp_tls.h"
#include "sp_transport.h"

/* The server's TLS state: one context for new connections, and the CRLs it checks. */
struct sp_tls_server {
	pthread_mutex_t lock;
	SSL_CTX *ctx;              /* current context; SSL_new() takes its own reference */
	STACK_OF(X509_CRL) * crls; /* current CRLs (also in ctx's store), or NULL */
};

/* Handshake-time capture for the record-layer hand-off (freed after the handshake). */
struct sp_hs {
	uint8_t client_secret[48];
	uint8_t server_secret[48];
	uint8_t secret_len;
	uint8_t have;         /* bit 0: client secret, bit 1: server secret */
	uint32_t app_records; /* records the server wrote under its application key */
};

static const unsigned char alpn_v1[] = "\x0asealpush/1";

static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
	const unsigned char *p;
	size_t len;

	(void)arg;
	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p,
	                               &len)) {
		sp_tio_t *t = SSL_get_app_data(ssl);

		if (t)
			t->hs_cause = SP_HS_NO_ALPN;
		*al = SSL_AD_NO_APPLICATION_PROTOCOL;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned char *sel;

	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, alpn_v1, sizeof(alpn_v1) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED) {
		sp_tio_t *t = SSL_get_app_data(ssl);

		if (t)
			t->hs_cause = SP_HS_NO_ALPN;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int unhex(const char *h, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		int hi = OPENSSL_hexchar2int((unsigned char)h[2 * i]);
		int lo = OPENSSL_hexchar2int((unsigned char)h[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/*
 * The application traffic secrets, for the record-layer hand-off. OpenSSL hands them out
 * through the key-log callback as "LABEL <client_random hex> <secret hex>"; they are kept in
 * the connection's handshake state only, never logged or written anywhere.
 */
static void keylog_cb(const SSL *ssl, const char *line)
{
	sp_tio_t *t = SSL_get_app_data(ssl);
	const char *sp1, *hex;
	size_t hexlen;
	uint8_t *dst;
	int bit;

	if (!t || !t->hs)
		return;
	if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24)) {
		dst = t->hs->client_secret;
		bit = 1;
	} else if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24)) {
		dst = t->hs->server_secret;
		bit = 2;
	} else {
		return;
	}
	sp1 = strchr(line + 24, ' ');
	if (!sp1)
		return;
	hex = sp1 + 1;
	hexlen = strlen(hex);
	if ((hexlen != 64 && hexlen != 96) || unhex(hex, hexlen / 2, dst) < 0)
		return;
	t->hs->secret_len = (uint8_t)(hexlen / 2);
	t->hs->have |= (uint8_t)bit;
}

/* Counts the records written once the server's application key is in use (the tickets), so
 * the record layer continues with the right sequence number. */
static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
	sp_tio_t *t = SSL_get_app_data(ssl);

	(void)version;
	(void)buf;
	(void)len;
	(void)arg;
	if (write_p && content_type == SSL3_RT_HEADER && t && t->hs && (t->hs->have & 2))
		t->hs->app_records++;
}

static enum sp_handshake_cause cause_of_verify_error(int err)
{
	switch (err) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return SP_HS_EXPIRED;
	case X509_V_ERR_CERT_REVOKED:
		return SP_HS_REVOKED;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		return SP_HS_UNKNOWN_CA;
	default:
		return SP_HS_BAD_CERT;
	}
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl;
	sp_tio_t *t;

	if (ok)
		return ok;
	ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	t = ssl ? SSL_get_app_data(ssl) : NULL;
	if (t && t->hs_cause == SP_HS_OTHER)
		t->hs_cause = (uint8_t)cause_of_verify_error(X509_STORE_CTX_get_error(x));
	return ok;
}

static void ssl_errors(char *err, size_t errlen, const char *what, const char *file)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s %s: %s", what, file, e ? buf : "failed");
	ERR_clear_error();
}

/* Reads every CRL in b (PEM, one after the other). Returns them (at least one), or NULL. */
static STACK_OF(X509_CRL) * read_crls(BIO *b)
{
	STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
	X509_CRL *crl;

	while (crls && sk_X509_CRL_num(crls) < SP_TLS_MAX_CRLS &&
	       (crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_CRL_push(crls, crl)) {
			X509_CRL_free(crl);
			break;
		}
	}
	ERR_clear_error(); /* the end of the file reads as "no start line" */
	if (crls && sk_X509_CRL_num(crls) == 0) {
		sk_X509_CRL_free(crls);
		crls = NULL;
	}
	return crls;
}

static void free_crls(STACK_OF(X509_CRL) * crls)
{
	sk_X509_CRL_pop_free(crls, X509_CRL_free);
}

static STACK_OF(X509_CRL) * load_crls(const char *file, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(file, "r");
	STACK_OF(X509_CRL) * crls;

	if (!b) {
		ssl_errors(err, errlen, "cannot open CRL", file);
		return NULL;
	}
	crls = read_crls(b);
	BIO_free(b);
	if (!crls)
		snprintf(err, errlen, "cannot read CRL %s: no PEM CRL in it", file);
	return crls;
}

/*
 * The first CRL must be signed by the client CA (the root); the others are the intermediate
 * CAs' (sealpush-ca writes one per intermediate), which OpenSSL checks against the chain's
 * intermediate at each handshake (a CRL that does not verify fails the handshake, it never
 * lets one through). A stale one is only a warning here (handshakes will then fail with a CRL
 * error, which the metrics count).
 */
static int check_crls(X509_STORE *store, STACK_OF(X509_CRL) * crls, const char *file, char *err,
                      size_t errlen)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
	X509_CRL *first = sk_X509_CRL_value(crls, 0);
	bool signed_ok = false;

	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (ca &&
		    X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(first)) == 0 &&
		    X509_CRL_verify(first, X509_get0_pubkey(ca)) == 1)
			signed_ok = true;
	}
	ERR_clear_error();
	if (!signed_ok) {
		snprintf(err, errlen, "CRL %s is not signed by the client CA", file);
		return -1;
	}
	for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
		const ASN1_TIME *next = X509_CRL_get0_nextUpdate(sk_X509_CRL_value(crls, i));

		if (next && X509_cmp_time(next, NULL) < 0)
			SP_LOG(SP_LOG_WARN, "crl_stale",
			       "file=%s index=%d msg=\"the CRL's nextUpdate has passed: "
			       "handshakes will fail until it is renewed (sealpush-ca crl)\"",
			       file, i);
	}
	return 0;
}

/* Builds a server TLS context from the configured files, or with the CRLs `given` (taken over
 * whatever the result) instead of the file's. Returns 0 or -1 with err set. */
static int tls_build(const sp_server_config_t *cfg, STACK_OF(X509_CRL) * given, SSL_CTX **out,
                     STACK_OF(X509_CRL) * *out_crls, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	STACK_OF(X509_NAME) *names = NULL;
	STACK_OF(X509_CRL) *crls = NULL;
	X509_STORE *store;

	*out = NULL;
	*out_crls = NULL;
	if (!ctx) {
		ssl_errors(err, errlen, "cannot create a TLS context", "");
		return -1;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (cfg->tls_session_cache > 0) {
		/* Stateful TLS 1.3 tickets: the ticket is only an id, the session stays here, so
		 * neither issuing nor accepting a ticket encodes or decodes a session (with its
		 * client certificate), which is most of what a resumption costs in OpenSSL 3.0. */
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
		SSL_CTX_sess_set_cache_size(ctx, (long)cfg->tls_session_cache);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	if (sp_tls_set_groups(ctx, cfg->tls_groups, true) < 0) {
		ssl_errors(err, errlen, "cannot use tls_groups (a group this OpenSSL lacks?)",
		           cfg->tls_groups);
		goto fail;
	}
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_timeout(ctx, 3600);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sealpush", 8);

	if (!cfg->tls_cert || !cfg->tls_key || !cfg->client_ca) {
		snprintf(err, errlen, "tls_cert, tls_key and client_ca are required");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
		ssl_errors(err, errlen, "cannot load tls_cert", cfg->tls_cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
		ssl_errors(err, errlen, "cannot load tls_key", cfg->tls_key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_errors(err, errlen, "tls_key does not match tls_cert", cfg->tls_key);
		goto fail;
	}
	if (SSL_CTX_load_verify_locations(ctx, cfg->client_ca, NULL) != 1) {
		ssl_errors(err, errlen, "cannot load client_ca", cfg->client_ca);
		goto fail;
	}
	names = SSL_load_client_CA_file(cfg->client_ca);
	if (!names) {
		ssl_errors(err, errlen, "no CA certificate in client_ca", cfg->client_ca);
		goto fail;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	SSL_CTX_set_verify_depth(ctx, 2);

	store = SSL_CTX_get_cert_store(ctx);
	if (given || (cfg->crl && cfg->crl[0])) {
		crls = given ? given : load_crls(cfg->crl, err, errlen);
		given = NULL;
		if (!crls || check_crls(store, crls, cfg->crl ? cfg->crl : "(from the cluster)",
		                        err, errlen) < 0)
			goto fail;
		for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
			if (X509_STORE_add_crl(store, sk_X509_CRL_value(crls, i)) != 1) {
				ssl_errors(err, errlen, "cannot use CRL", cfg->crl);
				goto fail;
			}
		}
		/* Every CA of a chain: a device enrolled through an intermediate CA is refused
		 * once the root's CRL revokes that intermediate. */
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	}
	SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
	SSL_CTX_set_keylog_callback(ctx, keylog_cb);
	SSL_CTX_set_msg_callback(ctx, msg_cb);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	*out = ctx;
	*out_crls = crls;
	return 0;
fail:
	free_crls(given);
	free_crls(crls);
	SSL_CTX_free(ctx);
	return -1;
}

const char *sp_tls_library_version(void)
{
	return OpenSSL_version(OPENSSL_VERSION_STRING);
}

bool sp_tls_revoked(sp_tls_server_t *tls, const uint8_t *serial, size_t serial_len)
{
	ASN1_INTEGER *sn;
	X509_REVOKED *rev = NULL;
	bool revoked = false;

	if (!serial_len || serial_len > INT_MAX)
		return false;
	sn = ASN1_INTEGER_new();
	if (!sn || !ASN1_STRING_set(sn, serial, (int)serial_len)) {
		ASN1_INTEGER_free(sn);
		return false;
	}
	pthread_mutex_lock(&tls->lock);
	for (int i = 0; !revoked && i < sk_X509_CRL_num(tls->crls); i++)
		if (X509_CRL_get0_by_serial(sk_X509_CRL_value(tls->crls, i), &rev, sn) == 1)
			revoked = true;
	pthread_mutex_unlock(&tls->lock);
	ASN1_INTEGER_free(sn);
	return revoked;
}

/* Keeps a certificate's serial (positive, at most 20 bytes by RFC 5280). */
static int copy_serial(X509 *cert, uint8_t out[20], uint8_t *out_len)
{
	const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);
	int len = ASN1_STRING_length(sn);

	if (len <= 0 || len > 20 || sn->type != V_ASN1_INTEGER)
		return -1;
	memcpy(out, ASN1_STRING_get0_data(sn), (size_t)len);
	*out_len = (uint8_t)len;
	return 0;
}

static int keep_serial(sp_peer_t *peer, X509 *cert)
{
	return copy_serial(cert, peer->serial, &peer->serial_len);
}

/* And the issuing intermediate's, when the verified chain has one (leaf, intermediate,
 * root): a reload whose CRL revokes the intermediate then cuts this connection too. */
static void keep_ca_serial(sp_tio_t *t, sp_peer_t *peer)
{
	STACK_OF(X509) *chain = SSL_get0_verified_chain(t->ssl);

	peer->ca_serial_len = 0;
	if (chain && sk_X509_num(chain) >= 3 &&
	    copy_serial(sk_X509_value(chain, 1), peer->ca_serial, &peer->ca_serial_len) < 0)
		peer->ca_serial_len = 0;
}

/* After a successful handshake: checks ALPN and (for resumed sessions) the certificate's
 * validity and the current CRL, and derives the token. Returns 0 or a sp_handshake_cause. */
static int established(sp_tio_t *t, sp_peer_t *peer)
{
	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;
	X509 *cert = SSL_get0_peer_certificate(t->ssl);

	SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
	if (alpn_len != sizeof(alpn_v1) - 2 || memcmp(alpn, alpn_v1 + 1, alpn_len) != 0)
		return SP_HS_NO_ALPN;
	if (t->flags & SP_TIO_ANON) {
		/* The anonymous door (PROTOCOL.md 17.2): no certificate was asked for, and a
		 * session is never resumed there (one from the device door would carry its
		 * certificate): the peer stays without token, serial or CA. */
		if (SSL_session_reused(t->ssl))
			return SP_HS_PROTOCOL;
		return 0;
	}
	if (!cert)
		return SP_HS_NO_CERT;
	if (keep_serial(peer, cert) < 0)
		return SP_HS_BAD_CERT;
	keep_ca_serial(t, peer);
	if (SSL_session_reused(t->ssl)) {
		/* No chain verification happened: check what can have changed since. */
		peer->resumed = true;
		if (X509_cmp_time(X509_get0_notAfter(cert), NULL) < 0)
			return SP_HS_EXPIRED;
		if (sp_tls_revoked(t->env->tls, peer->serial, peer->serial_len))
			return SP_HS_REVOKED;
	}
	if (sp_token_from_cert(cert, peer->token) < 0)
		return SP_HS_BAD_CERT;
	return 0;
}

static void hs_free(sp_tio_t *t)
{
	if (t->hs) {
		OPENSSL_cleanse(t->hs, sizeof(*t->hs));
		free(t->hs);
		t->hs = NULL;
	}
}

/* Hands t's session over to the record layer and frees its SSL. Returns 0, or -1 if that
 * cannot be done safely (OpenSSL holds unread or unwritten bytes): t stays on OpenSSL. */
static int handoff(sp_tio_t *t)
{
	const SSL_CIPHER *cipher = SSL_get_current_cipher(t->ssl);
	struct sp_hs *hs = t->hs;
	int r = -1;

	if (!(t->flags & SP_TIO_NO_HANDOFF) && hs && hs->have == 3 && cipher &&
	    !SSL_has_pending(t->ssl) && BIO_wpending(SSL_get_wbio(t->ssl)) == 0 &&
	    sp_rl_init(&t->rl, t->env->rlcx, SSL_CIPHER_get_protocol_id(cipher), hs->client_secret,
	               hs->server_secret, hs->secret_len, 0, hs->app_records) == 0) {
		/* The connection goes on without OpenSSL: tell it so, or SSL_free() takes the
		 * session for a failed one and drops it from the session cache. */
		SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(t->ssl);
		t->ssl = NULL;
		t->tr = &sp_record_transport;
		r = 0;
	}
	if (r < 0)
		SP_LOG(SP_LOG_DEBUG, "handoff_skipped",
		       "have=%d cipher=%d pending=%d wpending=%d suite=0x%04x", hs ? hs->have : -1,
		       !!cipher, SSL_has_pending(t->ssl), (int)BIO_wpending(SSL_get_wbio(t->ssl)),
		       cipher ? SSL_CIPHER_get_protocol_id(cipher) : 0);
	hs_free(t);
	return r;
}

/* Classifies a failed handshake for metrics and logs. */
static enum sp_handshake_cause failure_cause(const sp_tio_t *t, int ssl_err)
{
	if (t->hs_cause != SP_HS_OTHER)
		return t->hs_cause;
	if (ssl_err == SSL_ERROR_SSL) {
		switch (ERR_GET_REASON(ERR_peek_last_error())) {
		case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
			return SP_HS_NO_CERT;
		case SSL_R_NO_APPLICATION_PROTOCOL:
			return SP_HS_NO_ALPN;
		case SSL_R_CERTIFICATE_VERIFY_FAILED:
			return SP_HS_BAD_CERT;
		default: /* wrong version, HTTP, no shared cipher, bad lengths, ... */
			return SP_HS_PROTOCOL;
		}
	}
	return SP_HS_OTHER;
}

/* ---- the OpenSSL transport ---------------------------------------------------------------- */

/* An OpenSSL error that ends the connection: after SSL or SYSCALL errors no close_notify. */
static int tls_broken(sp_tio_t *t, int e)
{
	if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL)
		t->flags |= SP_TIO_DEAD;
	ERR_clear_error();
	return SP_IO_BROKEN;
}

static int tls_handshake(sp_tio_t *t, sp_peer_t *peer)
{
	int r, e, cause;

	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	if (r != 1) {
		e = SSL_get_error(t->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			return SP_IO_WANT_READ;
		if (e == SSL_ERROR_WANT_WRITE)
			return SP_IO_WANT_WRITE;
		t->flags |= SP_TIO_DEAD;
		t->hs_cause = (uint8_t)failure_cause(t, e);
		ERR_clear_error();
		return SP_IO_FAILED;
	}
	memset(peer, 0, sizeof(*peer));
	cause = established(t, peer);
	if (cause) {
		t->hs_cause = (uint8_t)cause;
		ERR_clear_error();
		return SP_IO_FAILED;
	}
	peer->group = (uint8_t)sp_tls_group_of(t->ssl);
	/* From here on the record layer is ours if possible; else OpenSSL carries on. */
	peer->handed_off = handoff(t) == 0;
	return SP_IO_DONE;
}

static int tls_read(sp_tio_t *t, sp_tio_input_fn *input, void *arg)
{
	const sp_tio_env_t *env = t->env;

	for (unsigned i = 0; i < env->reads_per_call; i++) {
		int n, e;

		ERR_clear_error();
		n = SSL_read(t->ssl, env->scratch,
		             env->scratch_len > INT_MAX ? INT_MAX : (int)env->scratch_len);
		if (n > 0) {
			if (!input(arg, env->scratch, (size_t)n))
				return SP_IO_WANT_READ;
			continue;
		}
		e = SSL_get_error(t->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			return SP_IO_WANT_READ;
		if (e == SSL_ERROR_WANT_WRITE)
			return SP_IO_WANT_WRITE;
		if (e == SSL_ERROR_ZERO_RETURN)
			return SP_IO_CLOSED;
		return tls_broken(t, e);
	}
	/* Out of budget with plaintext still inside OpenSSL: no socket event would come. */
	return SSL_has_pending(t->ssl) ? SP_IO_AGAIN : SP_IO_WANT_READ;
}

static int tls_write(sp_tio_t *t, const uint8_t *p, size_t len, size_t *taken)
{
	*taken = 0;
	while (*taken < len) {
		size_t left = len - *taken;
		int n, e;

		ERR_clear_error();
		n = SSL_write(t->ssl, p + *taken, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0) {
			*taken += (size_t)n;
			continue;
		}
		e = SSL_get_error(t->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE)
			return SP_IO_WANT_WRITE;
		if (e == SSL_ERROR_WANT_READ)
			return SP_IO_WANT_READ; /* the read event is armed; the write resumes from
			                           there */
		return tls_broken(t, e);
	}
	return SP_IO_DONE;
}

static void tls_shutdown(sp_tio_t *t)
{
	if (!(t->flags & SP_TIO_DEAD) && t->ssl) {
		ERR_clear_error();
		SSL_shutdown(t->ssl); /* one non-blocking attempt to send close_notify */
	}
	ERR_clear_error();
}

static void tls_free(sp_tio_t *t)
{
	SSL_free(t->ssl);
	t->ssl = NULL;
	hs_free(t);
	sp_rl_wipe(&t->rl);
}

const sp_transport_t sp_tls_transport = {
        .name = "openssl",
        .handshake = tls_handshake,
        .read = tls_read,
        .write = tls_write,
        .shutdown = tls_shutdown,
        .free = tls_free,
};

int sp_tio_accept(sp_tio_t *t, const sp_tio_env_t *env, int fd)
{
	sp_tls_server_t *tls = env->tls;
	SSL *ssl;

	t->env = env;
	t->fd = fd;
	t->hs_cause = SP_HS_OTHER;
	t->hs = calloc(1, sizeof(*t->hs));
	if (!t->hs)
		return -1;
	pthread_mutex_lock(&tls->lock);
	ssl = SSL_new(tls->ctx);
	pthread_mutex_unlock(&tls->lock);
	if (!ssl || SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		hs_free(t);
		ERR_clear_error();
		return -1;
	}
	SSL_set_app_data(ssl, t);
	if (t->flags & SP_TIO_ANON) {
		/* No CertificateRequest, no ticket, and a session id context of its own, so that
		 * a ticket from the device door does not resume here. */
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
		SSL_set_num_tickets(ssl, 0);
		SSL_set_session_id_context(ssl, (const unsigned char *)"sealpush-anon", 13);
	}
	SSL_set_accept_state(ssl);
	t->ssl = ssl;
	t->tr = &sp_tls_transport;
	return 0;
}

/* ---- the server's context ----------------------------------------------------------------- */

int sp_tls_start(sp_server_t *srv, char *err, size_t errlen)
{
	sp_tls_server_t *tls = calloc(1, sizeof(*tls));

	if (!tls) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (tls_build(&srv->cfg, NULL, &tls->ctx, &tls->crls, err, errlen) < 0) {
		free(tls);
		return -1;
	}
	pthread_mutex_init(&tls->lock, NULL);
	srv->tls = tls;
	return 0;
}

void sp_tls_stop(sp_server_t *srv)
{
	sp_tls_server_t *tls = srv->tls;

	if (!tls)
		return;
	SSL_CTX_free(tls->ctx);
	free_crls(tls->crls);
	pthread_mutex_destroy(&tls->lock);
	free(tls);
	srv->tls = NULL;
}

/* New connections get ctx and crls from now on; the old ones are freed (OpenSSL keeps the
 * context alive for the connections that still use it). */
static void swap_in(sp_tls_server_t *tls, SSL_CTX *ctx, STACK_OF(X509_CRL) * crls)
{
	SSL_CTX *old;
	STACK_OF(X509_CRL) * old_crls;

	pthread_mutex_lock(&tls->lock);
	old = tls->ctx;
	old_crls = tls->crls;
	tls->ctx = ctx;
	tls->crls = crls;
	pthread_mutex_unlock(&tls->lock);
	SSL_CTX_free(old);
	free_crls(old_crls);
}

int sp_tls_reload(sp_server_t *srv, char *err, size_t errlen)
{
	sp_tls_server_t *tls = srv->tls;
	SSL_CTX *ctx;
	STACK_OF(X509_CRL) * crls;

	if (tls_build(&srv->cfg, NULL, &ctx, &crls, err, errlen) < 0)
		return -1;
	swap_in(tls, ctx, crls);
	return 0;
}

/* The latest lastUpdate of a set of CRLs. */
static const ASN1_TIME *latest_update(STACK_OF(X509_CRL) * crls)
{
	const ASN1_TIME *t = NULL;

	for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
		const ASN1_TIME *u = X509_CRL_get0_lastUpdate(sk_X509_CRL_value(crls, i));

		if (!t || ASN1_TIME_compare(u, t) > 0)
			t = u;
	}
	return t;
}

static bool same_crls(STACK_OF(X509_CRL) * a, STACK_OF(X509_CRL) * b)
{
	if (sk_X509_CRL_num(a) != sk_X509_CRL_num(b))
		return false;
	for (int i = 0; i < sk_X509_CRL_num(a); i++)
		if (X509_CRL_match(sk_X509_CRL_value(a, i), sk_X509_CRL_value(b, i)) != 0)
			return false;
	return true;
}

int sp_tls_install_crl(sp_server_t *srv, const void *pem, size_t len, char *err, size_t errlen)
{
	sp_tls_server_t *tls = srv->tls;
	BIO *b = len <= INT_MAX ? BIO_new_mem_buf(pem, (int)len) : NULL;
	STACK_OF(X509_CRL) *crls = b ? read_crls(b) : NULL;
	STACK_OF(X509_CRL) * built;
	SSL_CTX *ctx;
	bool newer;

	BIO_free(b);
	if (!crls) {
		ERR_clear_error();
		snprintf(err, errlen, "not a PEM CRL");
		return -1;
	}
	pthread_mutex_lock(&tls->lock);
	if (!tls->crls) {
		newer = true;
	} else {
		int c = ASN1_TIME_compare(latest_update(crls), latest_update(tls->crls));

		newer = c > 0 || (c == 0 && !same_crls(crls, tls->crls));
	}
	pthread_mutex_unlock(&tls->lock);
	if (!newer) {
		free_crls(crls);
		return 0;
	}
	if (tls_build(&srv->cfg, crls, &ctx, &built, err, errlen) < 0)
		return -1;
	swap_in(tls, ctx, built);
	return 1;
}

int sp_tls_verify_ca(sp_server_t *srv, X509 *ca, char *why, size_t whylen)
{
	sp_tls_server_t *tls = srv->tls;
	X509_STORE_CTX *x = X509_STORE_CTX_new();
	SSL_CTX *ctx;
	int ok = 0;

	pthread_mutex_lock(&tls->lock);
	ctx = tls->ctx;
	SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&tls->lock);
	if (x && X509_STORE_CTX_init(x, SSL_CTX_get_cert_store(ctx), ca, NULL) == 1)
		ok = X509_verify_cert(x);
	if (ok != 1)
		snprintf(why, whylen, "%s",
		         x ? X509_verify_cert_error_string(X509_STORE_CTX_get_error(x))
		           : "out of memory");
	else if (X509_check_ca(ca) == 0) {
		snprintf(why, whylen, "not a CA certificate");
		ok = 0;
	}
	X509_STORE_CTX_free(x);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return ok == 1 ? 0 : -1;
}
