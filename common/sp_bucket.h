/*
 * sp_bucket.h: the envelope size buckets (PROTOCOL.md 13.1), one definition for the sealer
 * (client/sp_seal.c pads to them) and the relay (sealpushd's pad_block refuses a SEND whose
 * blob is not on one, PROTOCOL.md 17.6).
 *
 * With a padding block B > 1 every envelope is SP_BUCKET_BASE + k * B bytes, k >= 1:
 * SP_BUCKET_BASE is the 35-byte header of an X25519 suite and the 16-byte AEAD tag.
 */
#ifndef SP_BUCKET_H
#define SP_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

#define SP_BUCKET_BASE          51
#define SP_BUCKET_BLOCK_DEFAULT 256   /* the sealer's default block, and the advised pad_block */
#define SP_BUCKET_BLOCK_MAX     65536 /* the largest block a sealer or a relay takes */

/* Whether an envelope of len bytes is on a bucket of block (block <= 1: no buckets, any
 * length is). */
static inline bool sp_bucket_ok(uint64_t len, uint32_t block)
{
	if (block <= 1)
		return true;
	return len > SP_BUCKET_BASE && (len - SP_BUCKET_BASE) % block == 0;
}

#endif
