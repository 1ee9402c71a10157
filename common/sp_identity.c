/* sp_identity: device tokens from certificates and keys, and their text forms. */
#include "sp_identity.h"

#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

static const char sp_hex_digits[] = "0123456789abcdef";

/* Hashes one DER SPKI into token; the DER is the caller's. Returns 0 or -ENOMEM. */
static int sp_token_from_spki_der(const unsigned char *der, int len, uint8_t token[SP_TOKEN_LEN])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (!EVP_Digest(der, (size_t)len, md, &md_len, EVP_sha256(), NULL) ||
	    md_len != SP_TOKEN_LEN)
		return -ENOMEM;
	memcpy(token, md, SP_TOKEN_LEN);
	return 0;
}

int sp_token_from_cert(X509 *cert, uint8_t token[SP_TOKEN_LEN])
{
	X509_PUBKEY *spki;
	unsigned char *der = NULL;
	int len, r;

	if (cert == NULL || token == NULL)
		return -EINVAL;
	/* A certificate whose key OpenSSL cannot decode cannot complete a TLS handshake either. */
	spki = X509_get_X509_PUBKEY(cert);
	if (spki == NULL || X509_get0_pubkey(cert) == NULL)
		return -EINVAL;
	len = i2d_X509_PUBKEY(spki, &der);
	if (len <= 0) {
		r = -ENOMEM;
		goto out;
	}
	r = sp_token_from_spki_der(der, len, token);
out:
	OPENSSL_free(der);
	return r;
}

int sp_token_from_pkey(EVP_PKEY *pkey, uint8_t token[SP_TOKEN_LEN])
{
	unsigned char *der = NULL;
	int len, r;

	if (pkey == NULL || token == NULL)
		return -EINVAL;
	len = i2d_PUBKEY(pkey, &der);
	if (len <= 0) {
		r = -EINVAL;
		goto out;
	}
	r = sp_token_from_spki_der(der, len, token);
out:
	OPENSSL_free(der);
	return r;
}

void sp_token_hex(const uint8_t token[SP_TOKEN_LEN], char out[SP_TOKEN_HEX_LEN + 1])
{
	for (size_t i = 0; i < SP_TOKEN_LEN; i++) {
		out[2 * i] = sp_hex_digits[token[i] >> 4];
		out[2 * i + 1] = sp_hex_digits[token[i] & 0x0f];
	}
	out[SP_TOKEN_HEX_LEN] = '\0';
}

/* Returns the value of one hex digit, or -1. Locale-independent, unlike isxdigit(). */
static int sp_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sp_token_parse_hex(const char *s, uint8_t token[SP_TOKEN_LEN])
{
	uint8_t tmp[SP_TOKEN_LEN];

	if (s == NULL || token == NULL)
		return -EINVAL;
	/* strnlen: never read past the 65th byte of an unterminated or huge input. */
	if (strnlen(s, SP_TOKEN_HEX_LEN + 1) != SP_TOKEN_HEX_LEN)
		return -EINVAL;
	for (size_t i = 0; i < SP_TOKEN_LEN; i++) {
		int hi = sp_hex_value(s[2 * i]), lo = sp_hex_value(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		tmp[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(token, tmp, SP_TOKEN_LEN);
	return 0;
}

void sp_token_short(const uint8_t token[SP_TOKEN_LEN], char out[SP_TOKEN_SHORT_LEN + 1])
{
	for (size_t i = 0; i < SP_TOKEN_SHORT_LEN / 2; i++) {
		out[2 * i] = sp_hex_digits[token[i] >> 4];
		out[2 * i + 1] = sp_hex_digits[token[i] & 0x0f];
	}
	out[SP_TOKEN_SHORT_LEN] = '\0';
}

/* SubjectPublicKeyInfo of id-ecPublicKey / prime256v1, up to the BIT STRING of the point. */
static const uint8_t p256_spki_prefix[26] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                             0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                             0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};

EVP_PKEY *sp_p256_point_key(const uint8_t point[SP_P256_POINT_LEN])
{
	uint8_t der[sizeof(p256_spki_prefix) + SP_P256_POINT_LEN];
	const uint8_t *p = der;

	memcpy(der, p256_spki_prefix, sizeof(p256_spki_prefix));
	memcpy(der + sizeof(p256_spki_prefix), point, SP_P256_POINT_LEN);
	return d2i_PUBKEY(NULL, &p, (long)sizeof(der));
}
