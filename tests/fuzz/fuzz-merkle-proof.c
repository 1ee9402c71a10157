/*
 * fuzz-merkle-proof.c: fuzz target for the transparency log's proof parser and verifiers
 * (common/sp_merkle, PROTOCOL.md 15.4).
 *
 * Input: byte 0 picks the proof kind (even: inclusion, odd: consistency), bytes 1-2 and 3-4
 * (u16 big-endian) the two numbers (leaf index and tree size, or old and new size), the rest
 * is a proof on the wire (count u8 || count x 32 bytes). The tree is fixed: FUZZ_LEAVES leaves,
 * leaf i being the 4 bytes of i big-endian (as tests/common/test_merkle.c builds it).
 * Invariants: a proof that parses re-encodes to the same bytes; a proof that verifies is
 * exactly the proof the tree itself gives (SHA-256 being collision resistant, no other can
 * verify), and verification never reads past the parsed hashes. Seeds: merkle-seed.py.
 */
#include "../common/merkle_mem.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_LEAVES 300
#define H           SP_MERKLE_HASH_LEN

static struct merkle_mem tree;
static uint8_t roots[FUZZ_LEAVES + 1][H];

static void fail(const char *what)
{
	fprintf(stderr, "fuzz-merkle-proof: %s\n", what);
	abort();
}

static void setup(void)
{
	for (unsigned i = 0; i < FUZZ_LEAVES; i++) {
		uint8_t d[4] = {(uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
		                (uint8_t)i};

		if (merkle_mem_append(&tree, d, sizeof(d)) < 0)
			fail("building the tree");
	}
	for (unsigned n = 0; n <= FUZZ_LEAVES; n++)
		if (sp_merkle_root(n, merkle_mem_get, &tree, roots[n]) < 0)
			fail("computing a root");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t proof[SP_MERKLE_MAX_PROOF][H], real[SP_MERKLE_MAX_PROOF][H];
	uint8_t *copy, back[SP_MERKLE_PROOF_WIRE_MAX];
	unsigned count = 0, real_count = 0;
	uint64_t a, b;
	int r;

	if (tree.size == 0)
		setup();
	if (size < 5)
		return 0;
	a = (uint64_t)data[1] << 8 | data[2];
	b = (uint64_t)data[3] << 8 | data[4];
	/* An exact-size heap copy of the proof bytes, so ASan sees a read past them. */
	copy = malloc(size - 5 ? size - 5 : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data + 5, size - 5);
	r = sp_merkle_proof_parse(copy, size - 5, proof, &count);
	if (r == 0) {
		if (count > SP_MERKLE_MAX_PROOF || size - 5 != 1 + (size_t)count * H ||
		    sp_merkle_proof_encode((const uint8_t *)proof, count, back) != size - 5 ||
		    memcmp(back, copy, size - 5) != 0)
			fail("a parsed proof does not re-encode to its bytes");
	} else if (r != SP_MERKLE_EINVAL) {
		fail("parse returned an unknown error");
	}
	free(copy);
	if (r != 0 || b > FUZZ_LEAVES)
		return 0;
	if ((data[0] & 1) == 0) {
		if (a >= b) {
			if (b > 0 &&
			    sp_merkle_verify_inclusion(a, b, tree.lv[0][0], (const uint8_t *)proof,
			                               count, roots[b]) == 0)
				fail("an inclusion proof of an index past the tree verified");
			return 0;
		}
		r = sp_merkle_verify_inclusion(a, b, tree.lv[0][a], (const uint8_t *)proof, count,
		                               roots[b]);
		if (r == 0) {
			if (sp_merkle_inclusion_proof(a, b, merkle_mem_get, &tree, real,
			                              &real_count) < 0)
				fail("the tree gave no inclusion proof");
			if (real_count != count || memcmp(real, proof, (size_t)count * H) != 0)
				fail("a forged inclusion proof verified");
		} else if (r != SP_MERKLE_EPROOF) {
			fail("inclusion verification returned an unknown error");
		}
	} else {
		if (a == 0 || a > b)
			return 0;
		r = sp_merkle_verify_consistency(a, b, roots[a], roots[b], (const uint8_t *)proof,
		                                 count);
		if (r == 0) {
			if (sp_merkle_consistency_proof(a, b, merkle_mem_get, &tree, real,
			                                &real_count) < 0)
				fail("the tree gave no consistency proof");
			if (real_count != count || memcmp(real, proof, (size_t)count * H) != 0)
				fail("a forged consistency proof verified");
		} else if (r != SP_MERKLE_EPROOF) {
			fail("consistency verification returned an unknown error");
		}
	}
	return 0;
}
