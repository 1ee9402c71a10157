/* sb_hist: see sb_hist.h. */
#include "sb_hist.h"

#include <string.h>

static unsigned hist_index(uint64_t v)
{
	unsigned e, shift;

	if (v < 2 * SB_HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	shift = e - SB_HIST_SUB_BITS;
	return shift * SB_HIST_SUB + (unsigned)(v >> shift);
}

/* The highest value that falls into bucket idx. */
static uint64_t hist_highest(unsigned idx)
{
	unsigned shift, sub;

	if (idx < 2 * SB_HIST_SUB)
		return idx;
	shift = idx / SB_HIST_SUB - 1;
	sub = idx - shift * SB_HIST_SUB;
	return (((uint64_t)sub + 1) << shift) - 1;
}

void sb_hist_init(sb_hist_t *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void sb_hist_add(sb_hist_t *h, uint64_t v)
{
	h->counts[hist_index(v)]++;
	h->total++;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

void sb_hist_merge(sb_hist_t *dst, const sb_hist_t *src)
{
	for (unsigned i = 0; i < SB_HIST_BUCKETS; i++)
		dst->counts[i] += src->counts[i];
	dst->total += src->total;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t sb_hist_percentile(const sb_hist_t *h, double p)
{
	uint64_t want, seen = 0;

	if (h->total == 0)
		return 0;
	want = (uint64_t)(p / 100.0 * (double)h->total + 0.999999);
	if (want < 1)
		want = 1;
	if (want > h->total)
		want = h->total;
	for (unsigned i = 0; i < SB_HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= want) {
			uint64_t v = hist_highest(i);

			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}
