/*
 * sp_merkle: the Merkle tree of RFC 9162 (Certificate Transparency 2.0), section 2.1, on
 * OpenSSL's SHA-256. The directory's transparency log (PROTOCOL.md 15) is such a tree.
 *
 *   leaf hash  = SHA-256(0x00 || leaf bytes)
 *   node hash  = SHA-256(0x01 || left || right)
 *   MTH({})    = SHA-256(""), MTH of n > 1 leaves splits at k, the largest power of 2 below n.
 *
 * Who stores what. A log keeps, for every *perfect* subtree it has completed, its hash: the
 * node (level L, index i) covers the 2^L leaves [i * 2^L, (i + 1) * 2^L); level 0 are the leaf
 * hashes. Appending leaf i completes the nodes sp_merkle_append() returns, and every hash a
 * proof or a root needs is one such node or a combination of O(log n) of them, so a proof
 * costs O(log n) node reads. The functions here read nodes through a callback
 * (sp_merkle_node_fn) and never do I/O themselves: a callback that does not have a node yet
 * returns SP_MERKLE_NEED after noting which one, the caller fetches every noted node in one
 * round trip and calls again (the set of nodes a computation reads does not depend on their
 * values, so the second call completes).
 *
 * Verification (sp_merkle_verify_*) is the algorithm of RFC 9162 2.1.3.2 and 2.1.4.2, needs
 * no callback, and is what clients run. Everything is pure, thread-safe and allocation-free.
 * Functions return 0 or a negative error.
 */
#ifndef SP_MERKLE_H
#define SP_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#define SP_MERKLE_HASH_LEN  32
#define SP_MERKLE_MAX_PROOF 64 /* hashes in a proof of a tree of at most 2^63 leaves */

enum {
	SP_MERKLE_NEED = -1000, /* a node callback lacks a node: fetch the noted ones, call again */
	SP_MERKLE_EINVAL = -1001, /* bad arguments: index not below size, sizes out of order, ... */
	SP_MERKLE_EPROOF = -1002, /* a proof does not verify (or has the wrong number of hashes) */
	SP_MERKLE_ECRYPTO = -1003 /* OpenSSL failed */
};

/* Reads the hash of the perfect node (level, index) into out. Returns 0, SP_MERKLE_NEED, or
 * another negative error, which the caller's computation returns as it is. */
typedef int (*sp_merkle_node_fn)(void *ctx, unsigned level, uint64_t index,
                                 uint8_t out[SP_MERKLE_HASH_LEN]);

/* SHA-256(0x00 || data). */
int sp_merkle_leaf_hash(const uint8_t *data, size_t len, uint8_t out[SP_MERKLE_HASH_LEN]);
/* SHA-256(0x01 || left || right). out may alias left or right. */
int sp_merkle_node_hash(const uint8_t left[SP_MERKLE_HASH_LEN],
                        const uint8_t right[SP_MERKLE_HASH_LEN], uint8_t out[SP_MERKLE_HASH_LEN]);

/* The root MTH of the first size leaves (SHA-256("") for size 0). */
int sp_merkle_root(uint64_t size, sp_merkle_node_fn get, void *ctx,
                   uint8_t out[SP_MERKLE_HASH_LEN]);

/*
 * The inclusion proof PATH(index, D[size]) of RFC 9162 2.1.3.1, deepest hash first, into
 * proof (room for SP_MERKLE_MAX_PROOF hashes); *count = number of hashes.
 */
int sp_merkle_inclusion_proof(uint64_t index, uint64_t size, sp_merkle_node_fn get, void *ctx,
                              uint8_t proof[][SP_MERKLE_HASH_LEN], unsigned *count);

/* The consistency proof PROOF(old_size, D[new_size]) of RFC 9162 2.1.4.1, 0 < old_size <=
 * new_size (empty when they are equal). */
int sp_merkle_consistency_proof(uint64_t old_size, uint64_t new_size, sp_merkle_node_fn get,
                                void *ctx, uint8_t proof[][SP_MERKLE_HASH_LEN], unsigned *count);

/*
 * The nodes appending leaf `index` (the tree grows from index to index + 1 leaves) completes:
 * level 0 (the leaf hash itself) and each parent whose right child it completes. Reads the
 * left siblings through get. Fills levels[], hashes[] (room for SP_MERKLE_MAX_PROOF), *count;
 * the node indexes are index >> level.
 */
int sp_merkle_append(uint64_t index, const uint8_t leaf_hash[SP_MERKLE_HASH_LEN],
                     sp_merkle_node_fn get, void *ctx, unsigned levels[],
                     uint8_t hashes[][SP_MERKLE_HASH_LEN], unsigned *count);

/* proof: count hashes of SP_MERKLE_HASH_LEN bytes, one after the other (a filled
 * uint8_t [][SP_MERKLE_HASH_LEN] array cast to uint8_t *, or a parsed wire proof's bytes). */

/* Checks an inclusion proof of leaf_hash at index in a tree of size with root root.
 * Returns 0 or SP_MERKLE_EPROOF (also for index >= size or a proof of the wrong length). */
int sp_merkle_verify_inclusion(uint64_t index, uint64_t size,
                               const uint8_t leaf_hash[SP_MERKLE_HASH_LEN], const uint8_t *proof,
                               unsigned count, const uint8_t root[SP_MERKLE_HASH_LEN]);

/* Checks that the tree of new_size leaves with root new_root extends the tree of old_size
 * leaves with root old_root, 0 < old_size <= new_size. Returns 0 or SP_MERKLE_EPROOF. */
int sp_merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                                 const uint8_t old_root[SP_MERKLE_HASH_LEN],
                                 const uint8_t new_root[SP_MERKLE_HASH_LEN], const uint8_t *proof,
                                 unsigned count);

/*
 * A proof on the wire (PROTOCOL.md 15.4): count (u8) || count x 32 bytes, exactly. Parses
 * p[0..len) into proof (room for SP_MERKLE_MAX_PROOF); returns 0 or SP_MERKLE_EINVAL (count
 * above SP_MERKLE_MAX_PROOF, a length that is not 1 + 32 * count). Encoding writes
 * 1 + 32 * count bytes into out (room for SP_MERKLE_PROOF_WIRE_MAX).
 */
#define SP_MERKLE_PROOF_WIRE_MAX (1 + SP_MERKLE_MAX_PROOF * SP_MERKLE_HASH_LEN)
int sp_merkle_proof_parse(const uint8_t *p, size_t len, uint8_t proof[][SP_MERKLE_HASH_LEN],
                          unsigned *count);
size_t sp_merkle_proof_encode(const uint8_t *proof, unsigned count, uint8_t *out);

#endif
