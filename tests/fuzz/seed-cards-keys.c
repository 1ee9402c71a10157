/*
 * seed-cards-keys.c: writes the seed corpora of fuzz-card-parse and fuzz-key-file, one file per
 * input named by the SHA-1 of its content:
 *
 *	build/sanitize/tests/fuzz/seed-cards-keys tests/fuzz/corpus/card-parse \
 *	        tests/fuzz/corpus/key-file
 *
 * Cards: versions 1, 2 and 3 (the last two with a hybrid suite where the build has it; run it
 * in a Debian 13 build for those), with and without a certificate, and each with one member
 * changed (epoch, v, a suite name); a cards-seen file. Key file bodies: version 1 (X25519, and
 * with an X-Wing seed) and version 2 (epoch, created_at), read back from files made by
 * sp_seal_keygen_file_ex() / sp_seal_keygen_file_epoch(), and truncated. ECDSA and the keys are
 * random, so each run writes new files; commit one run's.
 */
#include "sp_card.h"
#include "sp_seal.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned written;

static void die(const char *what)
{
	fprintf(stderr, "seed-cards-keys: %s\n", what);
	exit(1);
}

static void emit(const char *dir, const void *data, size_t len)
{
	uint8_t md[20];
	char path[4096];
	FILE *fp;
	int n;

	if (!EVP_Digest(data, len, md, NULL, EVP_sha1(), NULL))
		die("EVP_Digest");
	n = snprintf(path, sizeof(path), "%s/", dir);
	for (int i = 0; i < 20; i++)
		n += snprintf(path + n, sizeof(path) - (size_t)n, "%02x", md[i]);
	fp = fopen(path, "wb");
	if (fp == NULL || fwrite(data, 1, len, fp) != len || fclose(fp) != 0)
		die(path);
	written++;
}

/* A card of the sealer, and copies with one textual change each. */
static void cards(const char *dir, struct sp_sealer *s, int version)
{
	static const char *const edits[][2] = {{"\"v\":", "\"v\":9"},
	                                       {"\"epoch\":", "\"epoch\":0"},
	                                       {"\"suite\":\"X", "\"suite\":\"Y"}};
	char *json = NULL, *e;

	if (sp_card_make_version(s, 1795000000, version, &json) != 0)
		die("sp_card_make_version");
	emit(dir, json, strlen(json));
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		char *at = strstr(json, edits[i][0]), *end;
		size_t pre;

		if (at == NULL)
			continue;
		pre = (size_t)(at - json);
		end = at + strlen(edits[i][0]);
		while (*end >= '0' && *end <= '9')
			end++;
		e = malloc(strlen(json) + 16);
		if (e == NULL)
			die("out of memory");
		memcpy(e, json, pre);
		strcpy(e + pre, edits[i][1]);
		strcat(e, i == 2 ? at + strlen(edits[i][0]) : end);
		emit(dir, e, strlen(e));
		free(e);
	}
	free(json);
}

/* The base64-decoded body of a v2 key file, and its truncations. */
static void body_of(const char *dir, const char *path)
{
	FILE *fp = fopen(path, "r");
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long len = 0;

	if (fp == NULL || PEM_read(fp, &name, &header, &data, &len) != 1)
		die("PEM_read");
	fclose(fp);
	emit(dir, data, (size_t)len);
	emit(dir, data, (size_t)len - 1);
	emit(dir, data, 14);
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
}

int main(int argc, char **argv)
{
	EVP_PKEY *sign = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *seal = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	struct sp_sealer *s = NULL;
	char tmp[] = "/tmp/seed-cards-keys-XXXXXX", path[64];
	static const char seen[] =
	        "d34c0a63eb0687e71ebaf4c532ac50a838adf4270ca33f3eb5aea4147d2d96dc"
	        " 3 1795000000\n"
	        "D34C0A63EB0687E71EBAF4C532AC50A838ADF4270CA33F3EB5AEA4147D2D96DD"
	        " 0 0\n";
	int hybrid = sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID);

	if (argc != 3) {
		fprintf(stderr, "usage: seed-cards-keys CARD-DIR KEY-DIR\n");
		return 2;
	}
	if (sign == NULL || seal == NULL || sp_sealer_new(sign, NULL, seal, &s) != 0)
		die("sealer");
	cards(argv[1], s, 1);
	cards(argv[1], s, 2);
	if (hybrid) {
		uint8_t seed[32] = {1, 2, 3};

		if (sp_sealer_set_hybrid_key(s, seed, sizeof(seed)) != 0)
			die("hybrid key");
		cards(argv[1], s, 2);
	}
	if (sp_sealer_set_epoch(s, 4) != 0)
		die("epoch");
	cards(argv[1], s, 3);
	emit(argv[1], seen, strlen(seen));

	if (mkdtemp(tmp) == NULL)
		die("mkdtemp");
	snprintf(path, sizeof(path), "%s/k", tmp);
	for (int h = 0; h <= hybrid; h++) {
		if (h == 1 && (sp_seal_keygen_file_ex(path, 1) != 0))
			die("keygen");
		if (h == 1) {
			body_of(argv[2], path);
			unlink(path);
		}
		if (sp_seal_keygen_file_epoch(path, h, 7, 1795000000) != 0)
			die("keygen epoch");
		body_of(argv[2], path);
		unlink(path);
	}
	{
		/* A version 1 body with one X25519 key, written out by hand. */
		uint8_t b[2 + 4 + 32] = {1, 1, 0x00, 0x20, 0, 32};

		memset(b + 6, 0x42, 32);
		emit(argv[2], b, sizeof(b));
	}
	rmdir(tmp);
	sp_sealer_free(s);
	EVP_PKEY_free(sign);
	EVP_PKEY_free(seal);
	printf("%u inputs written\n", written);
	return 0;
}
