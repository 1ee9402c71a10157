/*
 * Unit tests for the pure part of server/sp_cluster: the presence value (incarnation, worker,
 * connection reference) that relays write to sp:p:{T} and read back from each other. Anything
 * a relay of another version, a damaged key or a writer of the same Redis could leave there
 * must parse to the same value or be refused, never read past the value.
 */
#include "sp_cluster.h"

#include <string.h>

#include "sp_test.h"

static void test_roundtrip(void)
{
	static const struct {
		uint64_t inc;
		unsigned worker;
		uint64_t ref;
	} cases[] = {
	        {0, 0, 0},
	        {0x0123456789abcdefULL, 7, 0xfedcba9876543210ULL},
	        {UINT64_MAX, SP_MAX_WORKERS - 1, UINT64_MAX},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[64];
		size_t n = sp_cluster_presence_format(buf, sizeof(buf), cases[i].inc,
		                                      cases[i].worker, cases[i].ref);
		uint64_t inc = 1, ref = 1;
		unsigned worker = 1;

		SP_CHECK(n > 0 && n < sizeof(buf) && strlen(buf) == n);
		SP_CHECK_EQ_INT(sp_cluster_presence_parse(buf, n, &inc, &worker, &ref), 0);
		SP_CHECK(inc == cases[i].inc && worker == cases[i].worker && ref == cases[i].ref);
	}
	/* the form relays write: fixed-width lowercase hex around the worker number */
	{
		char buf[64];

		sp_cluster_presence_format(buf, sizeof(buf), 0xabcULL, 12, 0x1ULL);
		SP_CHECK(strcmp(buf, "0000000000000abc:12:0000000000000001") == 0);
	}
}

static void test_refused(void)
{
	static const char *const bad[] = {
	        "",
	        "0000000000000abc",
	        "0000000000000abc:1",
	        "0000000000000abc:1:",
	        "0000000000000abc::0000000000000001",
	        "0000000000000ABC:1:0000000000000001",  /* uppercase: never written */
	        "000000000000abc:1:0000000000000001",   /* 15 digits */
	        "00000000000000abc:1:0000000000000001", /* 17 digits */
	        "0000000000000abc:64:0000000000000001", /* worker out of range */
	        "0000000000000abc:123:0000000000000001",
	        "0000000000000abc:-1:0000000000000001",
	        "0000000000000abc:1:000000000000001",
	        "0000000000000abc:1:00000000000000011",
	        "0000000000000abc:1:000000000000000g",
	        "0000000000000abc 1 0000000000000001",
	        "0000000000000abc:1:0000000000000001:",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t inc, ref;
		unsigned worker;

		if (sp_cluster_presence_parse(bad[i], strlen(bad[i]), &inc, &worker, &ref) == 0)
			SP_FAIL("accepted %s", bad[i]);
	}
}

static void test_length_bound(void)
{
	/* a valid value followed by bytes the parser must not look at */
	char buf[] = "0000000000000abc:3:0000000000000002XXXX";
	uint64_t inc, ref;
	unsigned worker;

	SP_CHECK_EQ_INT(sp_cluster_presence_parse(buf, 35, &inc, &worker, &ref), 0);
	SP_CHECK(inc == 0xabc && worker == 3 && ref == 2);
	SP_CHECK(sp_cluster_presence_parse(buf, 36, &inc, &worker, &ref) != 0);
	SP_CHECK(sp_cluster_presence_parse(buf, 34, &inc, &worker, &ref) != 0);
	/* a small output buffer: nothing written past it, 0 returned */
	{
		char small[20];

		SP_CHECK_EQ_INT(sp_cluster_presence_format(small, sizeof(small), 1, 1, 1), 0);
	}
}

int main(void)
{
	SP_RUN(test_roundtrip);
	SP_RUN(test_refused);
	SP_RUN(test_length_bound);
	return sp_test_done();
}
