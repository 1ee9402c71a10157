/*
 * merkle_cli.c: a line protocol over sp_merkle for merkle_oracle.py, which checks it against
 * its own hashlib computation. Commands on stdin, one answer line each on stdout:
 *	leaf HEX                      append a leaf (its bytes; "-" for none) -> "ok"
 *	root N                        -> hex MTH of the first N leaves
 *	incl I N                      -> inclusion proof: hex hashes joined by ',' ("-" if none)
 *	cons M N                      -> consistency proof, same format
 *	vincl I N LEAFHASH ROOT PROOF -> "ok" or "fail"
 *	vcons M N ROOT_M ROOT_N PROOF -> "ok" or "fail"
 *	reads                         -> most node reads any one root/incl/cons has needed so far
 * Anything else ends the program with status 2.
 */
#include "merkle_mem.h"

#include <inttypes.h>
#include <stdio.h>

#define H SP_MERKLE_HASH_LEN

static int unhex(const char *s, uint8_t *out, size_t max, size_t *len)
{
	size_t n = 0;

	if (strcmp(s, "-") == 0) {
		*len = 0;
		return 0;
	}
	while (s[0] != '\0' && s[0] != ',' && s[1] != '\0') {
		unsigned v;

		if (n >= max || sscanf(s, "%2x", &v) != 1)
			return -1;
		out[n++] = (uint8_t)v;
		s += 2;
	}
	*len = n;
	return 0;
}

static int parse_proof(const char *s, uint8_t proof[][H], unsigned *count)
{
	size_t len;

	*count = 0;
	if (strcmp(s, "-") == 0)
		return 0;
	for (;;) {
		if (*count >= SP_MERKLE_MAX_PROOF || unhex(s, proof[*count], H, &len) < 0 ||
		    len != H)
			return -1;
		(*count)++;
		s += 2 * H;
		if (*s == '\0')
			return 0;
		if (*s++ != ',')
			return -1;
	}
}

static void print_hash(const uint8_t *h)
{
	for (unsigned i = 0; i < H; i++)
		printf("%02x", h[i]);
}

static void print_proof(uint8_t proof[][H], unsigned n)
{
	if (n == 0)
		printf("-");
	for (unsigned i = 0; i < n; i++) {
		if (i)
			printf(",");
		print_hash(proof[i]);
	}
	printf("\n");
}

int main(void)
{
	static char line[1 << 16], a[1 << 14], b[1 << 14], c[1 << 14];
	static uint8_t buf[1 << 13];
	struct merkle_mem m = {0};
	uint8_t proof[SP_MERKLE_MAX_PROOF][H], h1[H], h2[H];
	unsigned count, max_reads = 0;
	uint64_t x, y;
	size_t len;

	while (fgets(line, sizeof(line), stdin) != NULL) {
		int r = 0;

		line[strcspn(line, "\n")] = '\0';
		m.reads = 0;
		if (sscanf(line, "leaf %16383s", a) == 1) {
			if (unhex(a, buf, sizeof(buf), &len) < 0 ||
			    merkle_mem_append(&m, buf, len) < 0)
				return 2;
			printf("ok\n");
		} else if (sscanf(line, "root %" SCNu64, &x) == 1) {
			if (x > m.size || sp_merkle_root(x, merkle_mem_get, &m, h1) < 0)
				return 2;
			print_hash(h1);
			printf("\n");
		} else if (sscanf(line, "incl %" SCNu64 " %" SCNu64, &x, &y) == 2) {
			if (y > m.size ||
			    sp_merkle_inclusion_proof(x, y, merkle_mem_get, &m, proof, &count) < 0)
				return 2;
			print_proof(proof, count);
		} else if (sscanf(line, "cons %" SCNu64 " %" SCNu64, &x, &y) == 2) {
			if (y > m.size || sp_merkle_consistency_proof(x, y, merkle_mem_get, &m,
			                                              proof, &count) < 0)
				return 2;
			print_proof(proof, count);
		} else if (sscanf(line, "vincl %" SCNu64 " %" SCNu64 " %16383s %16383s %16383s", &x,
		                  &y, a, b, c) == 5) {
			if (unhex(a, h1, H, &len) < 0 || len != H || unhex(b, h2, H, &len) < 0 ||
			    len != H || parse_proof(c, proof, &count) < 0)
				return 2;
			r = sp_merkle_verify_inclusion(x, y, h1, (const uint8_t *)proof, count, h2);
			printf("%s\n", r == 0 ? "ok" : "fail");
		} else if (sscanf(line, "vcons %" SCNu64 " %" SCNu64 " %16383s %16383s %16383s", &x,
		                  &y, a, b, c) == 5) {
			if (unhex(a, h1, H, &len) < 0 || len != H || unhex(b, h2, H, &len) < 0 ||
			    len != H || parse_proof(c, proof, &count) < 0)
				return 2;
			r = sp_merkle_verify_consistency(x, y, h1, h2, (const uint8_t *)proof,
			                                 count);
			printf("%s\n", r == 0 ? "ok" : "fail");
		} else if (strcmp(line, "reads") == 0) {
			printf("%u\n", max_reads);
		} else {
			return 2;
		}
		if (m.reads > max_reads)
			max_reads = m.reads;
	}
	merkle_mem_free(&m);
	return 0;
}
