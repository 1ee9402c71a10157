/*
 * tpki.h: a throwaway PKI for the server's TLS tests, made with OpenSSL at test start.
 *
 *	struct tpki pki;
 *	if (tpki_make(&pki) < 0 || tpki_write(&pki) < 0) bail out;
 *	... pki.ca, pki.srv, pki.cli (X509) and their keys; pki.ca_pem, pki.srv_pem, ... files ...
 *	tpki_free(&pki);
 *
 * Like what sealpush-ca issues: P-256 keys throughout; a CA (CA:TRUE, keyCertSign, cRLSign);
 * a server certificate for localhost and 127.0.0.1 (subjectAltName, serverAuth); one device
 * certificate (CA:FALSE, digitalSignature, clientAuth), whose token is SHA-256 over its SPKI
 * like any other (sp_identity). Valid from an hour ago for a day.
 *
 * tpki_make() builds them in memory only; tpki_write() also writes the PEM files into a fresh
 * mkdtemp() directory, which tpki_free() removes again. Header-only, static functions.
 */
#ifndef TPKI_H
#define TPKI_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tpki {
	EVP_PKEY *ca_key, *srv_key, *cli_key;
	X509 *ca, *srv, *cli;
	char dir[64]; /* "" until tpki_write() */
	char ca_pem[96], srv_pem[96], srv_key_pem[96], cli_pem[96], cli_key_pem[96];
};

static inline int tpki_add_ext(X509 *x, X509 *issuer, int nid, const char *value)
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

/* A certificate for key: self-signed if issuer is NULL (then a CA), else a leaf signed by
 * issuer_key with extended key usage eku and, if san is not NULL, that subjectAltName. */
static inline X509 *tpki_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                              long serial, const char *eku, const char *san)
{
	X509 *x = X509_new();
	X509_NAME *name;
	X509 *signer;
	int ok;

	if (!x)
		return NULL;
	name = X509_get_subject_name(x);
	signer = issuer ? issuer : x;
	ok = X509_set_version(x, 2) == 1 &&
	     ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1 &&
	     X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
	     X509_gmtime_adj(X509_getm_notAfter(x), 86400) != NULL &&
	     X509_set_pubkey(x, key) == 1 &&
	     X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
	                                0) == 1 &&
	     X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1 &&
	     tpki_add_ext(x, signer, NID_basic_constraints,
	                  issuer ? "critical,CA:FALSE" : "critical,CA:TRUE") &&
	     tpki_add_ext(x, signer, NID_key_usage,
	                  issuer ? "critical,digitalSignature" : "critical,keyCertSign,cRLSign") &&
	     (!eku || tpki_add_ext(x, signer, NID_ext_key_usage, eku)) &&
	     (!san || tpki_add_ext(x, signer, NID_subject_alt_name, san)) &&
	     X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Builds the keys and certificates in memory. Returns 0 or -1 (call tpki_free() either way). */
static inline int tpki_make(struct tpki *p)
{
	memset(p, 0, sizeof(*p));
	p->ca_key = EVP_EC_gen("P-256");
	p->srv_key = EVP_EC_gen("P-256");
	p->cli_key = EVP_EC_gen("P-256");
	if (!p->ca_key || !p->srv_key || !p->cli_key)
		return -1;
	p->ca = tpki_cert(p->ca_key, "sealpush test CA", NULL, NULL, 1, NULL, NULL);
	if (!p->ca)
		return -1;
	p->srv = tpki_cert(p->srv_key, "localhost", p->ca, p->ca_key, 2, "serverAuth",
	                   "DNS:localhost,IP:127.0.0.1");
	p->cli = tpki_cert(p->cli_key, "device", p->ca, p->ca_key, 3, "clientAuth", NULL);
	return p->srv && p->cli ? 0 : -1;
}

static inline int tpki_write_one(char *path, size_t cap, const char *dir, const char *name,
                                 X509 *cert, EVP_PKEY *key)
{
	FILE *f;
	int ok;

	if ((size_t)snprintf(path, cap, "%s/%s", dir, name) >= cap)
		return -1;
	f = fopen(path, "w");
	if (!f)
		return -1;
	ok = cert ? PEM_write_X509(f, cert) == 1
	          : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
	return fclose(f) == 0 && ok ? 0 : -1;
}

/* Writes ca.crt, server.crt, server.key, device.crt and device.key into a new temporary
 * directory (TMPDIR or /tmp). Returns 0 or -1. */
static inline int tpki_write(struct tpki *p)
{
	const char *tmp = getenv("TMPDIR");

	if (!tmp || !tmp[0])
		tmp = "/tmp";
	if ((size_t)snprintf(p->dir, sizeof(p->dir), "%s/sp-tpki-XXXXXX", tmp) >= sizeof(p->dir) ||
	    !mkdtemp(p->dir)) {
		p->dir[0] = '\0';
		return -1;
	}
	if (tpki_write_one(p->ca_pem, sizeof(p->ca_pem), p->dir, "ca.crt", p->ca, NULL) < 0 ||
	    tpki_write_one(p->srv_pem, sizeof(p->srv_pem), p->dir, "server.crt", p->srv, NULL) <
	            0 ||
	    tpki_write_one(p->srv_key_pem, sizeof(p->srv_key_pem), p->dir, "server.key", NULL,
	                   p->srv_key) < 0 ||
	    tpki_write_one(p->cli_pem, sizeof(p->cli_pem), p->dir, "device.crt", p->cli, NULL) <
	            0 ||
	    tpki_write_one(p->cli_key_pem, sizeof(p->cli_key_pem), p->dir, "device.key", NULL,
	                   p->cli_key) < 0)
		return -1;
	return 0;
}

/* Frees everything and removes the files and directory tpki_write() made; accepts a
 * half-built one. */
static inline void tpki_free(struct tpki *p)
{
	X509_free(p->ca);
	X509_free(p->srv);
	X509_free(p->cli);
	EVP_PKEY_free(p->ca_key);
	EVP_PKEY_free(p->srv_key);
	EVP_PKEY_free(p->cli_key);
	if (p->dir[0]) {
		const char *files[] = {p->ca_pem, p->srv_pem, p->srv_key_pem, p->cli_pem,
		                       p->cli_key_pem};

		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
			if (files[i][0])
				unlink(files[i]);
		rmdir(p->dir);
	}
	memset(p, 0, sizeof(*p));
}

#endif
