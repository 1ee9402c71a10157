/*
 * sb_hist: a log-bucketed latency histogram with bounded relative error (HdrHistogram-like).
 *
 * Values (nanoseconds, or any u64) below 256 are counted exactly; above, each power of two is
 * split into 128 linear sub-buckets, so a reported value is within 1/128 (< 0.8 %, two
 * significant digits) of the true one. Fixed size (about 58 KiB), no allocation after init,
 * no per-sample storage. One histogram per thread; merge them at the end. Not thread-safe.
 */
#ifndef SB_HIST_H
#define SB_HIST_H

#include <stdint.h>

#define SB_HIST_SUB_BITS 7
#define SB_HIST_SUB      (1u << SB_HIST_SUB_BITS)
#define SB_HIST_BUCKETS  ((64 - SB_HIST_SUB_BITS + 1) * SB_HIST_SUB)

typedef struct sb_hist {
	uint64_t total;
	uint64_t min;
	uint64_t max;
	uint64_t counts[SB_HIST_BUCKETS];
} sb_hist_t;

/* Clears h (min becomes UINT64_MAX until the first sample). */
void sb_hist_init(sb_hist_t *h);

/* Counts one sample of value v. */
void sb_hist_add(sb_hist_t *h, uint64_t v);

/* Adds every sample of src to dst. */
void sb_hist_merge(sb_hist_t *dst, const sb_hist_t *src);

/*
 * The value at percentile p (0 < p <= 100): the highest value equivalent to the bucket that
 * holds the ceil(p/100 * total)-th smallest sample, capped at the exact maximum. 0 if empty.
 */
uint64_t sb_hist_percentile(const sb_hist_t *h, double p);

#endif
