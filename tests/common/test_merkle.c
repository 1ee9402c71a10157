/*
 * test_merkle.c: unit tests of common/sp_merkle beyond what merkle_oracle.py compares with
 * hashlib: every proof of every tree up to 130 leaves verifies and fails with any flipped bit,
 * the two-phase SP_MERKLE_NEED protocol, argument checks and the wire form of proofs.
 */
#include "merkle_mem.h"
#include "sp_test.h"

#include <openssl/sha.h>

#define H SP_MERKLE_HASH_LEN

static struct merkle_mem tree(unsigned n)
{
	struct merkle_mem m = {0};

	for (unsigned i = 0; i < n; i++) {
		uint8_t d[4] = {(uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
		                (uint8_t)i};

		SP_CHECK(merkle_mem_append(&m, d, sizeof(d)) == 0);
	}
	return m;
}

static void test_empty_and_single(void)
{
	struct merkle_mem m = tree(1);
	uint8_t r[H], want[H], d[4] = {0};
	unsigned count = 99;
	uint8_t proof[SP_MERKLE_MAX_PROOF][H];

	SP_CHECK(sp_merkle_root(0, merkle_mem_get, &m, r) == 0);
	SHA256((const uint8_t *)"", 0, want);
	SP_CHECK_MEM(r, want, H);
	SP_CHECK(sp_merkle_root(1, merkle_mem_get, &m, r) == 0);
	SP_CHECK(sp_merkle_leaf_hash(d, 4, want) == 0);
	SP_CHECK_MEM(r, want, H);
	SP_CHECK(sp_merkle_inclusion_proof(0, 1, merkle_mem_get, &m, proof, &count) == 0);
	SP_CHECK_EQ_INT(count, 0);
	SP_CHECK(sp_merkle_verify_inclusion(0, 1, want, (const uint8_t *)proof, 0, r) == 0);
	SP_CHECK(sp_merkle_verify_inclusion(1, 1, want, (const uint8_t *)proof, 0, r) ==
	         SP_MERKLE_EPROOF);
	SP_CHECK(sp_merkle_inclusion_proof(1, 1, merkle_mem_get, &m, proof, &count) ==
	         SP_MERKLE_EINVAL);
	SP_CHECK(sp_merkle_consistency_proof(0, 1, merkle_mem_get, &m, proof, &count) ==
	         SP_MERKLE_EINVAL);
	SP_CHECK(sp_merkle_consistency_proof(2, 1, merkle_mem_get, &m, proof, &count) ==
	         SP_MERKLE_EINVAL);
	merkle_mem_free(&m);
}

static void test_all_proofs_and_tampering(void)
{
	struct merkle_mem m = tree(130);
	uint8_t proof[SP_MERKLE_MAX_PROOF][H], roots[131][H];
	unsigned count;

	for (unsigned n = 1; n <= 130; n++)
		SP_CHECK(sp_merkle_root(n, merkle_mem_get, &m, roots[n]) == 0);
	for (unsigned n = 1; n <= 130; n++) {
		for (unsigned i = 0; i < n; i++) {
			const uint8_t *leaf = m.lv[0][i];

			SP_CHECK(sp_merkle_inclusion_proof(i, n, merkle_mem_get, &m, proof,
			                                   &count) == 0);
			SP_CHECK(sp_merkle_verify_inclusion(i, n, leaf, (const uint8_t *)proof,
			                                    count, roots[n]) == 0);
			for (unsigned b = 0; b < count * H && n % 13 == 0; b++) {
				proof[b / H][b % H] ^= 0x80;
				if (sp_merkle_verify_inclusion(i, n, leaf, (const uint8_t *)proof,
				                               count, roots[n]) == 0)
					SP_FAIL("incl %u/%u byte %u flipped accepted", i, n, b);
				proof[b / H][b % H] ^= 0x80;
			}
		}
		for (unsigned o = 1; o <= n; o++) {
			SP_CHECK(sp_merkle_consistency_proof(o, n, merkle_mem_get, &m, proof,
			                                     &count) == 0);
			SP_CHECK(sp_merkle_verify_consistency(o, n, roots[o], roots[n],
			                                      (const uint8_t *)proof, count) == 0);
			if (o < n &&
			    sp_merkle_verify_consistency(o, n, roots[n], roots[n],
			                                 (const uint8_t *)proof, count) == 0)
				SP_FAIL("cons %u->%u with the wrong old root accepted", o, n);
			for (unsigned b = 0; b < count * H && n % 11 == 0; b++) {
				proof[b / H][b % H] ^= 0x01;
				if (sp_merkle_verify_consistency(o, n, roots[o], roots[n],
				                                 (const uint8_t *)proof,
				                                 count) == 0)
					SP_FAIL("cons %u->%u byte %u flipped accepted", o, n, b);
				proof[b / H][b % H] ^= 0x01;
			}
		}
	}
	merkle_mem_free(&m);
}

/* A callback that knows only the nodes fetched so far, as the server's Redis cache does. */
struct lazy {
	struct merkle_mem *m;
	unsigned n_have, n_missing, rounds;
	struct {
		unsigned level;
		uint64_t index;
	} have[256], missing[256];
};

static int lazy_get(void *ctx, unsigned level, uint64_t index, uint8_t out[H])
{
	struct lazy *z = ctx;

	for (unsigned i = 0; i < z->n_have; i++)
		if (z->have[i].level == level && z->have[i].index == index)
			return merkle_mem_get(z->m, level, index, out);
	z->missing[z->n_missing].level = level;
	z->missing[z->n_missing++].index = index;
	return SP_MERKLE_NEED;
}

static void test_need_protocol(void)
{
	struct merkle_mem m = tree(1000);
	struct lazy z = {.m = &m};
	uint8_t proof[SP_MERKLE_MAX_PROOF][H], want[SP_MERKLE_MAX_PROOF][H], root[H];
	unsigned count, wcount;
	int r;

	SP_CHECK(sp_merkle_inclusion_proof(777, 1000, merkle_mem_get, &m, want, &wcount) == 0);
	while ((r = sp_merkle_inclusion_proof(777, 1000, lazy_get, &z, proof, &count)) ==
	       SP_MERKLE_NEED) {
		SP_CHECK(z.n_missing > 0);
		for (unsigned i = 0; i < z.n_missing; i++)
			z.have[z.n_have++] = z.missing[i];
		z.n_missing = 0;
		z.rounds++;
	}
	SP_CHECK_EQ_INT(r, 0);
	SP_CHECK_EQ_INT(z.rounds, 1); /* one round trip: every missing node was noted at once */
	SP_CHECK_EQ_INT(count, wcount);
	SP_CHECK_MEM(proof, want, (size_t)count * H);
	SP_CHECK(z.n_have <= 20);
	SP_CHECK(sp_merkle_root(1000, merkle_mem_get, &m, root) == 0);
	SP_CHECK(sp_merkle_verify_inclusion(777, 1000, m.lv[0][777], (const uint8_t *)proof, count,
	                                    root) == 0);
	merkle_mem_free(&m);
}

static void test_wire(void)
{
	uint8_t proof[SP_MERKLE_MAX_PROOF][H], back[SP_MERKLE_MAX_PROOF][H];
	uint8_t wire[SP_MERKLE_PROOF_WIRE_MAX + 1];
	unsigned count = 0;
	size_t len;

	for (unsigned i = 0; i < 3; i++)
		memset(proof[i], (int)i + 1, H);
	len = sp_merkle_proof_encode((const uint8_t *)proof, 3, wire);
	SP_CHECK_EQ_INT(len, 1 + 3 * H);
	SP_CHECK(sp_merkle_proof_parse(wire, len, back, &count) == 0);
	SP_CHECK_EQ_INT(count, 3);
	SP_CHECK_MEM(back, proof, 3 * H);
	SP_CHECK(sp_merkle_proof_parse(wire, len - 1, back, &count) == SP_MERKLE_EINVAL);
	SP_CHECK(sp_merkle_proof_parse(wire, len + 1, back, &count) == SP_MERKLE_EINVAL);
	SP_CHECK(sp_merkle_proof_parse(wire, 0, back, &count) == SP_MERKLE_EINVAL);
	wire[0] = SP_MERKLE_MAX_PROOF + 1;
	SP_CHECK(sp_merkle_proof_parse(wire, sizeof(wire), back, &count) == SP_MERKLE_EINVAL);
	wire[0] = 0;
	SP_CHECK(sp_merkle_proof_parse(wire, 1, back, &count) == 0);
	SP_CHECK_EQ_INT(count, 0);
}

int main(void)
{
	SP_RUN(test_empty_and_single);
	SP_RUN(test_all_proofs_and_tampering);
	SP_RUN(test_need_protocol);
	SP_RUN(test_wire);
	return sp_test_done();
}
