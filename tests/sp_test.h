/*
 * sp_test.h: the unit-test harness. Each test binary is a list of cases; it prints TAP
 * ("ok N - name" / "not ok N - name", then "1..N") so tests/run can count cases, and exits
 * non-zero if any case failed.
 *
 *	static void test_x(void) { SP_CHECK(1 + 1 == 2); SP_CHECK_EQ_INT(a, b); }
 *	int main(void) { SP_RUN(test_x); return sp_test_done(); }
 *
 * A failed check prints its location and keeps going within the case, so one run shows every
 * broken expectation of a case. Header-only, no globals outside this test binary's TU.
 */
#ifndef SP_TEST_H
#define SP_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sp_test_case_failed;
static int sp_test_cases;
static int sp_test_failures;

#define SP_CHECK(cond)                                                                             \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			printf("# %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
			sp_test_case_failed = 1;                                                   \
		}                                                                                  \
	} while (0)

#define SP_CHECK_EQ_INT(a, b)                                                                      \
	do {                                                                                       \
		long long sp_a_ = (long long)(a), sp_b_ = (long long)(b);                          \
		if (sp_a_ != sp_b_) {                                                              \
			printf("# %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, \
			       #b, sp_a_, sp_b_);                                                  \
			sp_test_case_failed = 1;                                                   \
		}                                                                                  \
	} while (0)

#define SP_CHECK_MEM(a, b, n)                                                                      \
	do {                                                                                       \
		if (memcmp((a), (b), (n)) != 0) {                                                  \
			printf("# %s:%d: memory %s != %s (%zu bytes)\n", __FILE__, __LINE__, #a,   \
			       #b, (size_t)(n));                                                   \
			sp_test_case_failed = 1;                                                   \
		}                                                                                  \
	} while (0)

/* Marks the current case failed with a printf-style message. */
#define SP_FAIL(...)                                                                               \
	do {                                                                                       \
		printf("# %s:%d: ", __FILE__, __LINE__);                                           \
		printf(__VA_ARGS__);                                                               \
		printf("\n");                                                                      \
		sp_test_case_failed = 1;                                                           \
	} while (0)

/* Ends the current case: one TAP line. */
static inline void sp_test_end(const char *name)
{
	sp_test_cases++;
	if (sp_test_case_failed)
		sp_test_failures++;
	printf("%s %d - %s\n", sp_test_case_failed ? "not ok" : "ok", sp_test_cases, name);
	fflush(stdout);
}

static inline void sp_test_run(const char *name, void (*fn)(void))
{
	sp_test_case_failed = 0;
	fn();
	sp_test_end(name);
}

#define SP_RUN(fn) sp_test_run(#fn, fn)

/* A case that cannot run here: "ok N - name # SKIP why". */
static inline void sp_test_skip(const char *name, const char *why)
{
	sp_test_cases++;
	printf("ok %d - %s # SKIP %s\n", sp_test_cases, name, why);
	fflush(stdout);
}

static inline int sp_test_done(void)
{
	printf("1..%d\n", sp_test_cases);
	return sp_test_failures ? 1 : 0;
}

#endif
