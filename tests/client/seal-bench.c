/*
 * seal-bench: what sealing and opening a 256-byte message costs, split into its parts
 * (bench/RESULTS.md, "Sealing cost"). Build it in a release tree and run it alone:
 *
 *	meson setup /tmp/rel -Dbuildtype=release && ninja -C /tmp/rel
 *	/tmp/rel/tests/client/seal-bench [--iterations N] [--runs R] [--payload BYTES]
 *	perf record -g /tmp/rel/tests/client/seal-bench --part seal --iterations 20000
 *
 * Each part runs R times N operations, the runs of all parts interleaved; it prints the median
 * and the best (fastest) run's mean ns per operation, on one thread, and splits seal and open
 * into parts using the best runs (on a shared machine the best run is the least disturbed).
 * The parts:
 *   x25519          one X25519 scalar multiplication (EVP_PKEY_derive, keys already parsed)
 *   x25519_seal     X25519 as sealing does it: random key, its public key, DH (2 multiplications
 *                   plus OpenSSL key objects)
 *   x25519_open     X25519 as opening does it: import enc, DH with the parsed key (1 + objects)
 *   hpke_setup_s    SetupBaseS as sp_seal() does it (prepared schedule): x25519_seal plus the KDF
 *   hpke_setup_r    SetupBaseR as sp_seal_open() does it: x25519_open plus the KDF
 *   hpke_kdf        the KDF alone (sp_hpke_sched_kdf: DHKEM ExtractAndExpand, the key schedule's
 *                   Extract and two Expands: 4 OpenSSL HKDF calls): what HPKE adds to X25519
 *   setup_s_noprep  SetupBaseS without a prepared schedule (8 HKDF calls: the old way)
 *   hkdf_expand     one LabeledExpand (sp_hpke_export), a new OpenSSL HKDF context included
 *   aead_seal/open  one AEAD operation on the padded content of a 256-byte message
 *   ecdsa_sign/verify  P-256 signature of the transcript (256-byte payload)
 *   spki_parse      parsing and checking the sender's SPKI (part of open on a cache miss)
 *   seal            sp_seal() end to end
 *   open            sp_seal_open() end to end, no replay cache, sender key cache off (a first
 *                   message from a sender)
 *   open_cached     the same with the sender key cache on (a repeat sender)
 * and, where the build has the hybrid suite 0x0101 (MLKEM768-X25519, OpenSSL 3.5 and later):
 *   xwing_encap     one X-Wing encapsulation to the recipient's 1,216-byte public key (the key
 *                   imported and checked, ML-KEM-768 encapsulation, two X25519 multiplications)
 *   xwing_decap     one decapsulation with the recipient's prepared key (sp_xwing_key)
 *   seal_hybrid, open_hybrid, open_hybrid_cached   seal, open and open_cached in suite 0x0101
 * It ends with the whole cost, seal + open (first message from a sender), of each suite from the
 * medians, and their ratio (issue 13's target: hybrid <= 1.5 x classical).
 */
#include "sp_hpke.h"
#include "sp_seal.h"
#include "sp_xwing.h"
#include "tc_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

static size_t iterations = 2000;
static int runs = 5;
static size_t payload_len = 256;
static const char *only; /* --part: run this part alone (for perf record), no summary */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One timed run of fn: mean ns per call over iterations calls. */
static double run_once(const char *name, int (*fn)(void *))
{
	uint64_t t = now_ns();

	for (size_t k = 0; k < iterations; k++)
		if (fn(NULL) != 0) {
			fprintf(stderr, "seal-bench: %s failed\n", name);
			exit(1);
		}
	return (double)(now_ns() - t) / (double)iterations;
}

static struct tc_dev alice, bob;
static struct sp_sealer *bob_nocache;
static struct sp_hpke_sched sched;
static uint8_t dh[32];
static uint8_t payload[1 << 16], mid[16] = {1, 2, 3};
static uint64_t t0;
static uint8_t *env;
static size_t env_len;
static EVP_PKEY *xa, *xb;
static struct sp_hpke_ctx hs, hr;
static uint8_t enc[32], ct[2048], pt[2048];
static size_t aead_len;
static uint8_t transcript[600], sig[80];
static size_t transcript_len, sig_len;
/* The hybrid suite: bob with an MLKEM768-X25519 key too (NULL without it in the build). */
static struct sp_sealer *bobh, *bobh_nocache;
static struct sp_seal_peer bobh_peer;
static struct sp_xwing_key *xwk;
static uint8_t *envh, xw_ct[SP_XWING_CT_LEN];
static size_t envh_len;

static int b_x25519(void *arg)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, xa, NULL);
	uint8_t out[32];
	size_t len = sizeof(out);
	int r = c != NULL && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_derive_set_peer(c, xb) == 1 &&
	                        EVP_PKEY_derive(c, out, &len) == 1
	                ? 0
	                : -1;

	EVP_PKEY_CTX_free(c);
	return r;
}

/* X25519 the way sp_hpke does it on open: import enc as a key, derive with the parsed key. */
static int b_x25519_open(void *arg)
{
	EVP_PKEY *peer = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, enc, 32);
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, bob.seal, NULL);
	uint8_t out[32];
	size_t len = sizeof(out);
	int r = peer != NULL && c != NULL && EVP_PKEY_derive_init(c) == 1 &&
	                        EVP_PKEY_derive_set_peer(c, peer) == 1 &&
	                        EVP_PKEY_derive(c, out, &len) == 1
	                ? 0
	                : -1;

	EVP_PKEY_CTX_free(c);
	EVP_PKEY_free(peer);
	return r;
}

/* X25519 the way sp_hpke does it on seal: a random ephemeral key and its public key, then DH. */
static int b_x25519_seal(void *arg)
{
	uint8_t sk[32], pk[32];
	size_t len = sizeof(pk);
	EVP_PKEY *e;
	int r;

	RAND_bytes(sk, sizeof(sk));
	e = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, sk, 32);
	r = e != NULL && EVP_PKEY_get_raw_public_key(e, pk, &len) == 1 ? 0 : -1;
	if (r == 0) {
		EVP_PKEY *peer =
		        EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, bob.seal_pk, 32);
		EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, e, NULL);
		uint8_t out[32];

		len = sizeof(out);
		r = peer != NULL && c != NULL && EVP_PKEY_derive_init(c) == 1 &&
		                    EVP_PKEY_derive_set_peer(c, peer) == 1 &&
		                    EVP_PKEY_derive(c, out, &len) == 1
		            ? 0
		            : -1;
		EVP_PKEY_CTX_free(c);
		EVP_PKEY_free(peer);
	}
	EVP_PKEY_free(e);
	return r;
}

static const struct sp_hpke_suite chacha = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256,
                                            SP_HPKE_AEAD_CHACHA20POLY1305};

static int b_setup_s(void *arg)
{
	struct sp_hpke_ctx c;
	uint8_t e[32];

	return sp_hpke_sched_setup_s(&sched, bob.seal_pk, NULL, 0, e, &c, NULL);
}

static int b_setup_r(void *arg)
{
	struct sp_hpke_ctx c;

	return sp_hpke_sched_setup_r(&sched, enc, bob.seal, bob.seal_pk, &c, NULL);
}

static int b_kdf(void *arg)
{
	struct sp_hpke_ctx c;

	return sp_hpke_sched_kdf(&sched, dh, enc, bob.seal_pk, &c, NULL);
}

static int b_setup_s_noprep(void *arg)
{
	struct sp_hpke_ctx c;
	uint8_t e[32];

	return sp_hpke_setup_base_s(&chacha, bob.seal_pk, (const uint8_t *)"sealpush/1 envelope",
	                            19, NULL, 0, e, &c, NULL);
}

static int b_aead_seal(void *arg)
{
	hs.seq = 0;
	return sp_hpke_seal(&hs, mid, 16, pt, aead_len, ct);
}

static int b_aead_open(void *arg)
{
	hr.seq = 0;
	return sp_hpke_open(&hr, mid, 16, ct, aead_len + SP_HPKE_NT, pt);
}

static int b_sign(void *arg)
{
	sig_len = sizeof(sig);
	return sp_sealer_sign(alice.s, transcript, transcript_len, sig, &sig_len);
}

static int b_verify(void *arg)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = md != NULL &&
	                        EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, alice.sign,
	                                                NULL) == 1 &&
	                        EVP_DigestVerify(md, sig, sig_len, transcript, transcript_len) == 1
	                ? 0
	                : -1;

	EVP_MD_CTX_free(md);
	return r;
}

static int b_hkdf(void *arg)
{
	uint8_t out[32];

	return sp_hpke_export(&hs, NULL, 0, out, sizeof(out));
}

static int b_spki(void *arg)
{
	size_t len;
	const uint8_t *spki = sp_sealer_spki(alice.s, &len);
	EVP_PKEY *k = NULL;
	int r = sp_seal_spki_key(spki, len, &k);

	EVP_PKEY_free(k);
	return r;
}

static int b_seal(void *arg)
{
	struct sp_seal_msg m = {mid, t0, 3600, 0, payload, payload_len, NULL};
	uint8_t *e;
	size_t len;
	int r = sp_seal(alice.s, &bob.peer, &m, &e, &len);

	free(e);
	return r;
}

static int b_open(void *arg)
{
	struct sp_seal_opened o;
	int r = sp_seal_open(bob_nocache, NULL, mid, env, env_len, t0, &o);

	sp_seal_opened_clear(&o);
	return r;
}

static int b_open_cached(void *arg)
{
	struct sp_seal_opened o;
	int r = sp_seal_open(bob.s, NULL, mid, env, env_len, t0, &o);

	sp_seal_opened_clear(&o);
	return r;
}

static int b_xwing_encap(void *arg)
{
	uint8_t c[SP_XWING_CT_LEN], k[SP_XWING_SS_LEN];

	return sp_xwing_encap(bobh_peer.pub, NULL, c, k);
}

static int b_xwing_decap(void *arg)
{
	uint8_t ss[SP_XWING_SS_LEN];

	return sp_xwing_decap_key(xwk, xw_ct, ss);
}

static int b_seal_hybrid(void *arg)
{
	struct sp_seal_msg m = {mid, t0, 3600, 0, payload, payload_len, NULL};
	uint8_t *e;
	size_t len;
	int r = sp_seal(alice.s, &bobh_peer, &m, &e, &len);

	free(e);
	return r;
}

static int b_open_hybrid(void *arg)
{
	struct sp_seal_opened o;
	int r = sp_seal_open(bobh_nocache, NULL, mid, envh, envh_len, t0, &o);

	sp_seal_opened_clear(&o);
	return r;
}

static int b_open_hybrid_cached(void *arg)
{
	struct sp_seal_opened o;
	int r = sp_seal_open(bobh, NULL, mid, envh, envh_len, t0, &o);

	sp_seal_opened_clear(&o);
	return r;
}

struct part {
	const char *name;
	int (*fn)(void *);
	double runs[64];
	double median;
	double best;
};

static struct part parts[] = {
        {"x25519", b_x25519, {0}, 0, 0},
        {"x25519_seal", b_x25519_seal, {0}, 0, 0},
        {"x25519_open", b_x25519_open, {0}, 0, 0},
        {"hpke_setup_s", b_setup_s, {0}, 0, 0},
        {"hpke_setup_r", b_setup_r, {0}, 0, 0},
        {"hpke_kdf", b_kdf, {0}, 0, 0},
        {"setup_s_noprep", b_setup_s_noprep, {0}, 0, 0},
        {"hkdf_expand", b_hkdf, {0}, 0, 0},
        {"aead_seal", b_aead_seal, {0}, 0, 0},
        {"aead_open", b_aead_open, {0}, 0, 0},
        {"ecdsa_sign", b_sign, {0}, 0, 0},
        {"ecdsa_verify", b_verify, {0}, 0, 0},
        {"spki_parse", b_spki, {0}, 0, 0},
        {"seal", b_seal, {0}, 0, 0},
        {"open", b_open, {0}, 0, 0},
        {"open_cached", b_open_cached, {0}, 0, 0},
        /* From here on: the hybrid suite, where the build has it. */
        {"xwing_encap", b_xwing_encap, {0}, 0, 0},
        {"xwing_decap", b_xwing_decap, {0}, 0, 0},
        {"seal_hybrid", b_seal_hybrid, {0}, 0, 0},
        {"open_hybrid", b_open_hybrid, {0}, 0, 0},
        {"open_hybrid_cached", b_open_hybrid_cached, {0}, 0, 0},
};
#define NPARTS_ALL (sizeof(parts) / sizeof(parts[0]))
#define NPARTS_CL  (NPARTS_ALL - 5)
static size_t nparts = NPARTS_CL; /* the parts this build runs */
#define NPARTS nparts

/* The median run of a part, in us. */
static double median(const char *name)
{
	for (size_t i = 0; i < NPARTS; i++)
		if (strcmp(parts[i].name, name) == 0)
			return parts[i].median / 1000;
	return 0;
}

/* The fastest run of a part, in us: the least disturbed by other work on the machine. */
static double best(const char *name)
{
	for (size_t i = 0; i < NPARTS; i++)
		if (strcmp(parts[i].name, name) == 0)
			return parts[i].best / 1000;
	return 0;
}

int main(int argc, char **argv)
{
	double x, xs, xo, ss, sr, kd, as, ao, sg, vf, sp, se, op, oc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
			iterations = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc)
			payload_len = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--part") == 0 && i + 1 < argc)
			only = argv[++i];
		else {
			fprintf(stderr, "usage: seal-bench [--iterations N] [--runs R] [--payload "
			                "B] [--part NAME]\n");
			return 2;
		}
	}
	if (iterations == 0 || runs < 1 || runs > 64 || payload_len > 1500) {
		fprintf(stderr, "seal-bench: iterations >= 1, runs 1..64, payload <= 1500\n");
		return 2;
	}
	if (tc_dev_make(&alice, "alice") != 0 || tc_dev_make(&bob, "bob") != 0 ||
	    sp_sealer_new(bob.sign, bob.cert, bob.seal, &bob_nocache) != 0 ||
	    sp_sealer_set_key_cache(bob_nocache, 0) != 0 ||
	    sp_hpke_sched_init(&sched, &chacha, (const uint8_t *)"sealpush/1 envelope", 19, 0) != 0)
		return 1;
	RAND_bytes(dh, sizeof(dh));
	t0 = (uint64_t)time(NULL) * 1000;
	memset(payload, 0x5a, sizeof(payload));
	xa = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	xb = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	/* The content of a 256-byte message, padded as the sealer pads it: 512 bytes. */
	aead_len = (payload_len + 215 + SP_SEAL_PAD_DEFAULT - 1) / SP_SEAL_PAD_DEFAULT *
	           SP_SEAL_PAD_DEFAULT;
	transcript_len = 26 + 3 + 32 + 16 + 64 + 13 + 4 + payload_len;
	{
		struct sp_seal_msg m = {mid, t0, 3600, 0, payload, payload_len, NULL};

		if (xa == NULL || xb == NULL ||
		    sp_hpke_setup_base_s(&chacha, bob.seal_pk, NULL, 0, NULL, 0, enc, &hs, NULL) !=
		            0 ||
		    sp_hpke_setup_base_r(&chacha, enc, bob.seal_sk, NULL, NULL, 0, &hr, NULL) !=
		            0 ||
		    sp_seal(alice.s, &bob.peer, &m, &env, &env_len) != 0)
			return 1;
	}
	if (sp_seal_suite_implemented(SP_SEAL_SUITE_HYBRID)) {
		struct sp_seal_msg m = {mid, t0, 3600, 0, payload, payload_len, NULL};
		uint8_t seed[SP_XWING_SEED_LEN], k[SP_XWING_SS_LEN];

		RAND_bytes(seed, sizeof(seed));
		if (sp_sealer_new(bob.sign, bob.cert, bob.seal, &bobh) != 0 ||
		    sp_sealer_set_hybrid_key(bobh, seed, sizeof(seed)) != 0 ||
		    sp_sealer_new(bob.sign, bob.cert, bob.seal, &bobh_nocache) != 0 ||
		    sp_sealer_set_hybrid_key(bobh_nocache, seed, sizeof(seed)) != 0 ||
		    sp_sealer_set_key_cache(bobh_nocache, 0) != 0 ||
		    sp_xwing_key_new(seed, &xwk) != 0)
			return 1;
		sp_sealer_peer(bobh, &bobh_peer);
		if (sp_seal(alice.s, &bobh_peer, &m, &envh, &envh_len) != 0 ||
		    sp_xwing_encap(bobh_peer.pub, NULL, xw_ct, k) != 0)
			return 1;
		nparts = NPARTS_ALL;
	}
	if (only != NULL) {
		for (size_t p = 0; p < NPARTS; p++)
			if (strcmp(parts[p].name, only) == 0) {
				for (int r = 0; r < runs; r++)
					printf("%s %.0f ns/op\n", only,
					       run_once(only, parts[p].fn));
				return 0;
			}
		fprintf(stderr, "seal-bench: no part %s\n", only);
		return 2;
	}
	/* Warm up (first-use fetches of OpenSSL algorithms). */
	for (size_t p = 0; p < NPARTS; p++)
		run_once(parts[p].name, parts[p].fn);
	printf("seal-bench: %zu-byte payload (%zu-byte envelope; hybrid: %zu bytes), %zu "
	       "iterations x %d runs, interleaved\n%-18s %9s %9s   (all runs, ns/op)\n",
	       payload_len, env_len, envh_len, iterations, runs, "part", "median", "best");
	/* Runs interleave the parts, so that a noisy moment hits all of them alike. */
	for (int r = 0; r < runs; r++)
		for (size_t p = 0; p < NPARTS; p++)
			parts[p].runs[r] = run_once(parts[p].name, parts[p].fn);
	for (size_t p = 0; p < NPARTS; p++) {
		qsort(parts[p].runs, (size_t)runs, sizeof(double), cmp_d);
		parts[p].median = parts[p].runs[runs / 2];
		parts[p].best = parts[p].runs[0];
		printf("%-18s %9.0f %9.0f   (", parts[p].name, parts[p].median, parts[p].best);
		for (int r = 0; r < runs; r++)
			printf("%s%.0f", r ? " " : "", parts[p].runs[r]);
		printf(")\n");
	}
	x = best("x25519");
	xs = best("x25519_seal");
	xo = best("x25519_open");
	ss = best("hpke_setup_s");
	sr = best("hpke_setup_r");
	kd = best("hpke_kdf");
	as = best("aead_seal");
	ao = best("aead_open");
	sg = best("ecdsa_sign");
	vf = best("ecdsa_verify");
	sp = best("spki_parse");
	se = best("seal");
	op = best("open");
	oc = best("open_cached");
	printf("\nin microseconds, from the best runs (differences are estimates):\n");
	printf("seal %.1f = X25519 as done %.1f (2 multiplications of %.1f; x25519_seal %.1f) + "
	       "HPKE KDF %.1f + AEAD %.1f + ECDSA sign %.1f + rest %.1f\n",
	       se, ss - kd, x, xs, kd, as, sg, se - ss - as - sg);
	printf("open %.1f = X25519 as done %.1f (1 multiplication; x25519_open %.1f) + HPKE KDF "
	       "%.1f + AEAD %.1f + SPKI %.1f + ECDSA verify %.1f + rest %.1f\n",
	       op, sr - kd, xo, kd, ao, sp, vf, op - sr - ao - sp - vf);
	printf("open, repeat sender (key cache) %.1f: saves %.1f\n", oc, op - oc);
	printf("HPKE beyond X25519 (KDF + AEAD): seal %.1f, open %.1f (target: 3)\n", kd + as,
	       kd + ao);
	printf("everything beyond X25519 and ECDSA: seal %.1f, open %.1f, open repeat sender "
	       "%.1f\n",
	       se - (ss - kd) - sg, op - (sr - kd) - vf, oc - (sr - kd) - vf);
	if (bobh != NULL) {
		double cl = median("seal") + median("open"),
		       hy = median("seal_hybrid") + median("open_hybrid");
		double clc = median("seal") + median("open_cached"),
		       hyc = median("seal_hybrid") + median("open_hybrid_cached");

		printf("\nseal + open (medians, us): classical 0x0001 %.1f, hybrid 0x0101 %.1f: "
		       "%.2fx (target <= 1.5x); repeat sender %.1f vs %.1f: %.2fx\n",
		       cl, hy, hy / cl, clc, hyc, hyc / clc);
		printf("hybrid beyond classical: seal +%.1f (xwing_encap %.1f), open +%.1f "
		       "(xwing_decap %.1f)\n",
		       median("seal_hybrid") - median("seal"), median("xwing_encap"),
		       median("open_hybrid") - median("open"), median("xwing_decap"));
	} else {
		printf("\nseal + open (medians, us): classical 0x0001 %.1f (no hybrid suite in "
		       "this "
		       "build)\n",
		       median("seal") + median("open"));
	}
	free(env);
	free(envh);
	sp_xwing_key_free(xwk);
	sp_sealer_free(bobh);
	sp_sealer_free(bobh_nocache);
	sp_hpke_sched_clear(&sched);
	sp_sealer_free(bob_nocache);
	EVP_PKEY_free(xa);
	EVP_PKEY_free(xb);
	tc_dev_free(&alice);
	tc_dev_free(&bob);
	return 0;
}
