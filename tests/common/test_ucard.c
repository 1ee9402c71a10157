/*
 * test_ucard.c: user cards (common/sp_ucard): made and parsed back; every change a relay could
 * make to a card (handle, date, a device added, removed, swapped or reordered, another user
 * key) breaks the user signature; malformed cards are refused.
 */
#include "sp_test.h"
#include "sp_ucard.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

static EVP_PKEY *ukey, *other;

/* A device card as far as sp_ucard reads it: a token and a signature (base64 of some bytes). */
static char *device(unsigned n, const char *sig)
{
	char *s = malloc(256);

	snprintf(s, 256, "{\"sig\":\"%s\",\"token\":\"%064x\",\"v\":1}", sig, n);
	return s;
}

static char *make(EVP_PKEY *k, const char *handle, int64_t at, unsigned n_dev)
{
	char *devs[4], *json = NULL;

	for (unsigned i = 0; i < n_dev; i++)
		devs[i] = device(i + 1, i % 2 ? "MEUCIQDx" : "MEQCIGST");
	SP_CHECK(sp_ucard_make(k, handle, at, (const char *const *)devs, n_dev, &json) == 0);
	for (unsigned i = 0; i < n_dev; i++)
		free(devs[i]);
	return json;
}

static int parse(const char *json)
{
	sp_ucard_t c;
	int r = sp_ucard_parse(json, strlen(json), &c);

	sp_ucard_clear(&c);
	return r;
}

/* The card with one member replaced by the JSON value `value`, re-serialised. */
static char *edit(const char *json, const char *member, const char *value)
{
	json_t *root = json_loads(json, 0, NULL), *v = json_loads(value, JSON_DECODE_ANY, NULL);
	char *out;

	json_object_set_new(root, member, v);
	out = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return out;
}

static void test_roundtrip(void)
{
	char *json = make(ukey, "alice", 1795000000, 3);
	uint8_t spki_fp[32], *spki = NULL;
	int spki_len = i2d_PUBKEY(ukey, &spki);
	sp_ucard_t c;

	SP_CHECK(json != NULL);
	SP_CHECK_EQ_INT(sp_ucard_parse(json, strlen(json), &c), 0);
	SP_CHECK(c.handle_len == 5 && strcmp(c.handle, "alice") == 0);
	SP_CHECK_EQ_INT(c.issued_at, 1795000000);
	SP_CHECK_EQ_INT(c.n_devices, 3);
	SP_CHECK_EQ_INT(c.dev[2].token[31], 3);
	SP_CHECK(strstr(c.dev[1].card, "MEUCIQDx") != NULL);
	SHA256(spki, (size_t)spki_len, spki_fp);
	SP_CHECK_MEM(c.ukey_fp, spki_fp, 32);
	{
		EVP_PKEY *k = sp_ucard_user_key(&c);

		SP_CHECK(k != NULL && EVP_PKEY_eq(k, ukey) == 1);
		EVP_PKEY_free(k);
	}
	sp_ucard_clear(&c);
	OPENSSL_free(spki);
	free(json);
}

static void test_tampering(void)
{
	char *json = make(ukey, "alice", 1795000000, 2), *bad, *d3, *other_card;
	json_t *root = json_loads(json, 0, NULL), *devs = json_object_get(root, "devices");
	char *two, *swapped, *one, *three;

	/* handle, date */
	bad = edit(json, "handle", "\"mallory\"");
	SP_CHECK_EQ_INT(parse(bad), -EKEYREJECTED);
	free(bad);
	bad = edit(json, "issued_at", "1795000001");
	SP_CHECK_EQ_INT(parse(bad), -EKEYREJECTED);
	free(bad);
	/* a device added by the relay */
	d3 = device(77, "MEQCIAAA");
	json_array_append_new(devs, json_loads(d3, 0, NULL));
	three = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(parse(three), -EKEYREJECTED);
	/* one removed */
	json_array_remove(devs, 2);
	json_array_remove(devs, 1);
	one = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(parse(one), -EKEYREJECTED);
	/* reordered */
	json_decref(root);
	root = json_loads(json, 0, NULL);
	devs = json_object_get(root, "devices");
	{
		json_t *first = json_incref(json_array_get(devs, 0));

		json_array_remove(devs, 0);
		json_array_append_new(devs, first);
	}
	swapped = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(parse(swapped), -EKEYREJECTED);
	/* a device card swapped for another of the same token (another signature) */
	json_decref(root);
	root = json_loads(json, 0, NULL);
	devs = json_object_get(root, "devices");
	json_object_set_new(json_array_get(devs, 0), "sig", json_string("MEQCIBBB"));
	two = json_dumps(root, JSON_COMPACT);
	SP_CHECK_EQ_INT(parse(two), -EKEYREJECTED);
	/* the relay's own user key in place of alice's */
	other_card = make(other, "alice", 1795000000, 2);
	{
		json_t *o = json_loads(other_card, 0, NULL), *a = json_loads(json, 0, NULL);
		char *mixed;

		json_object_set(o, "sig", json_object_get(a, "sig"));
		mixed = json_dumps(o, JSON_COMPACT);
		SP_CHECK_EQ_INT(parse(mixed), -EKEYREJECTED);
		free(mixed);
		json_decref(o);
		json_decref(a);
	}
	SP_CHECK_EQ_INT(parse(json), 0);
	SP_CHECK_EQ_INT(parse(other_card), 0);
	json_decref(root);
	free(json);
	free(d3);
	free(three);
	free(one);
	free(swapped);
	free(two);
	free(other_card);
}

static void test_malformed(void)
{
	char *json = make(ukey, "bob", 5, 1), *bad;
	char *devs[2];

	bad = edit(json, "extra", "1");
	SP_CHECK_EQ_INT(parse(bad), -EBADMSG);
	free(bad);
	bad = edit(json, "v", "2");
	SP_CHECK_EQ_INT(parse(bad), -EBADMSG);
	free(bad);
	bad = edit(json, "devices", "[]");
	SP_CHECK_EQ_INT(parse(bad), -EBADMSG);
	free(bad);
	bad = edit(json, "ukey", "\"AAAA\"");
	SP_CHECK(parse(bad) < 0);
	free(bad);
	bad = edit(json, "sig", "\"not base64!\"");
	SP_CHECK_EQ_INT(parse(bad), -EBADMSG);
	free(bad);
	SP_CHECK_EQ_INT(parse("{"), -EBADMSG);
	SP_CHECK_EQ_INT(sp_ucard_parse("", 0, &(sp_ucard_t){0}), -EBADMSG);
	/* handles */
	SP_CHECK(sp_ucard_handle_ok("alice.smith-2", 13));
	SP_CHECK(!sp_ucard_handle_ok("Alice", 5));
	SP_CHECK(!sp_ucard_handle_ok(".alice", 6));
	SP_CHECK(!sp_ucard_handle_ok("al ice", 6));
	SP_CHECK(!sp_ucard_handle_ok("", 0));
	/* two devices with one token */
	devs[0] = device(9, "MEQCIGST");
	devs[1] = device(9, "MEUCIQDx");
	{
		char *out = NULL;

		SP_CHECK_EQ_INT(sp_ucard_make(ukey, "bob", 5, (const char *const *)devs, 2, &out),
		                -EINVAL);
		SP_CHECK_EQ_INT(sp_ucard_make(ukey, "Bob", 5, (const char *const *)devs, 1, &out),
		                -EINVAL);
	}
	free(devs[0]);
	free(devs[1]);
	free(json);
}

int main(void)
{
	ukey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	SP_RUN(test_roundtrip);
	SP_RUN(test_tampering);
	SP_RUN(test_malformed);
	EVP_PKEY_free(ukey);
	EVP_PKEY_free(other);
	return sp_test_done();
}
