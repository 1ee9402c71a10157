/*
 * tpki.h: a throwaway PKI for the server's unit tests, made in memory with OpenSSL: a P-256
 * CA, a server certificate for "localhost" and one device certificate, each valid from an
 * hour ago for a day. pki_write() also puts them in a directory as PEM files (ca.crt,
 * server.crt, server.key, device.crt, device.key) for code that reads files
 * (sp_tls_start). Header-only: each test binary has its own copy of the static state.
 */
#ifndef TPKI_H
#define TPKI_H

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static struct {
	EVP_PKEY *ca_key, *srv_key, *cli_key;
	X509 *ca, *srv, *cli;
} pki;

static inline int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *e;
	int ok;

	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	ok = e && X509_add_ext(x, e, -1) == 1;
	X509_EXTENSION_free(e);
	return ok;
}

static inline X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                              long serial)
{
	X509 *x = X509_new();
	X509_NAME *name;
	int ok;

	if (!x)
		return NULL;
	name = X509_get_subject_name(x);
	ok = X509_set_version(x, 2) == 1 &&
	     ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1 &&
	     X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
	     X509_gmtime_adj(X509_getm_notAfter(x), 86400) != NULL &&
	     X509_set_pubkey(x, key) == 1 &&
	     X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
	                                0) == 1 &&
	     X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1 &&
	     add_ext(x, issuer ? issuer : x, NID_basic_constraints,
	             issuer ? "critical,CA:FALSE" : "critical,CA:TRUE") &&
	     add_ext(x, issuer ? issuer : x, NID_key_usage,
	             issuer ? "critical,digitalSignature" : "critical,keyCertSign,cRLSign") &&
	     X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static inline int pki_make(void)
{
	pki.ca_key = EVP_EC_gen("P-256");
	pki.srv_key = EVP_EC_gen("P-256");
	pki.cli_key = EVP_EC_gen("P-256");
	if (!pki.ca_key || !pki.srv_key || !pki.cli_key)
		return -1;
	pki.ca = make_cert(pki.ca_key, "test CA", NULL, NULL, 1);
	if (!pki.ca)
		return -1;
	pki.srv = make_cert(pki.srv_key, "localhost", pki.ca, pki.ca_key, 2);
	pki.cli = make_cert(pki.cli_key, "device", pki.ca, pki.ca_key, 3);
	return pki.srv && pki.cli ? 0 : -1;
}

static inline void pki_free(void)
{
	X509_free(pki.ca);
	X509_free(pki.srv);
	X509_free(pki.cli);
	EVP_PKEY_free(pki.ca_key);
	EVP_PKEY_free(pki.srv_key);
	EVP_PKEY_free(pki.cli_key);
}

/* Writes the PEM files into dir (which must exist). Returns 0, or -1. */
static inline int pki_write(const char *dir)
{
	struct {
		const char *name;
		X509 *x;
		EVP_PKEY *k;
	} f[] = {{"ca.crt", pki.ca, NULL},
	         {"server.crt", pki.srv, NULL},
	         {"server.key", NULL, pki.srv_key},
	         {"device.crt", pki.cli, NULL},
	         {"device.key", NULL, pki.cli_key}};
	char path[512];

	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		FILE *fp;
		int ok;

		snprintf(path, sizeof(path), "%s/%s", dir, f[i].name);
		fp = fopen(path, "w");
		if (!fp)
			return -1;
		ok = f[i].x ? PEM_write_X509(fp, f[i].x)
		            : PEM_write_PrivateKey(fp, f[i].k, NULL, NULL, 0, NULL, NULL);
		if (fclose(fp) != 0 || ok != 1)
			return -1;
	}
	return 0;
}

#endif
