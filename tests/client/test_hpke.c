/*
 * Unit tests of client/sp_hpke against the test vectors of RFC 9180 Appendix A, base mode:
 * A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM) and A.2.1 (the same with
 * ChaCha20Poly1305). Every value below is typed from the RFC text (rfc-editor.org/rfc/rfc9180,
 * Appendix A.1.1, A.1.1.1, A.1.1.2, A.2.1, A.2.1.1, A.2.1.2); none is computed by this code.
 */
#include "sp_hpke.h"
#include "sp_test.h"
#include "tc_hex.h"

#include <errno.h>
#include <pthread.h>

#include <openssl/evp.h>

struct tv_enc {
	uint64_t seq;
	const char *aad;
	const char *nonce;
	const char *ct;
};

struct tv_exp {
	const char *context;
	const char *value; /* L = 32 */
};

struct tv_base {
	const char *name;
	uint16_t aead;
	const char *info, *ikm_e, *pk_em, *sk_em, *ikm_r, *pk_rm, *sk_rm, *enc, *shared_secret;
	const char *key_schedule_context, *secret, *key, *base_nonce, *exporter_secret;
	const char *pt; /* the same plaintext for every encryption */
	struct tv_enc encs[6];
	struct tv_exp exps[3];
};

static const struct tv_base vectors[] = {
        {
                .name = "A.1.1 X25519/SHA256/AES-128-GCM",
                .aead = SP_HPKE_AEAD_AES128GCM,
                .info = "4f6465206f6e2061204772656369616e2055726e",
                .ikm_e = "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
                .pk_em = "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
                .sk_em = "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
                .ikm_r = "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
                .pk_rm = "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
                .sk_rm = "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
                .enc = "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
                .shared_secret = "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
                .key_schedule_context =
                        "00725611c9d98c07c03f60095cd32d400d8347d45ed670"
                        "97bbad50fc56da742d07cb6cffde367bb0565ba28bb02c90744a20f5ef37f3052352"
                        "6106f637abb05449",
                .secret = "12fff91991e93b48de37e7daddb52981084bd8aa64289c3788471d9a9712f397",
                .key = "4531685d41d65f03dc48f6b8302c05b0",
                .base_nonce = "56d890e5accaaf011cff4b7d",
                .exporter_secret =
                        "45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8",
                .pt = "4265617574792069732074727574682c20747275746820626561757479",
                .encs =
                        {
                                {0, "436f756e742d30", "56d890e5accaaf011cff4b7d",
                                 "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
                                 "6d8770ac83d07bea87e13c512a"},
                                {1, "436f756e742d31", "56d890e5accaaf011cff4b7c",
                                 "af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab25"
                                 "1c03d0c22a56b8ca42c2063b84"},
                                {2, "436f756e742d32", "56d890e5accaaf011cff4b7f",
                                 "498dfcabd92e8acedc281e85af1cb4e3e31c7dc394a1ca20e173cb7251649158"
                                 "8d96a19ad4a683518973dcc180"},
                                {4, "436f756e742d34", "56d890e5accaaf011cff4b79",
                                 "583bd32bc67a5994bb8ceaca813d369bca7b2a42408cddef5e22f880b631215a"
                                 "09fc0012bc69fccaa251c0246d"},
                                {255, "436f756e742d323535", "56d890e5accaaf011cff4b82",
                                 "7175db9717964058640a3a11fb9007941a5d1757fda1a6935c805c21af32505b"
                                 "f106deefec4a49ac38d71c9e0a"},
                                {256, "436f756e742d323536", "56d890e5accaaf011cff4a7d",
                                 "957f9800542b0b8891badb026d79cc54597cb2d225b54c00c5238c25d05c30e3"
                                 "fbeda97d2e0e1aba483a2df9f2"},
                        },
                .exps =
                        {
                                {"", "3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d009525"
                                     "0ee"},
                                {"00", "2e8f0b54673c7029649d4eb9d5e33bf1872cf76d623ff164ac185da9e88"
                                       "c21a5"},
                                {"54657374436f6e74657874", "e9e43065102c3836401bed8c3c3c75ae46be163"
                                                           "9869391d62c61f1ec7af54931"},
                        },
        },
        {
                .name = "A.2.1 X25519/SHA256/ChaCha20Poly1305",
                .aead = SP_HPKE_AEAD_CHACHA20POLY1305,
                .info = "4f6465206f6e2061204772656369616e2055726e",
                .ikm_e = "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b",
                .pk_em = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
                .sk_em = "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600",
                .ikm_r = "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df",
                .pk_rm = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
                .sk_rm = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
                .enc = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
                .shared_secret = "0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7",
                .key_schedule_context =
                        "00431df6cd95e11ff49d7013563baf7f11588c75a6611e"
                        "e2a4404a49306ae4cfc5b69c5718a60cc5876c358d3f7fc31ddb598503f67be58ea1"
                        "e798c0bb19eb9796",
                .secret = "5b9cd775e64b437a2335cf499361b2e0d5e444d5cb41a8a53336d8fe402282c6",
                .key = "ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91",
                .base_nonce = "5c4d98150661b848853b547f",
                .exporter_secret =
                        "a3b010d4994890e2c6968a36f64470d3c824c8f5029942feb11e7a74b2921922",
                .pt = "4265617574792069732074727574682c20747275746820626561757479",
                .encs =
                        {
                                {0, "436f756e742d30", "5c4d98150661b848853b547f",
                                 "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db"
                                 "21993c62ce81883d2dd1b51a28"},
                                {1, "436f756e742d31", "5c4d98150661b848853b547e",
                                 "6b53c051e4199c518de79594e1c4ab18b96f081549d45ce015be002090bb119e"
                                 "85285337cc95ba5f59992dc98c"},
                                {2, "436f756e742d32", "5c4d98150661b848853b547d",
                                 "71146bd6795ccc9c49ce25dda112a48f202ad220559502cef1f34271e0cb4b02"
                                 "b4f10ecac6f48c32f878fae86b"},
                                {4, "436f756e742d34", "5c4d98150661b848853b547b",
                                 "63357a2aa291f5a4e5f27db6baa2af8cf77427c7c1a909e0b37214dd47db122b"
                                 "b153495ff0b02e9e54a50dbe16"},
                                {255, "436f756e742d323535", "5c4d98150661b848853b5480",
                                 "18ab939d63ddec9f6ac2b60d61d36a7375d2070c9b683861110757062c52b888"
                                 "0a5f6b3936da9cd6c23ef2a95c"},
                                {256, "436f756e742d323536", "5c4d98150661b848853b557f",
                                 "7a4a13e9ef23978e2c520fd4d2e757514ae160cd0cd05e556ef692370ca53076"
                                 "214c0c40d4c728d6ed9e727a5b"},
                        },
                .exps =
                        {
                                {"", "4bbd6243b8bb54cec311fac9df81841b6fd61f56538a775e7c80a9f401606"
                                     "06e"},
                                {"00", "8c1df14732580e5501b00f82b10a1647b40713191b7c1240ac80e2b6880"
                                       "8ba69"},
                                {"54657374436f6e74657874", "5acb09211139c43b3090489a9da433e8a30ee71"
                                                           "88ba8b0a9a1ccf0c229283e53"},
                        },
        },
};

/* Decodes a vector value; the test fails if it is not hex of the expected length. */
static size_t h(const char *hex, uint8_t *out, size_t cap)
{
	long n = tc_unhex(hex, out, cap);

	if (n < 0) {
		SP_FAIL("bad hex in a vector: %.20s...", hex);
		return 0;
	}
	return (size_t)n;
}

static void check_hex(const uint8_t *got, size_t len, const char *want_hex, const char *what)
{
	uint8_t want[512];
	size_t n = h(want_hex, want, sizeof(want));

	if (n != len || memcmp(got, want, n) != 0)
		SP_FAIL("%s differs from the RFC", what);
}

static void run_vector(const struct tv_base *v)
{
	struct sp_hpke_suite suite = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256, v->aead};
	uint8_t ikm[64], sk[32], pk[32], sk_r[32], pk_r[32], info[64], enc[32], pt[64], aad[32];
	uint8_t ct[128], out[128], nonce[SP_HPKE_NN];
	struct sp_hpke_ctx cs, cr;
	struct sp_hpke_trace ts, tr;
	size_t ikm_len, info_len, pt_len;

	printf("# %s\n", v->name);
	/* DeriveKeyPair(ikmE) and DeriveKeyPair(ikmR). */
	ikm_len = h(v->ikm_e, ikm, sizeof(ikm));
	SP_CHECK_EQ_INT(sp_hpke_derive_keypair(SP_HPKE_KEM_X25519_SHA256, ikm, ikm_len, sk, pk), 0);
	check_hex(sk, 32, v->sk_em, "skEm");
	check_hex(pk, 32, v->pk_em, "pkEm");
	ikm_len = h(v->ikm_r, ikm, sizeof(ikm));
	SP_CHECK_EQ_INT(sp_hpke_derive_keypair(SP_HPKE_KEM_X25519_SHA256, ikm, ikm_len, sk_r, pk_r),
	                0);
	check_hex(sk_r, 32, v->sk_rm, "skRm");
	check_hex(pk_r, 32, v->pk_rm, "pkRm");
	SP_CHECK_EQ_INT(sp_hpke_public_key(SP_HPKE_KEM_X25519_SHA256, sk_r, pk), 0);
	check_hex(pk, 32, v->pk_rm, "pk(skRm)");

	/* SetupBaseS with the vector's ephemeral ikm, SetupBaseR from enc. */
	info_len = h(v->info, info, sizeof(info));
	ikm_len = h(v->ikm_e, ikm, sizeof(ikm));
	SP_CHECK_EQ_INT(
	        sp_hpke_setup_base_s(&suite, pk_r, info, info_len, ikm, ikm_len, enc, &cs, &ts), 0);
	check_hex(enc, 32, v->enc, "enc");
	check_hex(ts.shared_secret, 32, v->shared_secret, "sender shared_secret");
	check_hex(ts.key_schedule_context, SP_HPKE_KSC_LEN, v->key_schedule_context,
	          "sender key_schedule_context");
	check_hex(ts.secret, 32, v->secret, "sender secret");
	check_hex(cs.key, cs.key_len, v->key, "sender key");
	check_hex(cs.base_nonce, SP_HPKE_NN, v->base_nonce, "sender base_nonce");
	check_hex(cs.exporter_secret, 32, v->exporter_secret, "sender exporter_secret");

	SP_CHECK_EQ_INT(sp_hpke_setup_base_r(&suite, enc, sk_r, NULL, info, info_len, &cr, &tr), 0);
	check_hex(tr.shared_secret, 32, v->shared_secret, "recipient shared_secret");
	check_hex(tr.key_schedule_context, SP_HPKE_KSC_LEN, v->key_schedule_context,
	          "recipient key_schedule_context");
	check_hex(tr.secret, 32, v->secret, "recipient secret");
	check_hex(cr.key, cr.key_len, v->key, "recipient key");
	check_hex(cr.base_nonce, SP_HPKE_NN, v->base_nonce, "recipient base_nonce");
	check_hex(cr.exporter_secret, 32, v->exporter_secret, "recipient exporter_secret");

	/* Every listed encryption: seal on the sender side, open on the recipient side. */
	pt_len = h(v->pt, pt, sizeof(pt));
	for (size_t i = 0; i < 6; i++) {
		const struct tv_enc *e = &v->encs[i];
		size_t aad_len = h(e->aad, aad, sizeof(aad));

		/* The vectors skip sequence numbers; jump the context to each one. */
		cs.seq = e->seq;
		cr.seq = e->seq;
		sp_hpke_nonce(&cs, nonce);
		check_hex(nonce, SP_HPKE_NN, e->nonce, "nonce");
		SP_CHECK_EQ_INT(sp_hpke_seal(&cs, aad, aad_len, pt, pt_len, ct), 0);
		check_hex(ct, pt_len + SP_HPKE_NT, e->ct, "ct");
		SP_CHECK_EQ_INT(cs.seq, e->seq + 1);
		memset(out, 0xee, sizeof(out));
		SP_CHECK_EQ_INT(sp_hpke_open(&cr, aad, aad_len, ct, pt_len + SP_HPKE_NT, out), 0);
		SP_CHECK_MEM(out, pt, pt_len);
		SP_CHECK_EQ_INT(cr.seq, e->seq + 1);
		/* The same ciphertext at the wrong sequence number or with another aad fails. */
		SP_CHECK_EQ_INT(sp_hpke_open(&cr, aad, aad_len, ct, pt_len + SP_HPKE_NT, out),
		                -EBADMSG);
		cr.seq = e->seq;
		SP_CHECK_EQ_INT(sp_hpke_open(&cr, aad, aad_len - 1, ct, pt_len + SP_HPKE_NT, out),
		                -EBADMSG);
		SP_CHECK_EQ_INT(cr.seq, e->seq);
	}

	/* Exported values, L = 32. */
	for (size_t i = 0; i < 3; i++) {
		uint8_t xc[32], got[32];
		size_t xc_len = h(v->exps[i].context, xc, sizeof(xc));

		SP_CHECK_EQ_INT(sp_hpke_export(&cs, xc, xc_len, got, 32), 0);
		check_hex(got, 32, v->exps[i].value, "sender exported value");
		SP_CHECK_EQ_INT(sp_hpke_export(&cr, xc, xc_len, got, 32), 0);
		check_hex(got, 32, v->exps[i].value, "recipient exported value");
	}
	sp_hpke_ctx_clear(&cs);
	sp_hpke_ctx_clear(&cr);
}

static void test_rfc9180_a1_1_aes128gcm(void)
{
	run_vector(&vectors[0]);
}

static void test_rfc9180_a2_1_chacha20poly1305(void)
{
	run_vector(&vectors[1]);
}

/*
 * The same vectors through prepared schedules (what sp_seal uses): with SP_HPKE_SCHED_EXPORT
 * every intermediate value and export matches the RFC byte for byte; without it key, nonce and
 * ciphertexts still match, and Export is refused.
 */
static void run_vector_sched(const struct tv_base *v)
{
	struct sp_hpke_suite suite = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256, v->aead};
	uint8_t ikm[64], sk_r[32], pk_r[32], info[64], enc[32], pt[64], aad[32], ct[128];
	uint8_t out[128], zero[32] = {0};
	struct sp_hpke_sched sched;
	struct sp_hpke_ctx cs, cr;
	struct sp_hpke_trace ts, tr;
	size_t ikm_len, info_len, pt_len, aad_len;
	EVP_PKEY *key;

	printf("# %s, prepared schedule\n", v->name);
	ikm_len = h(v->ikm_r, ikm, sizeof(ikm));
	SP_CHECK_EQ_INT(sp_hpke_derive_keypair(SP_HPKE_KEM_X25519_SHA256, ikm, ikm_len, sk_r, pk_r),
	                0);
	key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk_r, 32);
	SP_CHECK(key != NULL);
	info_len = h(v->info, info, sizeof(info));
	pt_len = h(v->pt, pt, sizeof(pt));
	aad_len = h(v->encs[0].aad, aad, sizeof(aad));
	for (unsigned flags = 0; flags <= SP_HPKE_SCHED_EXPORT; flags++) {
		printf("# flags %u\n", flags);
		SP_CHECK_EQ_INT(sp_hpke_sched_init(&sched, &suite, info, info_len, flags), 0);
		ikm_len = h(v->ikm_e, ikm, sizeof(ikm));
		/* Twice: the second setup runs on the schedule's reused HKDF context. */
		for (int round = 0; round < 2; round++) {
			memset(&ts, 0xaa, sizeof(ts));
			memset(&tr, 0xaa, sizeof(tr));
			SP_CHECK_EQ_INT(
			        sp_hpke_sched_setup_s(&sched, pk_r, ikm, ikm_len, enc, &cs, &ts),
			        0);
			check_hex(enc, 32, v->enc, "enc");
			check_hex(ts.shared_secret, 32, v->shared_secret, "sender shared_secret");
			check_hex(ts.key_schedule_context, SP_HPKE_KSC_LEN, v->key_schedule_context,
			          "sender key_schedule_context");
			check_hex(ts.secret, 32, v->secret, "sender secret");
			check_hex(cs.key, cs.key_len, v->key, "sender key");
			check_hex(cs.base_nonce, SP_HPKE_NN, v->base_nonce, "sender base_nonce");
			SP_CHECK_EQ_INT(sp_hpke_sched_setup_r(&sched, enc, key, pk_r, &cr, &tr), 0);
			check_hex(tr.secret, 32, v->secret, "recipient secret");
			check_hex(cr.key, cr.key_len, v->key, "recipient key");
			check_hex(cr.base_nonce, SP_HPKE_NN, v->base_nonce, "recipient base_nonce");
			if (flags & SP_HPKE_SCHED_EXPORT) {
				SP_CHECK(cs.has_exporter && cr.has_exporter);
				check_hex(cs.exporter_secret, 32, v->exporter_secret,
				          "sender exporter_secret");
				check_hex(ts.exporter_secret, 32, v->exporter_secret,
				          "traced exporter_secret");
				check_hex(cr.exporter_secret, 32, v->exporter_secret,
				          "recipient exporter_secret");
				for (size_t i = 0; i < 3; i++) {
					uint8_t xc[32], got[32];
					size_t xc_len = h(v->exps[i].context, xc, sizeof(xc));

					SP_CHECK_EQ_INT(sp_hpke_export(&cr, xc, xc_len, got, 32),
					                0);
					check_hex(got, 32, v->exps[i].value, "exported value");
				}
			} else {
				/* No exporter_secret derived, none traced, Export refused. */
				SP_CHECK(!cs.has_exporter && !cr.has_exporter);
				SP_CHECK_MEM(cs.exporter_secret, zero, 32);
				SP_CHECK_MEM(ts.exporter_secret, zero, 32);
				SP_CHECK_EQ_INT(sp_hpke_export(&cs, NULL, 0, out, 32), -EINVAL);
				SP_CHECK_EQ_INT(sp_hpke_export(&cr, NULL, 0, out, 32), -EINVAL);
			}
			cs.seq = v->encs[0].seq;
			cr.seq = v->encs[0].seq;
			SP_CHECK_EQ_INT(sp_hpke_seal(&cs, aad, aad_len, pt, pt_len, ct), 0);
			check_hex(ct, pt_len + SP_HPKE_NT, v->encs[0].ct, "ct");
			SP_CHECK_EQ_INT(
			        sp_hpke_open(&cr, aad, aad_len, ct, pt_len + SP_HPKE_NT, out), 0);
			SP_CHECK_MEM(out, pt, pt_len);
			sp_hpke_ctx_clear(&cs);
			sp_hpke_ctx_clear(&cr);
		}
		/* A wrong DH output (what a wrong key would give) yields another key. */
		SP_CHECK_EQ_INT(sp_hpke_sched_kdf(&sched, zero, enc, pk_r, &cs, NULL), 0);
		SP_CHECK(h(v->key, out, sizeof(out)) == cs.key_len &&
		         memcmp(cs.key, out, cs.key_len) != 0);
		sp_hpke_ctx_clear(&cs);
		sp_hpke_sched_clear(&sched);
		sp_hpke_sched_clear(&sched); /* twice is fine */
	}
	EVP_PKEY_free(key);
}

static void test_rfc9180_vectors_sched(void)
{
	run_vector_sched(&vectors[0]);
	run_vector_sched(&vectors[1]);
}

/* Threads sharing one schedule: each borrows the lent HKDF context or makes its own. */
struct sched_thread {
	struct sp_hpke_sched *sched;
	EVP_PKEY *key;
	const uint8_t *pk;
	int failures;
};

static void *sched_worker(void *arg)
{
	struct sched_thread *t = arg;

	for (int i = 0; i < 200; i++) {
		uint8_t enc[32], msg[40] = "shared schedule", ct[40 + SP_HPKE_NT], out[40];
		struct sp_hpke_ctx cs, cr;

		if (sp_hpke_sched_setup_s(t->sched, t->pk, NULL, 0, enc, &cs, NULL) != 0 ||
		    sp_hpke_sched_setup_r(t->sched, enc, t->key, t->pk, &cr, NULL) != 0 ||
		    sp_hpke_seal(&cs, NULL, 0, msg, sizeof(msg), ct) != 0 ||
		    sp_hpke_open(&cr, NULL, 0, ct, sizeof(ct), out) != 0 ||
		    memcmp(out, msg, sizeof(msg)) != 0)
			t->failures++;
	}
	return NULL;
}

static void test_sched_threads(void)
{
	struct sp_hpke_suite suite = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256,
	                              SP_HPKE_AEAD_CHACHA20POLY1305};
	struct sp_hpke_sched sched;
	struct sched_thread t[4];
	pthread_t th[4];
	uint8_t sk[32], pk[32];
	EVP_PKEY *key;

	SP_CHECK_EQ_INT(sp_hpke_generate_keypair(SP_HPKE_KEM_X25519_SHA256, sk, pk), 0);
	key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, 32);
	SP_CHECK(key != NULL);
	SP_CHECK_EQ_INT(sp_hpke_sched_init(&sched, &suite, (const uint8_t *)"x", 1, 0), 0);
	for (int i = 0; i < 4; i++) {
		t[i] = (struct sched_thread){&sched, key, pk, 0};
		SP_CHECK_EQ_INT(pthread_create(&th[i], NULL, sched_worker, &t[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		SP_CHECK_EQ_INT(t[i].failures, 0);
	}
	sp_hpke_sched_clear(&sched);
	EVP_PKEY_free(key);
}

static void test_sched_bad_arguments(void)
{
	struct sp_hpke_suite good = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256,
	                             SP_HPKE_AEAD_AES128GCM};
	struct sp_hpke_suite bad = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256, 0x0002};
	uint8_t sk[32], pk[32], enc[32], zero[32] = {0}, big[SP_HPKE_MAX_INFO + 1] = {0};
	struct sp_hpke_sched sched, unready;
	struct sp_hpke_ctx c;
	EVP_PKEY *key;

	SP_CHECK_EQ_INT(sp_hpke_generate_keypair(SP_HPKE_KEM_X25519_SHA256, sk, pk), 0);
	key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, 32);
	SP_CHECK(key != NULL);
	SP_CHECK_EQ_INT(sp_hpke_sched_init(NULL, &good, NULL, 0, 0), -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_init(&sched, &bad, NULL, 0, 0), -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_init(&sched, &good, NULL, 0, 0x02), -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_init(&sched, &good, big, sizeof(big), 0), -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_init(&sched, &good, NULL, 1, 0), -EINVAL);
	/* A schedule whose init failed (or never ran) is refused, and clearing it is harmless. */
	memset(&unready, 0, sizeof(unready));
	SP_CHECK_EQ_INT(sp_hpke_sched_setup_s(&unready, pk, NULL, 0, enc, &c, NULL), -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_setup_r(&unready, pk, key, pk, &c, NULL), -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_kdf(&unready, zero, pk, pk, &c, NULL), -EINVAL);
	sp_hpke_sched_clear(&unready);
	sp_hpke_sched_clear(NULL);
	SP_CHECK_EQ_INT(sp_hpke_sched_init(&sched, &good, NULL, 0, 0), 0);
	SP_CHECK_EQ_INT(sp_hpke_sched_setup_s(&sched, zero, NULL, 0, enc, &c, NULL), -EKEYREJECTED);
	SP_CHECK_EQ_INT(sp_hpke_sched_setup_r(&sched, zero, key, pk, &c, NULL), -EKEYREJECTED);
	SP_CHECK_EQ_INT(sp_hpke_sched_setup_r(&sched, pk, key, NULL, &c, NULL), -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_setup_s(&sched, NULL, NULL, 0, enc, &c, NULL), -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_kdf(&sched, NULL, pk, pk, &c, NULL), -EINVAL);
	/* The schedule still works after the refusals. */
	SP_CHECK_EQ_INT(sp_hpke_sched_setup_s(&sched, pk, NULL, 0, enc, &c, NULL), 0);
	sp_hpke_ctx_clear(&c);
	sp_hpke_sched_clear(&sched);
	EVP_PKEY_free(key);
}

/* Random keys: both suites round-trip, in place, with an empty and a long message. */
static void test_random_round_trip(void)
{
	static const uint16_t aeads[] = {SP_HPKE_AEAD_AES128GCM, SP_HPKE_AEAD_CHACHA20POLY1305};

	for (size_t a = 0; a < 2; a++) {
		struct sp_hpke_suite suite = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256,
		                              aeads[a]};
		uint8_t sk[32], pk[32], sk2[32], pk2[32], enc[32], buf[3000 + SP_HPKE_NT];
		struct sp_hpke_ctx cs, cr, cw;

		SP_CHECK_EQ_INT(sp_hpke_generate_keypair(SP_HPKE_KEM_X25519_SHA256, sk, pk), 0);
		SP_CHECK_EQ_INT(sp_hpke_generate_keypair(SP_HPKE_KEM_X25519_SHA256, sk2, pk2), 0);
		SP_CHECK(memcmp(pk, pk2, 32) != 0);
		SP_CHECK_EQ_INT(sp_hpke_setup_base_s(&suite, pk, (const uint8_t *)"i", 1, NULL, 0,
		                                     enc, &cs, NULL),
		                0);
		SP_CHECK_EQ_INT(sp_hpke_setup_base_r(&suite, enc, sk, pk, (const uint8_t *)"i", 1,
		                                     &cr, NULL),
		                0);
		/* The wrong private key gives a context that cannot open. */
		SP_CHECK_EQ_INT(sp_hpke_setup_base_r(&suite, enc, sk2, NULL, (const uint8_t *)"i",
		                                     1, &cw, NULL),
		                0);
		for (size_t len = 0; len <= 3000; len += 1500) {
			for (size_t i = 0; i < len; i++)
				buf[i] = (uint8_t)(i * 7);
			SP_CHECK_EQ_INT(sp_hpke_seal(&cs, NULL, 0, buf, len, buf), 0);
			SP_CHECK_EQ_INT(sp_hpke_open(&cw, NULL, 0, buf, len + SP_HPKE_NT, buf + 0),
			                -EBADMSG);
			/* The failed open wiped buf's plaintext part but left the tag: seal again.
			 */
			cs.seq--;
			for (size_t i = 0; i < len; i++)
				buf[i] = (uint8_t)(i * 7);
			SP_CHECK_EQ_INT(sp_hpke_seal(&cs, NULL, 0, buf, len, buf), 0);
			SP_CHECK_EQ_INT(sp_hpke_open(&cr, NULL, 0, buf, len + SP_HPKE_NT, buf), 0);
			for (size_t i = 0; i < len; i++)
				if (buf[i] != (uint8_t)(i * 7)) {
					SP_FAIL("byte %zu differs after the round trip", i);
					break;
				}
		}
		sp_hpke_ctx_clear(&cs);
		sp_hpke_ctx_clear(&cr);
		sp_hpke_ctx_clear(&cw);
	}
}

static void test_bad_arguments(void)
{
	struct sp_hpke_suite bad_aead = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256,
	                                 0x0002};
	struct sp_hpke_suite bad_kem = {0x0010, SP_HPKE_KDF_HKDF_SHA256, SP_HPKE_AEAD_AES128GCM};
	struct sp_hpke_suite good = {SP_HPKE_KEM_X25519_SHA256, SP_HPKE_KDF_HKDF_SHA256,
	                             SP_HPKE_AEAD_AES128GCM};
	uint8_t sk[32], pk[32], enc[32], zero[32] = {0}, big[SP_HPKE_MAX_INFO + 1] = {0};
	struct sp_hpke_ctx c;

	SP_CHECK_EQ_INT(sp_hpke_generate_keypair(SP_HPKE_KEM_X25519_SHA256, sk, pk), 0);
	SP_CHECK(!sp_hpke_suite_supported(&bad_aead));
	SP_CHECK(!sp_hpke_suite_supported(&bad_kem));
	SP_CHECK_EQ_INT(sp_hpke_setup_base_s(&bad_aead, pk, NULL, 0, NULL, 0, enc, &c, NULL),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_setup_base_s(&bad_kem, pk, NULL, 0, NULL, 0, enc, &c, NULL),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_setup_base_s(&good, pk, big, sizeof(big), NULL, 0, enc, &c, NULL),
	                -EINVAL);
	/* A low-order public key (here 0) gives an all-zero DH output: refused (RFC 9180 7.1.4). */
	SP_CHECK_EQ_INT(sp_hpke_setup_base_s(&good, zero, NULL, 0, NULL, 0, enc, &c, NULL),
	                -EKEYREJECTED);
	SP_CHECK_EQ_INT(sp_hpke_setup_base_r(&good, zero, sk, NULL, NULL, 0, &c, NULL),
	                -EKEYREJECTED);
	SP_CHECK_EQ_INT(sp_hpke_setup_base_s(&good, pk, NULL, 0, NULL, 0, enc, &c, NULL), 0);
	SP_CHECK_EQ_INT(sp_hpke_open(&c, NULL, 0, enc, SP_HPKE_NT - 1, enc), -EINVAL);
	c.seq = UINT64_MAX;
	SP_CHECK_EQ_INT(sp_hpke_seal(&c, NULL, 0, enc, 1, big), -EOVERFLOW);
	SP_CHECK_EQ_INT(sp_hpke_export(&c, NULL, 0, big, 255 * 32 + 1), -EINVAL);
	sp_hpke_ctx_clear(&c);
	sp_hpke_ctx_clear(NULL);
}

int main(void)
{
	SP_RUN(test_rfc9180_a1_1_aes128gcm);
	SP_RUN(test_rfc9180_a2_1_chacha20poly1305);
	SP_RUN(test_rfc9180_vectors_sched);
	SP_RUN(test_sched_threads);
	SP_RUN(test_sched_bad_arguments);
	SP_RUN(test_random_round_trip);
	SP_RUN(test_bad_arguments);
	return sp_test_done();
}
