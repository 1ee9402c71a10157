/*
 * sp_buf.h: a growable byte buffer's one operation, shared by the client library and the
 * load generator.
 */
#ifndef SP_BUF_H
#define SP_BUF_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* Makes *buf (of *cap bytes, may be NULL/0) hold at least `need` bytes, doubling from `first`
 * (or from *cap). Returns 0, or -ENOMEM with *buf and *cap unchanged. */
static inline int sp_buf_reserve(uint8_t **buf, size_t *cap, size_t need, size_t first)
{
	size_t n = *cap ? *cap : first;
	uint8_t *p;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*buf, n);
	if (p == NULL)
		return -ENOMEM;
	*buf = p;
	*cap = n;
	return 0;
}

#endif
