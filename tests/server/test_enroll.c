/*
 * test_enroll.c: the pure parts of enrollment (server/sp_enroll.h): the strict CSR check,
 * every refusal reason on a CSR built here with OpenSSL, and the certificate sp_enroll_sign
 * makes (subject, extensions, validity clamped to the CA, authority key id only when the CA
 * has a subject key id); and the enrollment codes of
 * common/sp_enrollcode.h (shape, key, labels).
 */
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <time.h>

#include "sp_enroll.h"
#include "sp_enrollcode.h"
#include "sp_identity.h"
#include "sp_test.h"
#include "tpki.h"

/* A DER CSR of key with subject (NULL: empty), optionally an extension request; the caller
 * frees *der (OPENSSL_free). */
static size_t make_csr(EVP_PKEY *key, const char *cn, const char *org, bool ext, uint8_t **der)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	unsigned char *out = NULL;
	int n;

	SP_CHECK(req && name && X509_REQ_set_version(req, X509_REQ_VERSION_1));
	if (cn)
		X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
		                           -1, 0);
	if (org)
		X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)org, -1,
		                           -1, 0);
	X509_REQ_set_subject_name(req, name);
	X509_REQ_set_pubkey(req, key);
	if (ext) {
		STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
		X509_EXTENSION *e =
		        X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "CA:TRUE");

		sk_X509_EXTENSION_push(exts, e);
		X509_REQ_add_extensions(req, exts);
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	}
	SP_CHECK(X509_REQ_sign(req, key, EVP_PKEY_is_a(key, "ED25519") ? NULL : EVP_sha256()) > 0);
	n = i2d_X509_REQ(req, &out);
	X509_NAME_free(name);
	X509_REQ_free(req);
	*der = out;
	return n > 0 ? (size_t)n : 0;
}

/* Runs the check; returns the refusal (0 if accepted: then the key must be key). */
static int check(const uint8_t *der, size_t len, EVP_PKEY *want)
{
	EVP_PKEY *got = NULL;
	const char *why = NULL;
	int r = sp_enroll_check_csr(der, len, &got, &why);

	if (r == 0) {
		SP_CHECK(got != NULL && EVP_PKEY_eq(got, want) == 1);
		SP_CHECK(why == NULL);
	} else {
		SP_CHECK(got == NULL);
		SP_CHECK(why != NULL && why[0]);
	}
	EVP_PKEY_free(got);
	return -r;
}

static void test_csr_check(void)
{
	EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	uint8_t *der = NULL, *big;
	size_t n;
	char hex[SP_TOKEN_HEX_LEN + 1];

	SP_CHECK(p256 && p384 && rsa && ed);
	n = make_csr(p256, "phone", NULL, false, &der);
	SP_CHECK_EQ_INT(check(der, n, p256), 0);
	/* Tampered: any byte of the signed part changed. */
	{
		uint8_t *t = malloc(n);
		char *p;

		memcpy(t, der, n);
		p = memmem(t, n, "phone", 5);
		SP_CHECK(p != NULL);
		p[4] ^= 1;
		SP_CHECK_EQ_INT(check(t, n, p256), SP_ENROLL_R_SIGNATURE);
		free(t);
	}
	/* Not exact DER: a trailing byte; truncated; empty; too large. */
	big = malloc(n + 1);
	memcpy(big, der, n);
	big[n] = 0;
	SP_CHECK_EQ_INT(check(big, n + 1, p256), SP_ENROLL_R_CSR_DER);
	SP_CHECK_EQ_INT(check(der, n - 1, p256), SP_ENROLL_R_CSR_DER);
	SP_CHECK_EQ_INT(check(der, 0, p256), SP_ENROLL_R_CSR_DER);
	SP_CHECK_EQ_INT(check(der, SP_ENROLL_CSR_MAX + 1, p256), SP_ENROLL_R_CSR_DER);
	free(big);
	OPENSSL_free(der);

	n = make_csr(p256, NULL, NULL, false, &der); /* empty subject: fine */
	SP_CHECK_EQ_INT(check(der, n, p256), 0);
	OPENSSL_free(der);
	n = make_csr(rsa, "x", NULL, false, &der);
	SP_CHECK_EQ_INT(check(der, n, rsa), SP_ENROLL_R_KEY_TYPE);
	OPENSSL_free(der);
	n = make_csr(ed, "x", NULL, false, &der);
	SP_CHECK_EQ_INT(check(der, n, ed), SP_ENROLL_R_KEY_TYPE);
	OPENSSL_free(der);
	n = make_csr(p384, "x", NULL, false, &der);
	SP_CHECK_EQ_INT(check(der, n, p384), SP_ENROLL_R_KEY_SIZE);
	OPENSSL_free(der);
	n = make_csr(p256, "x", NULL, true, &der);
	SP_CHECK_EQ_INT(check(der, n, p256), SP_ENROLL_R_EXTENSIONS);
	OPENSSL_free(der);
	n = make_csr(p256, "x", "evil", false, &der);
	SP_CHECK_EQ_INT(check(der, n, p256), SP_ENROLL_R_SUBJECT);
	OPENSSL_free(der);
	n = make_csr(p256, NULL, "evil", false, &der);
	SP_CHECK_EQ_INT(check(der, n, p256), SP_ENROLL_R_SUBJECT);
	OPENSSL_free(der);
	/* A CN that names a token (anyone's, even its own): refused. */
	{
		uint8_t tok[SP_TOKEN_LEN];

		SP_CHECK(sp_token_from_pkey(p256, tok) == 0);
		sp_token_hex(tok, hex);
		n = make_csr(p256, hex, NULL, false, &der);
		SP_CHECK_EQ_INT(check(der, n, p256), SP_ENROLL_R_SUBJECT);
		OPENSSL_free(der);
		hex[63] = 'x'; /* 64 characters, not all hex: only a label */
		n = make_csr(p256, hex, NULL, false, &der);
		SP_CHECK_EQ_INT(check(der, n, p256), 0);
		OPENSSL_free(der);
	}
	EVP_PKEY_free(p256);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ed);
}

static void test_sign(void)
{
	struct tpki pki;
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = NULL, *y = NULL;
	uint8_t tok[SP_TOKEN_LEN], tok2[SP_TOKEN_LEN];
	char hex[SP_TOKEN_HEX_LEN + 1], cn[80];
	time_t now = time(NULL);
	int crit = -1, pathlen;
	BASIC_CONSTRAINTS *bc;
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();

	SP_CHECK(tpki_make(&pki) == 0 && key);
	SP_CHECK(sp_enroll_sign(pki.ca, pki.ca_key, key, 90, now, &x) == 0 && x);
	SP_CHECK(sp_token_from_pkey(key, tok) == 0 && sp_token_from_cert(x, tok2) == 0);
	SP_CHECK_MEM(tok, tok2, SP_TOKEN_LEN);
	sp_token_hex(tok, hex);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
	SP_CHECK(strcmp(cn, hex) == 0);
	bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	SP_CHECK(bc && !bc->ca && crit == 1);
	BASIC_CONSTRAINTS_free(bc);
	SP_CHECK(X509_get_extended_key_usage(x) == XKU_SSL_CLIENT);
	SP_CHECK(X509_get_key_usage(x) == KU_DIGITAL_SIGNATURE);
	pathlen = X509_check_ca(x);
	SP_CHECK_EQ_INT(pathlen, 0);
	/* It verifies against the CA as a client certificate. */
	X509_STORE_add_cert(store, pki.ca);
	SP_CHECK(X509_STORE_CTX_init(ctx, store, x, NULL) == 1);
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	SP_CHECK(X509_verify_cert(ctx) == 1);
	/* tpki's CA lives a day: 90 days are cut to its notAfter. */
	SP_CHECK(ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(pki.ca)) == 0);
	SP_CHECK(X509_cmp_time(X509_get0_notBefore(x), &now) < 0);
	/* Serials are random: two signatures differ. */
	SP_CHECK(sp_enroll_sign(pki.ca, pki.ca_key, key, 1, now, &y) == 0);
	SP_CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(y)) != 0);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(x);
	X509_free(y);
	EVP_PKEY_free(key);
	tpki_free(&pki);
}

static void test_codes(void)
{
	char a[SP_ENROLL_CODE_LEN + 1], b[SP_ENROLL_CODE_LEN + 1];
	char ka[SP_ENROLL_KEY_LEN + 1], kb[SP_ENROLL_KEY_LEN + 1];

	SP_CHECK(sp_enroll_code_new(a) == 0 && sp_enroll_code_new(b) == 0);
	SP_CHECK_EQ_INT(strlen(a), SP_ENROLL_CODE_LEN);
	SP_CHECK(strcmp(a, b) != 0);
	SP_CHECK(sp_enroll_code_valid(a, strlen(a)));
	SP_CHECK(!sp_enroll_code_valid(a, strlen(a) - 1));
	SP_CHECK(!sp_enroll_code_valid("AAAAAAAAAAAAAAAAAAAAAAA=", SP_ENROLL_CODE_LEN));
	SP_CHECK(sp_enroll_code_key(a, strlen(a), ka) == 0);
	SP_CHECK(sp_enroll_code_key(b, strlen(b), kb) == 0);
	SP_CHECK(strncmp(ka, SP_ENROLL_KEY_PREFIX, strlen(SP_ENROLL_KEY_PREFIX)) == 0);
	SP_CHECK_EQ_INT(strlen(ka), SP_ENROLL_KEY_LEN);
	SP_CHECK(strcmp(ka, kb) != 0);
	SP_CHECK(strstr(ka, a) == NULL); /* only the hash */
	/* SHA-256("abc") */
	SP_CHECK(sp_enroll_code_key("abc", 3, ka) == 0);
	SP_CHECK(strcmp(ka + strlen(SP_ENROLL_KEY_PREFIX),
	                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
	SP_CHECK(sp_enroll_label_valid("", 0));
	SP_CHECK(sp_enroll_label_valid("batch-7 line 2", 14));
	SP_CHECK(!sp_enroll_label_valid("a\"b", 3));
	SP_CHECK(!sp_enroll_label_valid("a\\b", 3));
	SP_CHECK(!sp_enroll_label_valid("a\nb", 3));
	SP_CHECK(!sp_enroll_label_valid(
	        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	        SP_ENROLL_LABEL_MAX + 1));
}

int main(void)
{
	SP_RUN(test_csr_check);
	SP_RUN(test_sign);
	SP_RUN(test_codes);
	return sp_test_done();
}
