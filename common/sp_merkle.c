/*
 * sp_merkle.c: RFC 9162 2.1 hashing, proofs and their verification (see sp_merkle.h).
 *
 * Ranges. Every subtree the RFC's recursions visit is D[a : a + n) with a a multiple of a power
 * of two 2^j >= n (true of the root, and kept by each split at k, the largest power of two
 * below n), so its left part D[a : a + k) is always a perfect node and only the rightmost
 * part of a range recurses: mth() reads at most log2(n) + 1 nodes.
 */
#include "sp_merkle.h"

#include <openssl/evp.h>
#include <string.h>

struct walk {
	sp_merkle_node_fn get;
	void *ctx;
	int need; /* some node was missing: the result is not yet valid, keep noting the others */
	int err;  /* a hard error: stop */
};

static int sha256_parts(const uint8_t *p1, size_t l1, const uint8_t *p2, size_t l2,
                        const uint8_t *p3, size_t l3, uint8_t out[SP_MERKLE_HASH_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int olen = 0;
	int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	         (l1 == 0 || EVP_DigestUpdate(md, p1, l1) == 1) &&
	         (l2 == 0 || EVP_DigestUpdate(md, p2, l2) == 1) &&
	         (l3 == 0 || EVP_DigestUpdate(md, p3, l3) == 1) &&
	         EVP_DigestFinal_ex(md, out, &olen) == 1 && olen == SP_MERKLE_HASH_LEN;

	EVP_MD_CTX_free(md);
	return ok ? 0 : SP_MERKLE_ECRYPTO;
}

int sp_merkle_leaf_hash(const uint8_t *data, size_t len, uint8_t out[SP_MERKLE_HASH_LEN])
{
	static const uint8_t zero = 0x00;

	return sha256_parts(&zero, 1, data, len, NULL, 0, out);
}

int sp_merkle_node_hash(const uint8_t left[SP_MERKLE_HASH_LEN],
                        const uint8_t right[SP_MERKLE_HASH_LEN], uint8_t out[SP_MERKLE_HASH_LEN])
{
	static const uint8_t one = 0x01;

	return sha256_parts(&one, 1, left, SP_MERKLE_HASH_LEN, right, SP_MERKLE_HASH_LEN, out);
}

/* The largest power of two strictly below n (n >= 2). */
static uint64_t split_point(uint64_t n)
{
	uint64_t k = 1;

	while (k << 1 < n)
		k <<= 1;
	return k;
}

static int is_pow2(uint64_t n)
{
	return n != 0 && (n & (n - 1)) == 0;
}

static unsigned log2_exact(uint64_t n)
{
	unsigned l = 0;

	while (n > 1) {
		n >>= 1;
		l++;
	}
	return l;
}

static void walk_get(struct walk *w, unsigned level, uint64_t index,
                     uint8_t out[SP_MERKLE_HASH_LEN])
{
	int r;

	if (w->err != 0)
		return;
	r = w->get(w->ctx, level, index, out);
	if (r == SP_MERKLE_NEED) {
		w->need = 1;
		memset(out, 0, SP_MERKLE_HASH_LEN);
	} else if (r < 0) {
		w->err = r;
	}
}

static void walk_node(struct walk *w, const uint8_t l[SP_MERKLE_HASH_LEN],
                      const uint8_t r[SP_MERKLE_HASH_LEN], uint8_t out[SP_MERKLE_HASH_LEN])
{
	if (w->err == 0 && sp_merkle_node_hash(l, r, out) < 0)
		w->err = SP_MERKLE_ECRYPTO;
}

/* MTH(D[a : a + n)), a aligned as the file comment says. */
static void mth(struct walk *w, uint64_t a, uint64_t n, uint8_t out[SP_MERKLE_HASH_LEN])
{
	uint8_t left[SP_MERKLE_HASH_LEN], right[SP_MERKLE_HASH_LEN];
	uint64_t k;

	if (w->err != 0)
		return;
	if (n == 0) {
		if (sha256_parts(NULL, 0, NULL, 0, NULL, 0, out) < 0)
			w->err = SP_MERKLE_ECRYPTO;
		return;
	}
	if (is_pow2(n) && a % n == 0) {
		walk_get(w, log2_exact(n), a / n, out);
		return;
	}
	k = split_point(n);
	mth(w, a, k, left);
	mth(w, a + k, n - k, right);
	walk_node(w, left, right, out);
}

static int walk_result(const struct walk *w)
{
	return w->err != 0 ? w->err : w->need ? SP_MERKLE_NEED : 0;
}

int sp_merkle_root(uint64_t size, sp_merkle_node_fn get, void *ctx, uint8_t out[SP_MERKLE_HASH_LEN])
{
	struct walk w = {get, ctx, 0, 0};

	if (size > (UINT64_C(1) << 63))
		return SP_MERKLE_EINVAL;
	mth(&w, 0, size, out);
	return walk_result(&w);
}

struct proof_out {
	uint8_t (*h)[SP_MERKLE_HASH_LEN];
	unsigned n;
};

static uint8_t *proof_next(struct walk *w, struct proof_out *p)
{
	static uint8_t sink[SP_MERKLE_HASH_LEN];

	if (p->n >= SP_MERKLE_MAX_PROOF) {
		w->err = SP_MERKLE_EINVAL;
		return sink;
	}
	return p->h[p->n++];
}

static void path(struct walk *w, struct proof_out *p, uint64_t m, uint64_t a, uint64_t n)
{
	uint64_t k;

	if (n <= 1 || w->err != 0)
		return;
	k = split_point(n);
	if (m < k) {
		path(w, p, m, a, k);
		mth(w, a + k, n - k, proof_next(w, p));
	} else {
		path(w, p, m - k, a + k, n - k);
		mth(w, a, k, proof_next(w, p));
	}
}

int sp_merkle_inclusion_proof(uint64_t index, uint64_t size, sp_merkle_node_fn get, void *ctx,
                              uint8_t proof[][SP_MERKLE_HASH_LEN], unsigned *count)
{
	struct walk w = {get, ctx, 0, 0};
	struct proof_out p = {proof, 0};

	if (index >= size || size > (UINT64_C(1) << 63))
		return SP_MERKLE_EINVAL;
	path(&w, &p, index, 0, size);
	*count = p.n;
	return walk_result(&w);
}

static void subproof(struct walk *w, struct proof_out *p, uint64_t m, uint64_t a, uint64_t n,
                     int whole)
{
	uint64_t k;

	if (w->err != 0)
		return;
	if (m == n) {
		if (!whole)
			mth(w, a, n, proof_next(w, p));
		return;
	}
	k = split_point(n);
	if (m <= k) {
		subproof(w, p, m, a, k, whole);
		mth(w, a + k, n - k, proof_next(w, p));
	} else {
		subproof(w, p, m - k, a + k, n - k, 0);
		mth(w, a, k, proof_next(w, p));
	}
}

int sp_merkle_consistency_proof(uint64_t old_size, uint64_t new_size, sp_merkle_node_fn get,
                                void *ctx, uint8_t proof[][SP_MERKLE_HASH_LEN], unsigned *count)
{
	struct walk w = {get, ctx, 0, 0};
	struct proof_out p = {proof, 0};

	if (old_size == 0 || old_size > new_size || new_size > (UINT64_C(1) << 63))
		return SP_MERKLE_EINVAL;
	subproof(&w, &p, old_size, 0, new_size, 1);
	*count = p.n;
	return walk_result(&w);
}

int sp_merkle_append(uint64_t index, const uint8_t leaf_hash[SP_MERKLE_HASH_LEN],
                     sp_merkle_node_fn get, void *ctx, unsigned levels[],
                     uint8_t hashes[][SP_MERKLE_HASH_LEN], unsigned *count)
{
	struct walk w = {get, ctx, 0, 0};
	uint8_t left[SP_MERKLE_HASH_LEN];
	uint64_t j = index;
	unsigned n = 0;

	if (index >= (UINT64_C(1) << 63))
		return SP_MERKLE_EINVAL;
	levels[0] = 0;
	memcpy(hashes[0], leaf_hash, SP_MERKLE_HASH_LEN);
	n = 1;
	while ((j & 1) != 0 && n < SP_MERKLE_MAX_PROOF) {
		walk_get(&w, n - 1, j - 1, left);
		walk_node(&w, left, hashes[n - 1], hashes[n]);
		levels[n] = n;
		j >>= 1;
		n++;
	}
	*count = n;
	return walk_result(&w);
}

static int hash_into(const uint8_t *l, const uint8_t *r, uint8_t out[SP_MERKLE_HASH_LEN])
{
	return sp_merkle_node_hash(l, r, out);
}

int sp_merkle_verify_inclusion(uint64_t index, uint64_t size,
                               const uint8_t leaf_hash[SP_MERKLE_HASH_LEN], const uint8_t *proof,
                               unsigned count, const uint8_t root[SP_MERKLE_HASH_LEN])
{
	uint8_t r[SP_MERKLE_HASH_LEN];
	uint64_t fn, sn;

	if (index >= size || count > SP_MERKLE_MAX_PROOF)
		return SP_MERKLE_EPROOF;
	fn = index;
	sn = size - 1;
	memcpy(r, leaf_hash, SP_MERKLE_HASH_LEN);
	for (unsigned i = 0; i < count; i++) {
		if (sn == 0)
			return SP_MERKLE_EPROOF;
		if ((fn & 1) != 0 || fn == sn) {
			if (hash_into(proof + (size_t)i * SP_MERKLE_HASH_LEN, r, r) < 0)
				return SP_MERKLE_ECRYPTO;
			if ((fn & 1) == 0) {
				while ((fn & 1) == 0 && fn != 0) {
					fn >>= 1;
					sn >>= 1;
				}
			}
		} else {
			if (hash_into(r, proof + (size_t)i * SP_MERKLE_HASH_LEN, r) < 0)
				return SP_MERKLE_ECRYPTO;
		}
		fn >>= 1;
		sn >>= 1;
	}
	if (sn != 0 || memcmp(r, root, SP_MERKLE_HASH_LEN) != 0)
		return SP_MERKLE_EPROOF;
	return 0;
}

int sp_merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                                 const uint8_t old_root[SP_MERKLE_HASH_LEN],
                                 const uint8_t new_root[SP_MERKLE_HASH_LEN], const uint8_t *proof,
                                 unsigned count)
{
	uint8_t fr[SP_MERKLE_HASH_LEN], sr[SP_MERKLE_HASH_LEN];
	uint64_t fn, sn;
	unsigned i = 0;

	if (old_size == 0 || old_size > new_size || count > SP_MERKLE_MAX_PROOF)
		return SP_MERKLE_EPROOF;
	if (old_size == new_size)
		return count == 0 && memcmp(old_root, new_root, SP_MERKLE_HASH_LEN) == 0
		               ? 0
		               : SP_MERKLE_EPROOF;
	/* RFC 9162 2.1.4.2 step 1: a power-of-two old tree is itself the first hash of the path. */
	if (is_pow2(old_size)) {
		memcpy(fr, old_root, SP_MERKLE_HASH_LEN);
	} else {
		if (count == 0)
			return SP_MERKLE_EPROOF;
		memcpy(fr, proof, SP_MERKLE_HASH_LEN);
		i = 1;
	}
	memcpy(sr, fr, SP_MERKLE_HASH_LEN);
	fn = old_size - 1;
	sn = new_size - 1;
	while ((fn & 1) != 0) {
		fn >>= 1;
		sn >>= 1;
	}
	for (; i < count; i++) {
		if (sn == 0)
			return SP_MERKLE_EPROOF;
		if ((fn & 1) != 0 || fn == sn) {
			if (hash_into(proof + (size_t)i * SP_MERKLE_HASH_LEN, fr, fr) < 0 ||
			    hash_into(proof + (size_t)i * SP_MERKLE_HASH_LEN, sr, sr) < 0)
				return SP_MERKLE_ECRYPTO;
			while ((fn & 1) == 0 && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else {
			if (hash_into(sr, proof + (size_t)i * SP_MERKLE_HASH_LEN, sr) < 0)
				return SP_MERKLE_ECRYPTO;
		}
		fn >>= 1;
		sn >>= 1;
	}
	if (sn != 0 || memcmp(fr, old_root, SP_MERKLE_HASH_LEN) != 0 ||
	    memcmp(sr, new_root, SP_MERKLE_HASH_LEN) != 0)
		return SP_MERKLE_EPROOF;
	return 0;
}

int sp_merkle_proof_parse(const uint8_t *p, size_t len, uint8_t proof[][SP_MERKLE_HASH_LEN],
                          unsigned *count)
{
	unsigned n;

	if (p == NULL || len < 1)
		return SP_MERKLE_EINVAL;
	n = p[0];
	if (n > SP_MERKLE_MAX_PROOF || len != 1 + (size_t)n * SP_MERKLE_HASH_LEN)
		return SP_MERKLE_EINVAL;
	for (unsigned i = 0; i < n; i++)
		memcpy(proof[i], p + 1 + (size_t)i * SP_MERKLE_HASH_LEN, SP_MERKLE_HASH_LEN);
	*count = n;
	return 0;
}

size_t sp_merkle_proof_encode(const uint8_t *proof, unsigned count, uint8_t *out)
{
	out[0] = (uint8_t)count;
	for (unsigned i = 0; i < count; i++)
		memcpy(out + 1 + (size_t)i * SP_MERKLE_HASH_LEN,
		       proof + (size_t)i * SP_MERKLE_HASH_LEN, SP_MERKLE_HASH_LEN);
	return 1 + (size_t)count * SP_MERKLE_HASH_LEN;
}
