/*
 * test_dir.c: a client's checks of the key directory's heads (client/sp_dir): the log key's
 * signature, consistency with the kept head (a larger head with a valid proof is taken; a
 * smaller one, one of the same size with another root, or a proof from another tree is a fork),
 * the kept head's file, the fingerprint. Heads are made here over trees built with
 * common/sp_merkle; the lookup checks are exercised end to end by tests/e2e/test_directory.py.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/merkle_mem.h"
#include "sp_dir.h"
#include "sp_test.h"

static EVP_PKEY *log_key, *other_key;

/* A signed head over the first n leaves of m, into out; returns its length. */
static size_t head_of(EVP_PKEY *k, struct merkle_mem *m, uint64_t n, uint8_t *out)
{
	uint8_t tbs[21 + 48], root[32];
	size_t sl = 100;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	SP_CHECK(sp_merkle_root(n, merkle_mem_get, m, root) == 0);
	for (int i = 0; i < 8; i++) {
		out[i] = (uint8_t)(n >> (56 - 8 * i));
		out[8 + i] = (uint8_t)(UINT64_C(1234567) >> (56 - 8 * i));
	}
	memcpy(out + 16, root, 32);
	memcpy(tbs, "sealpush/1 tree head", 21);
	memcpy(tbs + 21, out, 48);
	SP_CHECK(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
	         EVP_DigestSign(md, out + 50, &sl, tbs, sizeof(tbs)) == 1);
	EVP_MD_CTX_free(md);
	out[48] = (uint8_t)(sl >> 8);
	out[49] = (uint8_t)sl;
	return 50 + sl;
}

static void tree(struct merkle_mem *m, unsigned n, unsigned salt)
{
	for (unsigned i = 0; i < n; i++) {
		uint8_t d[8] = {(uint8_t)salt, (uint8_t)(i >> 8), (uint8_t)i};

		SP_CHECK(merkle_mem_append(m, d, sizeof(d)) == 0);
	}
}

static size_t cons_of(struct merkle_mem *m, uint64_t old, uint64_t n, uint8_t *out)
{
	uint8_t proof[SP_MERKLE_MAX_PROOF][32];
	unsigned count = 0;

	SP_CHECK(sp_merkle_consistency_proof(old, n, merkle_mem_get, m, proof, &count) == 0);
	return sp_merkle_proof_encode((const uint8_t *)proof, count, out);
}

static void test_heads(void)
{
	struct merkle_mem a = {0}, b = {0};
	uint8_t h[200], c[SP_MERKLE_PROOF_WIRE_MAX];
	sp_dir_head_t kept = {0}, out, saved;
	size_t hl, cl;

	tree(&a, 40, 1);
	tree(&b, 40, 2); /* another history */
	hl = head_of(log_key, &a, 10, h);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, NULL, 0, &kept, &out), SP_DIR_OK);
	SP_CHECK_EQ_INT(kept.size, 10);
	saved = kept;
	/* Not the log key; a flipped byte. */
	hl = head_of(other_key, &a, 20, h);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, NULL, 0, &kept, &out), SP_DIR_ERR_HEAD);
	hl = head_of(log_key, &a, 20, h);
	h[20] ^= 1;
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, NULL, 0, &kept, &out), SP_DIR_ERR_HEAD);
	h[20] ^= 1;
	/* Larger: only with a valid consistency proof. */
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, NULL, 0, &kept, &out), SP_DIR_ERR_FORK);
	cl = cons_of(&b, 10, 20, c);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, c, cl, &kept, &out), SP_DIR_ERR_FORK);
	SP_CHECK(memcmp(&kept, &saved, sizeof(kept)) == 0); /* unchanged after a refusal */
	cl = cons_of(&a, 10, 20, c);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, c, cl, &kept, &out), SP_DIR_OK);
	SP_CHECK_EQ_INT(kept.size, 20);
	/* The other history at a larger size: a fork. */
	hl = head_of(log_key, &b, 30, h);
	cl = cons_of(&b, 20, 30, c);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, c, cl, &kept, &out), SP_DIR_ERR_FORK);
	/* Same size, another root; a smaller head. */
	hl = head_of(log_key, &b, 20, h);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, NULL, 0, &kept, &out), SP_DIR_ERR_FORK);
	hl = head_of(log_key, &a, 20, h);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, NULL, 0, &kept, &out), SP_DIR_OK);
	hl = head_of(log_key, &a, 15, h);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, hl, log_key, NULL, 0, &kept, &out), SP_DIR_ERR_FORK);
	SP_CHECK_EQ_INT(sp_dir_check_head(h, 49, log_key, NULL, 0, &kept, &out), SP_DIR_ERR_HEAD);
	merkle_mem_free(&a);
	merkle_mem_free(&b);
}

static void test_file_and_fingerprint(void)
{
	char path[] = "/tmp/sp-test-dir-XXXXXX", file[64], fp1[65], fp2[65];
	sp_dir_head_t h = {.size = 77, .timestamp_ms = 5}, back;

	memset(h.root, 0xab, 32);
	SP_CHECK(mkdtemp(path) != NULL);
	snprintf(file, sizeof(file), "%s/head", path);
	SP_CHECK_EQ_INT(sp_dir_head_load(file, &back), SP_DIR_OK);
	SP_CHECK_EQ_INT(back.size, 0);
	SP_CHECK_EQ_INT(sp_dir_head_save(file, &h), SP_DIR_OK);
	SP_CHECK_EQ_INT(sp_dir_head_load(file, &back), SP_DIR_OK);
	SP_CHECK(memcmp(&back, &h, sizeof(h)) == 0);
	sp_dir_fingerprint(&h, fp1);
	h.root[0] ^= 1;
	sp_dir_fingerprint(&h, fp2);
	SP_CHECK_EQ_INT(strlen(fp1), 64);
	SP_CHECK(strcmp(fp1, fp2) != 0);
	unlink(file);
	rmdir(path);
}

int main(void)
{
	log_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	other_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	SP_RUN(test_heads);
	SP_RUN(test_file_and_fingerprint);
	EVP_PKEY_free(log_key);
	EVP_PKEY_free(other_key);
	return sp_test_done();
}
