/* Unit tests of common/sp_identity: token derivation and its text forms. */
#include "sp_identity.h"
#include "sp_test.h"

#include <errno.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/*
 * A fixed P-256 certificate made with the openssl CLI:
 *	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem \
 *		-out c.pem -subj "/CN=sealpush identity test vector" -days 36500
 * and its token computed independently of sp_identity:
 *	openssl x509 -in c.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum
 */
static const char fixture_cert_pem[] =
        "-----BEGIN CERTIFICATE-----\n"
        "MIIBpzCCAU2gAwIBAgIUB8bcv8ZMLV+z1eL0KhohIQNygBYwCgYIKoZIzj0EAwIw\n"
        "KDEmMCQGA1UEAwwdc2VhbHB1c2ggaWRlbnRpdHkgdGVzdCB2ZWN0b3IwIBcNMjYx\n"
        "MTIyMTEwNzQzWhgPMjEyNjEwMjkxMTA3NDNaMCgxJjAkBgNVBAMMHXNlYWxwdXNo\n"
        "IGlkZW50aXR5IHRlc3QgdmVjdG9yMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
        "lhn5j9wbUMG/BVO5opwRsoydIgwbMDj96FtjpTFqqHaE0Jv3ffB8fGtI5i1U62sh\n"
        "/I0QckbkddZZQBKddQgVcqNTMFEwHQYDVR0OBBYEFJ144bkrZ3AUcWUOUzEc0l1C\n"
        "a+AQMB8GA1UdIwQYMBaAFJ144bkrZ3AUcWUOUzEc0l1Ca+AQMA8GA1UdEwEB/wQF\n"
        "MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgHY2971l09hyyLlDiFY7aVAqPQb9LceYU\n"
        "IxmHByrvzzECIQCJ6DU2qBPIR/MEKzFmNtXFyNRROV6hQw+4mtEh7mc3jA==\n"
        "-----END CERTIFICATE-----\n";

/* The same certificate's public key: openssl x509 -in c.pem -pubkey -noout */
static const char fixture_pubkey_pem[] =
        "-----BEGIN PUBLIC KEY-----\n"
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAElhn5j9wbUMG/BVO5opwRsoydIgwb\n"
        "MDj96FtjpTFqqHaE0Jv3ffB8fGtI5i1U62sh/I0QckbkddZZQBKddQgVcg==\n"
        "-----END PUBLIC KEY-----\n";

static const char fixture_token_hex[] =
        "b458472d0bf5df18aae3c0eb5ee5356a4b33b205973f261bd586e9acb288246c";

static X509 *load_cert(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	return x;
}

static EVP_PKEY *load_pubkey(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	return k;
}

/* Bytes 0x00, 0x01, ... 0x1f and their hex. */
static void counting_token(uint8_t token[SP_TOKEN_LEN])
{
	for (size_t i = 0; i < SP_TOKEN_LEN; i++)
		token[i] = (uint8_t)i;
}

static const char counting_hex[] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static void test_hex_known(void)
{
	uint8_t token[SP_TOKEN_LEN];
	char hex[SP_TOKEN_HEX_LEN + 1];

	counting_token(token);
	memset(hex, 'x', sizeof(hex));
	sp_token_hex(token, hex);
	SP_CHECK(strcmp(hex, counting_hex) == 0);
	SP_CHECK_EQ_INT(strlen(hex), SP_TOKEN_HEX_LEN);

	memset(token, 0xff, sizeof(token));
	sp_token_hex(token, hex);
	SP_CHECK(strcmp(hex, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff") ==
	         0);
}

static void test_hex_round_trip(void)
{
	uint8_t token[SP_TOKEN_LEN], back[SP_TOKEN_LEN];
	char hex[SP_TOKEN_HEX_LEN + 1];

	/* A few patterns covering every nibble value in both positions. */
	for (unsigned seed = 0; seed < 16; seed++) {
		for (size_t i = 0; i < SP_TOKEN_LEN; i++)
			token[i] = (uint8_t)(seed * 17 + i * 31 + (i >> 3));
		sp_token_hex(token, hex);
		memset(back, 0, sizeof(back));
		SP_CHECK_EQ_INT(sp_token_parse_hex(hex, back), 0);
		SP_CHECK_MEM(back, token, SP_TOKEN_LEN);
	}
}

static void test_parse_case(void)
{
	uint8_t want[SP_TOKEN_LEN], got[SP_TOKEN_LEN];

	counting_token(want);
	SP_CHECK_EQ_INT(sp_token_parse_hex(counting_hex, got), 0);
	SP_CHECK_MEM(got, want, SP_TOKEN_LEN);

	memset(got, 0, sizeof(got));
	SP_CHECK_EQ_INT(
	        sp_token_parse_hex(
	                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", got),
	        0);
	SP_CHECK_MEM(got, want, SP_TOKEN_LEN);

	memset(got, 0, sizeof(got));
	SP_CHECK_EQ_INT(
	        sp_token_parse_hex(
	                "000102030405060708090A0b0C0d0E0f101112131415161718191a1B1c1D1e1F", got),
	        0);
	SP_CHECK_MEM(got, want, SP_TOKEN_LEN);
}

static void test_parse_errors(void)
{
	static const char *const bad[] = {
	        "",
	        /* 63 characters */
	        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",
	        /* 65 characters */
	        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0",
	        /* 64 characters, one of them not hex, at the start, middle and end */
	        "g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	        "000102030405060708090a0b0c0d0e0fz01112131415161718191a1b1c1d1e1f",
	        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1G",
	        /* separators, whitespace, prefixes */
	        "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1",
	        " 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
	        "0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	        "-00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	        "00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14:1",
	};
	uint8_t token[SP_TOKEN_LEN], before[SP_TOKEN_LEN];

	memset(before, 0xa5, sizeof(before));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(token, before, sizeof(token));
		if (sp_token_parse_hex(bad[i], token) != -EINVAL)
			SP_FAIL("accepted bad token text #%zu \"%s\"", i, bad[i]);
		/* A failed parse leaves the output alone. */
		SP_CHECK_MEM(token, before, SP_TOKEN_LEN);
	}
	/* A NUL inside: the string ends at 63 characters. */
	{
		char buf[SP_TOKEN_HEX_LEN + 1];

		memcpy(buf, counting_hex, sizeof(buf));
		buf[40] = '\0';
		SP_CHECK_EQ_INT(sp_token_parse_hex(buf, token), -EINVAL);
	}
	SP_CHECK_EQ_INT(sp_token_parse_hex(NULL, token), -EINVAL);
	SP_CHECK_EQ_INT(sp_token_parse_hex(counting_hex, NULL), -EINVAL);
}

static void test_short(void)
{
	uint8_t token[SP_TOKEN_LEN];
	char out[SP_TOKEN_SHORT_LEN + 1], full[SP_TOKEN_HEX_LEN + 1];

	SP_CHECK_EQ_INT(SP_TOKEN_SHORT_LEN, 8);
	counting_token(token);
	memset(out, 'x', sizeof(out));
	sp_token_short(token, out);
	SP_CHECK(strcmp(out, "00010203") == 0);

	SP_CHECK_EQ_INT(sp_token_parse_hex(fixture_token_hex, token), 0);
	sp_token_short(token, out);
	SP_CHECK(strcmp(out, "b458472d") == 0);
	/* The short form is the prefix of the full one. */
	sp_token_hex(token, full);
	SP_CHECK(strncmp(full, out, SP_TOKEN_SHORT_LEN) == 0);
	SP_CHECK_EQ_INT(strlen(out), SP_TOKEN_SHORT_LEN);
}

static void test_fixture_cert(void)
{
	X509 *x = load_cert(fixture_cert_pem);
	EVP_PKEY *pub = load_pubkey(fixture_pubkey_pem);
	uint8_t token[SP_TOKEN_LEN], want[SP_TOKEN_LEN];
	char hex[SP_TOKEN_HEX_LEN + 1];

	SP_CHECK(x != NULL);
	SP_CHECK(pub != NULL);
	SP_CHECK_EQ_INT(sp_token_parse_hex(fixture_token_hex, want), 0);
	if (x != NULL) {
		SP_CHECK_EQ_INT(sp_token_from_cert(x, token), 0);
		SP_CHECK_MEM(token, want, SP_TOKEN_LEN);
		sp_token_hex(token, hex);
		SP_CHECK(strcmp(hex, fixture_token_hex) == 0);
		/* The certificate's own key object gives the same token. */
		memset(token, 0, sizeof(token));
		SP_CHECK_EQ_INT(sp_token_from_pkey(X509_get0_pubkey(x), token), 0);
		SP_CHECK_MEM(token, want, SP_TOKEN_LEN);
	}
	if (pub != NULL) {
		memset(token, 0, sizeof(token));
		SP_CHECK_EQ_INT(sp_token_from_pkey(pub, token), 0);
		SP_CHECK_MEM(token, want, SP_TOKEN_LEN);
	}
	EVP_PKEY_free(pub);
	X509_free(x);
}

/* Makes a self-signed certificate for key; NULL on failure. */
static X509 *self_signed(EVP_PKEY *key)
{
	X509 *x = X509_new();
	X509_NAME *name = x != NULL ? X509_get_subject_name(x) : NULL;

	if (x == NULL || name == NULL || !X509_set_version(x, X509_VERSION_3) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"t", -1,
	                                -1, 0) ||
	    !X509_set_issuer_name(x, name) || !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), 3600) || !X509_set_pubkey(x, key) ||
	    X509_sign(x, key, EVP_sha256()) <= 0) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static void test_fresh_key_and_cert(void)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = key != NULL ? self_signed(key) : NULL;
	uint8_t t_key[SP_TOKEN_LEN], t_cert[SP_TOKEN_LEN], t_other[SP_TOKEN_LEN];

	SP_CHECK(key != NULL && other != NULL && x != NULL);
	if (key == NULL || other == NULL || x == NULL)
		goto out;
	memset(t_key, 1, sizeof(t_key));
	memset(t_cert, 2, sizeof(t_cert));
	SP_CHECK_EQ_INT(sp_token_from_pkey(key, t_key), 0);
	SP_CHECK_EQ_INT(sp_token_from_cert(x, t_cert), 0);
	SP_CHECK_MEM(t_key, t_cert, SP_TOKEN_LEN);
	/* A different key gives a different token. */
	SP_CHECK_EQ_INT(sp_token_from_pkey(other, t_other), 0);
	SP_CHECK(memcmp(t_other, t_key, SP_TOKEN_LEN) != 0);
out:
	X509_free(x);
	EVP_PKEY_free(other);
	EVP_PKEY_free(key);
}

static void test_token_errors(void)
{
	X509 *empty = X509_new();
	uint8_t token[SP_TOKEN_LEN], before[SP_TOKEN_LEN];
	X509 *x = load_cert(fixture_cert_pem);

	memset(before, 0x5a, sizeof(before));
	memcpy(token, before, sizeof(token));
	SP_CHECK_EQ_INT(sp_token_from_cert(NULL, token), -EINVAL);
	SP_CHECK_EQ_INT(sp_token_from_pkey(NULL, token), -EINVAL);
	SP_CHECK_EQ_INT(sp_token_from_cert(x, NULL), -EINVAL);
	/* A certificate without a public key has no token. */
	SP_CHECK(empty != NULL);
	if (empty != NULL)
		SP_CHECK_EQ_INT(sp_token_from_cert(empty, token), -EINVAL);
	SP_CHECK_MEM(token, before, SP_TOKEN_LEN);
	X509_free(x);
	X509_free(empty);
}

int main(void)
{
	SP_RUN(test_hex_known);
	SP_RUN(test_hex_round_trip);
	SP_RUN(test_parse_case);
	SP_RUN(test_parse_errors);
	SP_RUN(test_short);
	SP_RUN(test_fixture_cert);
	SP_RUN(test_fresh_key_and_cert);
	SP_RUN(test_token_errors);
	return sp_test_done();
}
