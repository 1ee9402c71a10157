/*
 * Unit tests of the hybrid KEM MLKEM768-X25519 (X-Wing, HPKE KEM 0x647A): client/sp_xwing and
 * its suite in client/sp_hpke, against
 *  (a) the HPKE working group's published vector draft-ietf-hpke-pq-05 Appendix A.5
 *      "MLKEM768-X25519, HKDF-SHA256, ChaCha20Poly1305" (mode 0, kem_id 25722, kdf_id 1,
 *      aead_id 3): ikmR -> skRm/pkRm, ikmE -> enc, shared_secret, key, base_nonce,
 *      exporter_secret, the ten encryptions and the five exported values. Typed from the draft
 *      text (github.com/hpkewg/hpke-pq, draft-ietf-hpke-pq-05/draft-ietf-hpke-pq.txt); none is
 *      computed by this code. The same KEM values are in hpkewg/hpke-pq's test-vectors.json
 *      (main), which Go's crypto/hpke vendors.
 *  (b) the X-Wing draft's own KEM vectors (seed, eseed, pk, ct, ss), see xwing_draft below;
 *  (c) interoperation with @noble/post-quantum's ml_kem768_x25519 runs in test_xwing_noble.sh,
 *      through this program's --encap-file / --decap-file modes.
 * Built against OpenSSL older than 3.5 (no ML-KEM, SP_HAVE_PQ_SEAL 0) it prints a TAP skip.
 */
#include "sp_hpke.h"
#include "sp_test.h"
#include "sp_version.h"
#include "sp_xwing.h"
#include "tc_hex.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/rand.h>

/* ---- (a) draft-ietf-hpke-pq-05 A.5 --------------------------------------------------------- */

static const char a5_info[] = "3466363436353230366636653230363132303437373236353633363936313665"
                              "3230353537323665";
static const char a5_ikm_e[] = "c82228383c9fb887f7d8b332c28262024eda5b6b0ecd2325fe662daffc0594fa"
                               "d4990e7c8d13812137d06ba7017453de675ab0388d418853617f3ca58cc5daf3";
static const char a5_ikm_r[] = "c8575d137deab99ac98fb0873048c83c3a1f47ef5b409f609c0ca652f58c83e0";
static const char a5_pk_rm[] = "d3d102410970b8bab2984008669914490c95dea2c2ae331ca229aaf3609a6d5a"
                               "cbd60a9ecdd71cd462c08300c474e318b554675679b6d4e1bb1a76269a7a87e6"
                               "8335ba54593239290f35b65e5aa0d3352933339336e83260125e10ac21c97b40"
                               "cff8385a18b2b7d62436377a13b00c27d22fea4176ff76ab80970ff0e26101c2"
                               "45b7c33dcaa420da8ab4df41b88985c6f3845e5a5364e7d7a74ae764c175bd46"
                               "2017cbbc5f684a7e4494391d050b83ba9ba66347774c707658c5cfe481a8c20e"
                               "fc670314d7569a4793625abfd6579435b31886f80924c88c9a4011a0c58b6fe8"
                               "5c5330ca27aa80ffcc58d3ac6a759897b44893bf8b520802b4d7d56bc24976ba"
                               "32c070f0cc7fd88c19e958de0b8fe93a7669b5bb8cf80a88e6aa827924cb1659"
                               "fe6177023611ddd30eb913ad8b2c08fc8209bb9719c61450518881ca5b12b8c7"
                               "3ba3c27824773b5ec6571df41b277555d9aa8f566444614a8473d3b1a5e997af"
                               "066ae1f355338302952281c82ba94f50a22e9ba55a56193d1a3f4b5365f7eb2c"
                               "a81cb4573c33d1d9861cac8d4cf327c0393ab0c0b02572bbc3821bedb45d4025"
                               "7e1f7643796786fcf50126eb136b35737794168a15643973639f6b6f3dd945d3"
                               "ac6a5ab96e5d4b8fdcc54809053828610ee3a56bf4c84447147a9ca5745d5c05"
                               "e3d9cfa659bb4c4c8f2e006826c27633a120c32151deaa2a98bc9578232b5186"
                               "04a5186fc7ac6a1e594b09106418eb1aa1ec6b44fabeae5105d75531b9279b07"
                               "f6277ab297a5ea77d2383154bcb9db8a08fbb10522987d63c99958a774160333"
                               "f5f208567a311464b59ebb8cc8375a1f02470de68bad55c8e5184c8c4a0dcd45"
                               "bfb59995f4c48ecf947896126830818aca48c0749c057b6591d381922d8bb593"
                               "e09d4bb7b6b046179c16a1d6b4149fb1cee31b6b9a015cca526cfac8bf060c69"
                               "9e751c9456c26d832d58926032bb78ffa44d0d024f7a417e1b452f1f779d49c8"
                               "6e0784ab97686acb025c90f9893cc13bfc9186f0e9946ba498eb15a6684828bc"
                               "0ca91482ce91dc4c12d0ce4b936e2556aebdc48cede6adcc066e78895086b493"
                               "16725d9a0987ca75a7e00b0bbe909397389fead7a8ff73bf94bb4272b27b9354"
                               "bdbf3777a978024d074a45077ed0435b8b845e4481139b39ad1276973fd1cd8b"
                               "1cc6e27b16998a7d6295c98347998d6669b15270dba7c098f16136015bd3b1c5"
                               "897b1312f230e49bc07476cf4deb5bf0c971d5ac37f980283940c4e52999c549"
                               "aed09681a7f350f5a1bb1dd5a3b8837a22d506eb2029146817ec955d9dbc2939"
                               "514ecf468c4eeb85198230effac612fb73348b42bcb9b27d9816a16596fb3618"
                               "e71bcc321a4523a66ca248ac032c06b9e24cb084c59bc489868639ae7533f8f0"
                               "3a4eeb56f8a3568f687f38f83fbe163673eb76275b79d7f32a9109c30eaa96a0"
                               "f622503c0337801fd9b2007603ce73c0378b250c35b634b6c8ac2cec1fbb2456"
                               "1a7a7812e77b4844bf9c6a299b409303c85199ca5dc6eac4e4f85ff10a464d96"
                               "c71382760af67fdf006c4eb6b627861d5bf1978588c02825ac70206274742af0"
                               "5a0dd136c2d465ac90b4293d05381d5911dcf48a878a6cf8d971d62c14700867"
                               "e91dd050f85d68c32e227e5be68d3de029608179f6f83b95e5deb6263fc01c80"
                               "641763ebe08e7add5686b0ed1d1e7053982aa616130939d0a09462df7dc74d05";
static const char a5_sk_rm[] = "b6bfa0299b955e85224df2e468f29eeab377ff3b96d4462b39447a22d32b91be";
static const char a5_enc[] = "ab354dd589f74ee0eab7718a630cbec5df1d09058e177cd6dd141d883450ddd70"
                             "c050d88bed3d07cce23415cab411108cc30906482a71adcb134a56e978a6152a8"
                             "e063b24acd1534f264f10458152a9ed4f1f32b3d480c4f2453b7fdea7720146b3"
                             "ee92cf8a13a4840076f68c911c65fa3db5053fb0aabf79e64cd5e7aa71b2b9641"
                             "e713ec7df552e17d5020f8721ee449b42c888e2a3f87cfd96e3a98c3e7c4cd8f6"
                             "47f899570f596bf17d2b6fa2cad19706d9cc3cf09493e1c7ffa0eb2a4559ae1d9"
                             "40fdbef97bed383e6ccfdb448d9f1a81805166b32c2af2e16878c6dc46ab43323"
                             "ed9c136b925239782e3c329c31a5cf2a80faf025a80766e244605c27afe4b624d"
                             "9d8ca99b6ef5439ed1ad044b518c434385acd49f1369ded6624a2832a571ccdd7"
                             "0d08b3c04cb1cd3136166f9a485f536f69ec66f0293e840025ccaac42f8e5f7c9"
                             "cb818076c272797047f5e50c1e9f1dab81cfb48fe4c4998b2427f009702b145f3"
                             "4ad8dbc3e7ad4e4023057ba31cd02c4c0545ebf71eb02533e8eaa2b2f2690ee14"
                             "07bf1f66dc5f4d836c45b82f10b720df72d237488a9af1b6dfb4741fd613379c2"
                             "e211e77f7fae6b3734ad81de2d452005334857c4a3cbc82afc7428fe510495969"
                             "b296d24e1a7431f557d48578cf92ae86c0392f0ba73755a9e5465c8e3495e4cd2"
                             "a82d463244341e39414e26c9b242f31d2cf0e46b2aeb11dd5e56ec44834350d15"
                             "1344229e410faff2b2ace5c9b3fa12571db1d28da2c7133492781dac41b7a7e2b"
                             "ac2260fd12f56939033587824c9dfb17d41b3bceea53763193abe0c7c184d5de1"
                             "61ef5312f31fab42478c9a193b868e4d29b2b7624f3ebe740f393d03d843cd532"
                             "7286a579fd2a6e37aca5b64f9316115d612c7781e704ea7d182701c5019975cad"
                             "14fbf4ab3904d4a35acaf0be32d716a1ef5d7188fc418ae9e60744325a3e80016"
                             "55b756df94c24031c3ce32bd90c0ecdac52ca140fdad7f44d04bd0a7e2a726c54"
                             "cf9793f8784a23296f65da3fd1cbc18300d503c5b27be99b9b0e32d20b3614dc8"
                             "a999f30c2779dd7886cfd486dc1c93ebcf517b5210a4359d9fa1805381f0f2261"
                             "ff47de01de555d98bc1a30dda557a83007b61636abaf9041f96890f0f565eefc4"
                             "5859fbcd32d91b203215541227a4fcc3d95be2ddb0702878caa20f2da62c4ff9f"
                             "e33af591ba1ec241fbe2208e0480f8b1cca1679c096f8f5a02a33e9df445b3274"
                             "ac112b43d51510135cd3f532a3379e90bb7f0cb43717e90555bb1a80924cc6957"
                             "7455687cceb9b1610c05839541e87ad83d79ef3ff24ace1934cfbe989691959d9"
                             "3ac48c716b672b370dd4c144ca1e32508707a6ef8aa29b55759b3d054c56bee1b"
                             "aa6f41b84b9fc3fd681a1a1528eac578141529836a29dda1501a49ba245536725"
                             "6d2fe6f74ebb74ef9a49a94a4c6cd1dd09810f0e9bffa69dd8c94d226d0b2977b"
                             "11a35382888961004a44c60fd602e9ff4271287e9240ba96146515b9db9da6037"
                             "5aeeafeac1eeb764faebacd197df27817c35fe4c5c802e43349d7bc95c8b40c00"
                             "1449d3251c1d92ff6d5c3b08c4b27c";
static const char a5_shared_secret[] =
        "e059d39125d1f09a7232413a13ec5cb18a37417675442c962700d59da46d105a";
static const char a5_key[] = "100a6260ae1a2660dd575fd4f8bf8ebddda22b8bdb0f1bca9fcb26c0aa12418e";
static const char a5_base_nonce[] = "b55542ef5c7fc75d075bbfde";
static const char a5_exporter_secret[] =
        "2838515658ae0c04e99391c0bad9a45613254bad20f7cdd80a70b25f71fec22d";
static const char a5_pt[] = "343236353631373537343739323036393733323037343732373537343638326332"
                            "30373437323735373436383230363236353631373537343739";

static const struct {
	const char *aad, *nonce, *ct;
} a5_encs[10] = {
        {"436f756e742d30", "b55542ef5c7fc75d075bbfde",
         "a4ab74475a498ed725f685421f67c09a4783fe76f67bd251e1e73db8eb1452dfad"
         "4df3c6453f7edecc7bb055dde561e2efd54d73a3d4f1f2f02eac90ba1e9b84ded6"
         "6d43aee6393524db"},
        {"436f756e742d31", "b55542ef5c7fc75d075bbfdf",
         "9a38169c711afe09f0e470779b137ab236a2559faf61d55e417eaf06d48fe62364"
         "643e95ca68382a281c04c67bd88f311939955a14f5f8c64344e4c103e1d94f3084"
         "f122671fc7c0cd7e"},
        {"436f756e742d32", "b55542ef5c7fc75d075bbfdc",
         "0f2a23afb6d94feccf5e151cc5cac46e686325dbf34def1394d157448c420376ce"
         "e6d3c8aa4f3862edcc16fb4c3a9ef8a7ca1054d13fd9b1cfc4a5a47198ffb3b973"
         "72295c894dded976"},
        {"436f756e742d33", "b55542ef5c7fc75d075bbfdd",
         "e5bad2306fccb51b100ce45fba5f88947d7853d66478099011de84bd2a5b9de337"
         "efdf9c459da7edee76cd07db9b7cddbc9a512fa45ee8f121531660861818ddda7d"
         "9d2b53d3f257d36a"},
        {"436f756e742d34", "b55542ef5c7fc75d075bbfda",
         "923c933cbdc5955d34bf6134f1ad5e3c36f2acc9d9fb41dd8b4e0eba2101a05ad5"
         "fe7a895e683176381b9baba7ced24498e87766a14fec8c256c7df2802371a5d29d"
         "2faf03d9b4bbcaa9"},
        {"436f756e742d35", "b55542ef5c7fc75d075bbfdb",
         "0dd329bc293f83ac756c3fd052c2e52a8082a0a41069764736319127fb222a644f"
         "6c28155bfab1bd7763d34ab09907ead4f497c9b14d729c75c8bb6f4acfdd596f39"
         "c2e9872557802821"},
        {"436f756e742d36", "b55542ef5c7fc75d075bbfd8",
         "ae092db4f524c459e04a2453c92b59edef2ed07d08138f3582e7cfcb735d23772a"
         "a223baad29cc2dfe2e6d2935d7c593828413eaabd7eb6cb2b20d6e9fb82ab521d2"
         "5f80fb93190260cc"},
        {"436f756e742d37", "b55542ef5c7fc75d075bbfd9",
         "299434544769a352047b82f0f74cd7f832dbb47b8b3d8500476f95e07d13502e4b"
         "748296f19f51c4b35f4c8f80607d087f6e0632e68bad401e4153c95ceb380c9b6e"
         "1a50477069d68345"},
        {"436f756e742d38", "b55542ef5c7fc75d075bbfd6",
         "6f09ad8f28a51f7f3e34eb99ac25e9b1e4a09ca063babb7c462a7ac7f65310aa2d"
         "4a1eb3b629fba0606793c10a469af0b2407aac02e6073fa8b070d9aab532a8349f"
         "884fd97cc5041b2b"},
        {"436f756e742d39", "b55542ef5c7fc75d075bbfd7",
         "90eb1a4fc6e9f6b5cb142d60d905ad221135aab544c8a20484c249d5417bd2eb97"
         "c655ba8f15feda2adaab1a6bb5c06d0d7b17a6a6d298c9df95681d5ed131d7c703"
         "918397e302620c6a"},
};

static const struct {
	const char *context, *value; /* L = 32 */
} a5_exps[5] = {
        {"70736575646f72616e646f6d30",
         "14b64c194571a8e6fc16cb4d22754c79391081174b6001cd8050142f928defbb"},
        {"70736575646f72616e646f6d31",
         "7152f82449d4cd8137afb9b514fab6791e0938ba7734cb62228b8385003f32a6"},
        {"70736575646f72616e646f6d32",
         "e3759bd609d81501bdac23863795a37437e804dd3274f0ed3964f82e8a6f97e5"},
        {"70736575646f72616e646f6d33",
         "3e9e46c25af47fe02c149de2d3d8300881bb59fdb5b07c6b46d001918945cffa"},
        {"70736575646f72616e646f6d34",
         "0dc9bd0216b18caa75d0188cab85d7fdef4b405c340da75b50e052b889fb2f78"},
};

static const struct sp_hpke_suite xw_suite = {SP_HPKE_KEM_MLKEM768_X25519, SP_HPKE_KDF_HKDF_SHA256,
                                              SP_HPKE_AEAD_CHACHA20POLY1305};

static size_t h(const char *hex, uint8_t *out, size_t cap)
{
	long n = tc_unhex(hex, out, cap);

	if (n < 0) {
		printf("# bad hex in a vector\n");
		exit(1);
	}
	return (size_t)n;
}

static void check_hex(const uint8_t *got, size_t len, const char *want_hex, const char *what)
{
	static uint8_t want[4096];
	size_t n = h(want_hex, want, sizeof(want));

	if (n != len || memcmp(got, want, n) != 0)
		SP_FAIL("%s differs from the vector (%zu bytes, want %zu)", what, len, n);
}

static void test_a5_derive_keypair(void)
{
	uint8_t ikm[32], sk[SP_HPKE_MAX_NSK], pk[SP_HPKE_MAX_NPK];
	size_t n = h(a5_ikm_r, ikm, sizeof(ikm));

	SP_CHECK_EQ_INT(sp_hpke_kem_derive_keypair(SP_HPKE_KEM_MLKEM768_X25519, ikm, n, sk, 32, pk,
	                                           SP_XWING_PK_LEN),
	                0);
	check_hex(sk, 32, a5_sk_rm, "skRm = DeriveKeyPair(ikmR)");
	check_hex(pk, SP_XWING_PK_LEN, a5_pk_rm, "pkRm = DeriveKeyPair(ikmR)");
	/* The public key of the serialized private key (the seed) is the same. */
	SP_CHECK_EQ_INT(sp_xwing_public_key(sk, pk), 0);
	check_hex(pk, SP_XWING_PK_LEN, a5_pk_rm, "pk(skRm)");
}

static void check_a5_ctx(struct sp_hpke_ctx *ctx, const struct sp_hpke_trace *tr, int sender)
{
	uint8_t pt[64], aad[16], buf[128], nonce[SP_HPKE_NN], ctx_b[16], out[32];
	size_t pt_len = h(a5_pt, pt, sizeof(pt));

	check_hex(tr->shared_secret, 32, a5_shared_secret, "shared_secret");
	check_hex(ctx->key, ctx->key_len, a5_key, "key");
	check_hex(ctx->base_nonce, SP_HPKE_NN, a5_base_nonce, "base_nonce");
	check_hex(ctx->exporter_secret, SP_HPKE_NH, a5_exporter_secret, "exporter_secret");
	for (size_t i = 0; i < 10; i++) {
		size_t aad_len = h(a5_encs[i].aad, aad, sizeof(aad));
		uint8_t want[128];
		size_t ct_len = h(a5_encs[i].ct, want, sizeof(want));

		SP_CHECK_EQ_INT(ctx->seq, i);
		sp_hpke_nonce(ctx, nonce);
		check_hex(nonce, SP_HPKE_NN, a5_encs[i].nonce, "nonce");
		if (sender) {
			SP_CHECK_EQ_INT(sp_hpke_seal(ctx, aad, aad_len, pt, pt_len, buf), 0);
			check_hex(buf, pt_len + SP_HPKE_NT, a5_encs[i].ct, "ct");
		} else {
			SP_CHECK_EQ_INT(ct_len, pt_len + SP_HPKE_NT);
			SP_CHECK_EQ_INT(sp_hpke_open(ctx, aad, aad_len, want, ct_len, buf), 0);
			SP_CHECK_MEM(buf, pt, pt_len);
		}
	}
	for (size_t i = 0; i < 5; i++) {
		size_t n = h(a5_exps[i].context, ctx_b, sizeof(ctx_b));

		SP_CHECK_EQ_INT(sp_hpke_export(ctx, ctx_b, n, out, sizeof(out)), 0);
		check_hex(out, sizeof(out), a5_exps[i].value, "exported_value");
	}
}

static void test_a5_setup_s(void)
{
	static uint8_t pk[SP_XWING_PK_LEN], enc[SP_XWING_CT_LEN];
	uint8_t info[64], ikm_e[64];
	size_t info_len = h(a5_info, info, sizeof(info)), ikm_e_len = h(a5_ikm_e, ikm_e, 64);
	struct sp_hpke_ctx ctx;
	struct sp_hpke_trace tr;

	h(a5_pk_rm, pk, sizeof(pk));
	SP_CHECK_EQ_INT(ikm_e_len, SP_HPKE_XWING_IKME_LEN);
	SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_s(&xw_suite, pk, sizeof(pk), info, info_len, ikm_e,
	                                         ikm_e_len, enc, sizeof(enc), &ctx, &tr),
	                0);
	check_hex(enc, sizeof(enc), a5_enc, "enc = Encap(pkRm) with ikmE");
	check_a5_ctx(&ctx, &tr, 1);
	sp_hpke_ctx_clear(&ctx);
}

static void test_a5_setup_r(void)
{
	static uint8_t enc[SP_XWING_CT_LEN];
	uint8_t info[64], sk[32];
	size_t info_len = h(a5_info, info, sizeof(info));
	struct sp_hpke_ctx ctx;
	struct sp_hpke_trace tr;

	h(a5_enc, enc, sizeof(enc));
	h(a5_sk_rm, sk, sizeof(sk));
	SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_r(&xw_suite, enc, sizeof(enc), sk, sizeof(sk), info,
	                                         info_len, &ctx, &tr),
	                0);
	check_a5_ctx(&ctx, &tr, 0);
	sp_hpke_ctx_clear(&ctx);
}

/* ---- (b) the X-Wing draft's own vectors ---------------------------------------------------- */

/*
 * draft-connolly-cfrg-xwing-kem-10 Appendix C, the second and third test vectors (seed, pk,
 * eseed, ct, ss; sk is the seed), typed from the draft text (github.com/dconnolly/
 * draft-connolly-cfrg-xwing-kem,
 * draft-connolly-cfrg-xwing-kem-10/draft-connolly-cfrg-xwing-kem.txt).
 */
static const struct {
	const char *seed, *pk, *eseed, *ct, *ss;
} xwing_draft[2] = {
        {
                "badfd6dfaac359a5efbb7bcc4b59d538df9a04302e10c8bc1cbf1a0b3a5120ea",
                "0333285fa253661508c9fb444852caa4061636cb060e69943b431400134ae1fbc0228724"
                "7cb38068bbb89e6714af10a3fcda6613acc4b5e4b0d6eb960c302a0253b1f507b596f088"
                "4d351da89b01c35543214c8e542390b2bc497967961ef10286879c34316e6483b644fc27"
                "e8019d73024ba1d1cc83650bb068a5431b33d1221b3d122dc1239010a55cb13782140893"
                "f30aca7c09380255a0c621602ffbb6a9db064c1406d12723ab3bbe2950a21fe521b160b3"
                "0b16724cc359754b4c88342651333ea9412d5137791cf75558ebc5c54c520dd6c622a059"
                "f6b332ccebb9f24103e59a297cd69e4a48a3bfe53a5958559e840db5c023f66c10ce2308"
                "1c2c8261d744799ba078285cfa71ac51f44708d0a6212c3993340724b3ac38f63e82a889"
                "a4fc581f6b8353cc6233ac8f5394b6cca292f892360570a3031c90c4da3f02a895677390"
                "e60c24684a405f69ccf1a7b95312a47c844a4f9c2c4a37696dc10072a87bf41a2717d45b"
                "2a99ce09a4898d5a3f6b67085f9a626646bcf369982d483972b9cd7d244c4f49970f766a"
                "22507925eca7df99a491d80c27723e84c7b49b633a46b46785a16a41e02c538251622117"
                "364615d9c2cdaa1687a860c18bfc9ce8690efb2a524cb97cdfd1a4ea661fa7d08817998a"
                "f838679b07c9db8455e2167a67c14d6a347522e89e8971270bec858364b1c1023b82c483"
                "cf8a8b76f040fe41c24dec2d49f6376170660605b80383391c4abad1136d874a77ef73b4"
                "40758b6e7059add20873192e6e372e069c22c5425188e5c240cb3a6e29197ad17e87ec41"
                "a813af68531f262a6db25bbdb8a15d2ed9c9f35b9f2063890bd26ef09426f225aa1e6008"
                "d31600a29bcdf3b10d0bc72788d35e25f4976b3ca6ac7cbf0b442ae399b225d9714d0638"
                "a864bda7018d3b7c793bd2ace6ac68f4284d10977cc029cf203c5698f15a06b162d6c8b4"
                "fd40c6af40824f9c6101bb94e9327869ab7efd835dfc805367160d6c8571e3643ac70cba"
                "d5b96a1ad99352793f5af71705f95126cb4787392e94d808491a2245064ba5a7a30c0663"
                "01392a6c315336e10dbc9c2177c7af382765b6c88eeab51588d01d6a95747f3652dc5b5c"
                "401a23863c7a0343737c737c99287a40a90896d4594730b552b910d23244684206f0eb84"
                "2fb9aa316ab182282a75fb72b6806cea4774b822169c386a58773c3edc8229d85905abb8"
                "7ac228f0f7a2ce9a497bb5325e17a6a82777a997c036c3b862d29c14682ad325a9600872"
                "f3913029a1588648ba590a7157809ff740b5138380015c40e9fb90f0311107946f28e596"
                "2e21666ad65092a3a60480cd16e61ff7fb5b44b70cf12201878428ef8067fceb1e1dcb49"
                "d66c773d312c7e53238cb620e126187009472d41036b702032411dc96cb750631df9d994"
                "52e495deb4300df660c8d35f32b424e98c7ed14b12d8ab11a289ac63c50a24d52925950e"
                "49ba6bf4c2c38953c92d60b6cd034e575c711ac41bfa66951f62b9392828d7b45aed377a"
                "c69c35f1c6b80f388f34e0bb9ce8167eb2bc630382825c396a407e905108081b444ac8a0"
                "7c2507376a750d18248ee0a81c4318d9a38fc44c3b41e8681f87c34138442659512c4127"
                "6e1cc8fc4eb66e12727bcb5a9e0e405cdea21538d6ea885ab169050e6b91e1b69f7ed34b"
                "cbb48fd4c562a576549f85b528c953926d96ea8a160b8843f1c89c62",
                "17cda7cfad765f5623474d368ccca8af0007cd9f5e4c849f167a580b14aabdefaee7eef4"
                "7cb0fca9767be1fda69419dfb927e9df07348b196691abaeb580b32d",
                "c93beb22326705699bbc3d1d0aa6339be7a405debe61a7c337e1a91453c097a6f77c1306"
                "39d1aaeb193175f1a987aa1fd789a63c9cd487ebd6965f5d8389c8d7c8cfacbba4b44d2f"
                "be0ae84de9e96fb11215d9b76acd51887b752329c1a3e0468ccc49392c1e0f1aad61a73c"
                "10831e60a9798cb2e7ec07596b5803db3e243ecbb94166feade0c9197378700f8eb65a43"
                "502bbac4605992e2de2b906ab30ba401d7e1ff3c98f42cfc4b30b974d3316f331461ac05"
                "f43e0db7b41d3da702a4f567b6ee7295199c7be92f6b4a47e7307d34278e03c872fb4864"
                "7c446a64a3937dccd7c6d8de4d34b9dea45a0b065ef15b9e94d1b6df6dca7174d9bc9d14"
                "c6225e3a78a58785c3fe4e2fe6a0706f3365389e4258fbb61ecf1a1957715982b3f18444"
                "24e03acd83da7eee50573f6cd3ff396841e9a00ad679da92274129da277833d0524674fe"
                "ea09a98d25b888616f338412d8e65e151e65736c8c6fb448c9260fa20e7b2712148bcd3a"
                "0853865f50c1fc9e4f201aee3757120e034fd509d954b7a749ff776561382c4cb64cebcb"
                "b6aa82d04cd5c2b40395ecaf231bde8334ecfd955d09efa8c6e7935b1cb0298fb8b6740b"
                "e4593360eed5f129d59d98822a6cea37c57674e919e84d6b90f695fca58e7d29092bd70f"
                "7c97c6dfb021b9f87216a6271d8b144a364d03b6bf084f972dc59800b14a2c008bbd0992"
                "b5b82801020978f2bdddb3ca3367d876cffb3548dab695a29882cae2eb5ba7c847c3c71b"
                "d0150fa9c33aac8e6240e0c269b8e295ddb7b77e9c17bd310be65e28c0802136d086777b"
                "e5652d6f1ac879d3263e9c712d1af736eac048fe848a577d6afaea1428dc71db8c430edd"
                "7b584ae6e6aeaf7257aff0fd8fe25c30840e30ccfa1d95118ef0f6657367e9070f3d97a2"
                "e9a7bae19957bd707b00e31b6b0ebb9d7df4bd22e44c060830a194b5b8288353255b5295"
                "4ff5905ab2b126d9aa049e44599368c27d6cb033eae5182c2e1504ee4e3745f51488997b"
                "8f958f0209064f6f44a7e4de5226d5594d1ad9b42ac59a2d100a2f190df873a2e141552f"
                "33c923b4c927e8747c6f830c441a8bd3c5b371f6b3ab8103ebcfb18543aefc1beb6f776b"
                "bfd5344779f4aa23daaf395f69ec31dc046b491f0e5cc9c651dfc306bd8f2105be7bc7a4"
                "f4e21957f87278c771528a8740a92e2daefa76a3525f1fae17ec4362a2700988001d8600"
                "11d6ca3a95f79a0205bcf634cef373a8ea273ff0f4250eb8617d0fb92102a6aa09cf0c3e"
                "e2cad1ad96438c8e4dfd6ee0fcc85833c3103dd6c1600cd305bc2df4cda89b55ca237a3f"
                "9c3f82390074ff30825fc750130ebaf13d0cf7556d2c52a98a4bad39ca5d44aaadeaef77"
                "5c695e64d06e966acfcd552a14e2df6c63ae541f0fa88fc48263089685704506a21a0385"
                "6ce65d4f06d54f3157eeabd62491cb4ac7bf029e79f9fbd4c77e2a3588790c710e611da8"
                "b2040c76a61507a8020758dcc30894ad018fef98e401cc54106e20d94bd544a8f0e1fd05"
                "00342d123f618aa8c91bdf6e0e03200693c9651e469aee6f91c98bea4127ae66312f4ae3"
                "ea155b67",
                "f2e86241c64d60f6649fbc6c5b7d17180b780a3f34355e64a85749949c45f150",
        },
        {
                "ef58538b8d23f87732ea63b02b4fa0f4873360e2841928cd60dd4cee8cc0d4c9",
                "36244278824f77c621c660892c1c3886a9560caa52a97c461fd3958a598e749bbc8c7798"
                "ac8870bac7318ac2b863000ca3b0bdcbbc1ccfcb1a30875df9a76976763247083e646ccb"
                "2499a4e4f0c9f4125378ba3da1999538b86f99f2328332c177d1192b849413e655101289"
                "73f679d23253850bb6c347ba7ca81b5e6ac4c574565c731740b3cd8c9756caac39fba7ac"
                "422acc60c6c1a645b94e3b6d21485ebad9c4fe5bb4ea0853670c5246652bff65ce8381cb"
                "473c40c1a0cd06b54dcec11872b351397c0eaf995bebdb6573000cbe2496600ba76c8cb0"
                "23ec260f0571e3ec12a9c82d9db3c57b3a99e8701f78db4fabc1cc58b1bae02745073a81"
                "fc8045439ba3b885581a283a1ba64e103610aabb4ddfe9959e7241011b2638b56ba6a982"
                "ef610c514a57212555db9a98fb6bcf0e91660ec15dfa66a67408596e9ccb97489a09a073"
                "ffd1a0a7ebbe71aa5ff793cb91964160703b4b6c9c5390842c2c905d4a9f88111fed5787"
                "4ba9b03cf611e70486edf539767c7485189d5f1b08e32a274dc24a39c918fd2a4dfa946a"
                "8c897486f2c974031b2804aabc81749db430b85311372a3b8478868200b40e043f7bf4a1"
                "c3a08b0771b431e342ee277410bca034a0c77086c8f702b3aed2b4108bbd3af471633373"
                "a1ac74b128b148d1b9412aa66948cac6dc6614681fda02ca86675d2a756003c49c50f06e"
                "13c63ce4bc9f321c860b202ee931834930011f485c9af86b9f642f0c353ad305c66996b9"
                "a136b753973929495f0d8048db75529edcb4935904797ac66605490f66329c3bb36b8573"
                "a3e00f817b3082162ff106674d11b261baae0506cde7e69fdce93c6c7b59b9d4c759758a"
                "cf287c2e4c4bfab5170a9236daf21bdb6005e92464ee8863f845cf37978ef19969264a51"
                "6fe992c93b5f7ae7cb6718ac69257d630379e4aac6029cb906f98d91c92d118c36a6d161"
                "15d4c8f16066078badd161a65ba51e0252bc358c67cd2c4beab2537e42956e08a39cfccf"
                "0cd875b5499ee952c83a162c68084f6d35cf92f71ec66baec74ab87e2243160b64df54af"
                "b5a07f78ec0f5c5759e5a4322bca2643425748a1a97c62108510c44fd9089c5a7c14e57b"
                "1b77532800013027cff91922d7c935b4202bb507aa47598a6a5a030117210d4c49c17470"
                "0550ad6f82ad40e965598b86bc575448eb19d70380d465c1f870824c026d74a2522a799b"
                "7b122d06c83aa64c0974635897261433914fdfb14106c230425a83dc8467ad8234f086c7"
                "2a47418be9cfb582b1dcfa3d9aa45299b79fff265356d8286a1ca2f3c2184b2a70d15289"
                "e5b202d03b64c735a867b1154c55533ff61d6c296277011848143bc85a4b823040ae025a"
                "29293ab77747d85310078682e0ba0ac236548d905a79494324574d417c7a3457bd5fb525"
                "3c4876679034ae844d0d05010fec722db5621e3a67a2d58e2ff33b432269169b51f9dcc0"
                "95b8406dc1864cf0aeb6a2132661a38d641877594b3c51892b9364d25c63d637140a2018"
                "d10931b0daa5a2f2a405017688c991e586b522f94b1132bc7e87a63246475816c8be9c62"
                "b731691ab912eb656ce2619225663364701a014b7d0337212caa2ecc731f34438289e0ca"
                "4590a276802d980056b5d0d316cae2ecfea6d86696a9f161aa90ad47eaad8cadd31ae3cb"
                "c1c013747dfee80fb35b5299f555dcc2b787ea4f6f16ffdf66952461",
                "22a96188d032675c8ac850933c7aff1533b94c834adbb69c6115bad4692d8619f90b0cdf"
                "8a7b9c264029ac185b70b83f2801f2f4b3f70c593ea3aeeb613a7f1b",
                "0d2e38cbf17a2e2e4e0c87a94ca1e7701ae1552e02509b3b00f9c82c39e3fd435b05b912"
                "75f47abc9f1021429a26a346598cd6cd9efdc8adc1dbc35036d0290bf89733c835309202"
                "232f9bf652ea82f3d49280d6e8a3bd3135fb883445ab5b074d949c5350c7c7d6ac59905b"
                "dbfce6639da8a9d4b390ecc1dd05522d2956f2d37a05593996e5cb3fd8d5a9eb52417732"
                "e1ebf545588713b4760227115aab7ada178dadbca583b26cfedba2888a0c95b950bf07f7"
                "50d7aa8103798aa3470a042c0105c6a037de2f9ebc396021b2ba2c16aba696fbac3454dc"
                "8e053b8fa55edd45215eeb57a1eab9106fb426b375a9b9e5c3419efc7610977e72640f9f"
                "d1b2ec337de33c35e5a7581b2aae4d8ee86d2e0ebf82a1350714de50d2d788687878a196"
                "44ae4e3175e8d59dc90171b3badeff65aeaf600e5e5483a3595fdeb40cbafcbd040c29a2"
                "f6900533ae999d24f54dfcef748c30313ca447cdddfa57ad78eaa890e90f3f7bf8d11696"
                "8a5713cc75fd0408f36364fa265c5617039304eaeac4cbee6fc49b9fe2276768cdbec2d7"
                "3a507b543cc028dc1b154b7c2b0412254c466a94a8d6ea3a47e1743469bd45c08f54cf96"
                "5884be3696e961741ede16e3b1bc4feb93faaef31d911dc0cb3fa90bcda991959a9d2cbc"
                "817a5564c5c01177a59e9577589ea344d60cf5b0aa39f31863febd54603ca87ad2363c76"
                "6642a3f52557bcd9e4c05a87665842ba336b83156a677030f0bad531a8387a1486a599ca"
                "a748fcea7bdc1eb63f3cdb97173551ab7c1c36b69acbbdb2ff7a1e7bc70439632ddc67b9"
                "7f3da1f59b3c1588515957cb8a2f86ab635ce0a78b7cdf24eac3445e8fc8b79ba04da9e9"
                "03f49a7d912c197a84b4cfabc779b97d24788419bcf58035db99717edb9fd1c1df8c4005"
                "f700eabba528ddfcbaeda6dd30754f795948a34c9319ab653524b19931c7900c4167988a"
                "f52292fe902e746b524d20ceffb4339e8f5535f41cf35f0f8ea8b4a7b949c5d2381116b1"
                "46e9b913a83a3fa1c65ff9468c835fe4114554a6c66a80e1c9a6bb064b380be3c95e5595"
                "ec979bf1c85aa938938e3f10e72b0c87811969e8ab0d83de0b0604c4016ac3a015e19514"
                "089271bdc6ebf2ec56fab6018e44de749b4c36cc235e370da8466dbdc253542a2d704eb3"
                "316fd70d5d238cb7eaaf05966d973f62c7ef43b9a806f4ed213ac8099ea15d61a9024441"
                "60883f6bf441a3e1469945c9b79489ea18390f1ebc83caca10bdb8f2429877b52bd44c94"
                "a228ef91c392ef5398c5c83982701318ccedab92f7a279c4fddebaa7fe5e986c48b7d813"
                "5b3fe4cd15be2004ce73ff86b1e55f8ecd6ba5b8114315f8e716ef3ab0a64564a4644651"
                "166ebd68b1f783e2e443dbccadfe189368647629f1a12215840b7f1d026de2f665c2eb02"
                "3ff51a6df160912811ee03444ae4227fb941dc9ec4f31b445006fd384de5e60e0a5061b5"
                "0cb1202f863090fc05eb814e2d42a03586c0b56f533847ac7b8184ce9690bc8dece32a88"
                "ca934f541d4cc520fa64de6b6e1c3c8e03db5971a445992227c825590688d203523f5271"
                "61137334",
                "953f7f4e8c5b5049bdc771d1dffada0dd961477d1a2ae0988baa7ea6898d893f",
        },
};

static void test_xwing_draft_vectors(void)
{
	static uint8_t pk[SP_XWING_PK_LEN], ct[SP_XWING_CT_LEN], want_ct[SP_XWING_CT_LEN];
	uint8_t seed[32], eseed[SP_XWING_ESEED_LEN], ss[32];

	for (size_t i = 0; i < 2; i++) {
		SP_CHECK_EQ_INT(h(xwing_draft[i].seed, seed, sizeof(seed)), 32);
		SP_CHECK_EQ_INT(h(xwing_draft[i].eseed, eseed, sizeof(eseed)), SP_XWING_ESEED_LEN);
		SP_CHECK_EQ_INT(sp_xwing_public_key(seed, pk), 0);
		check_hex(pk, sizeof(pk), xwing_draft[i].pk, "X-Wing pk(seed)");
		SP_CHECK_EQ_INT(sp_xwing_encap(pk, eseed, ct, ss), 0);
		check_hex(ct, sizeof(ct), xwing_draft[i].ct,
		          "X-Wing ct = EncapsulateDerand(pk, eseed)");
		check_hex(ss, sizeof(ss), xwing_draft[i].ss, "X-Wing ss of EncapsulateDerand");
		memset(ss, 0, sizeof(ss));
		h(xwing_draft[i].ct, want_ct, sizeof(want_ct));
		SP_CHECK_EQ_INT(sp_xwing_decap(seed, want_ct, ss), 0);
		check_hex(ss, sizeof(ss), xwing_draft[i].ss, "X-Wing ss = Decapsulate(seed, ct)");
	}
}

/* ---- round trips, refusals, the classical suites unchanged --------------------------------- */

static void test_random_round_trip(void)
{
	static uint8_t pk[SP_XWING_PK_LEN], enc[SP_XWING_CT_LEN];
	uint8_t sk[32], ct[64], pt[48];
	static const uint8_t msg[] = "sealed to a hybrid key";
	struct sp_hpke_ctx s, r;

	for (int i = 0; i < 8; i++) {
		SP_CHECK_EQ_INT(sp_hpke_kem_generate_keypair(SP_HPKE_KEM_MLKEM768_X25519, sk,
		                                             sizeof(sk), pk, sizeof(pk)),
		                0);
		SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_s(&xw_suite, pk, sizeof(pk), NULL, 0, NULL,
		                                         0, enc, sizeof(enc), &s, NULL),
		                0);
		SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_r(&xw_suite, enc, sizeof(enc), sk,
		                                         sizeof(sk), NULL, 0, &r, NULL),
		                0);
		SP_CHECK_EQ_INT(sp_hpke_seal(&s, NULL, 0, msg, sizeof(msg), ct), 0);
		SP_CHECK_EQ_INT(sp_hpke_open(&r, NULL, 0, ct, sizeof(msg) + SP_HPKE_NT, pt), 0);
		SP_CHECK_MEM(pt, msg, sizeof(msg));
		/* A tampered ML-KEM ciphertext decapsulates (implicit rejection) to another key. */
		enc[i * 100] ^= 1;
		SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_r(&xw_suite, enc, sizeof(enc), sk,
		                                         sizeof(sk), NULL, 0, &r, NULL),
		                0);
		SP_CHECK_EQ_INT(sp_hpke_open(&r, NULL, 0, ct, sizeof(msg) + SP_HPKE_NT, pt),
		                -EBADMSG);
		sp_hpke_ctx_clear(&s);
		sp_hpke_ctx_clear(&r);
	}
}

static void test_refusals(void)
{
	static uint8_t pk[SP_XWING_PK_LEN], enc[SP_XWING_CT_LEN];
	uint8_t sk[32], x_pk[32], ikm[64] = {1};
	struct sp_hpke_ctx ctx;
	struct sp_hpke_sched sched;

	SP_CHECK_EQ_INT(
	        sp_hpke_kem_generate_keypair(SP_HPKE_KEM_MLKEM768_X25519, sk, 32, pk, sizeof(pk)),
	        0);
	/* Wrong lengths for the KEM. */
	SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_s(&xw_suite, pk, 32, NULL, 0, NULL, 0, enc,
	                                         sizeof(enc), &ctx, NULL),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_s(&xw_suite, pk, sizeof(pk), NULL, 0, NULL, 0, enc,
	                                         32, &ctx, NULL),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_s(&xw_suite, pk, sizeof(pk), NULL, 0, ikm, 32, enc,
	                                         sizeof(enc), &ctx, NULL),
	                -EINVAL);
	SP_CHECK_EQ_INT(
	        sp_hpke_kem_setup_base_r(&xw_suite, enc, sizeof(enc), sk, 64, NULL, 0, &ctx, NULL),
	        -EINVAL);
	SP_CHECK_EQ_INT(
	        sp_hpke_kem_derive_keypair(SP_HPKE_KEM_MLKEM768_X25519, ikm, 32, sk, 32, pk, 32),
	        -EINVAL);
	/* The X25519-sized functions refuse the hybrid suite. */
	SP_CHECK_EQ_INT(sp_hpke_setup_base_s(&xw_suite, x_pk, NULL, 0, NULL, 0, enc, &ctx, NULL),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_setup_base_r(&xw_suite, enc, sk, NULL, NULL, 0, &ctx, NULL),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_derive_keypair(SP_HPKE_KEM_MLKEM768_X25519, ikm, 32, sk, x_pk),
	                -EINVAL);
	SP_CHECK_EQ_INT(sp_hpke_sched_init(&sched, &xw_suite, NULL, 0, 0), 0);
	SP_CHECK_EQ_INT(sp_hpke_sched_setup_s(&sched, x_pk, NULL, 0, enc, &ctx, NULL), -EINVAL);
	sp_hpke_sched_clear(&sched);
	/* Other KDF/AEAD pairs with the hybrid KEM. */
	SP_CHECK(sp_hpke_suite_supported(&xw_suite));
	SP_CHECK(sp_hpke_suite_supported(&(struct sp_hpke_suite){
	        SP_HPKE_KEM_MLKEM768_X25519, SP_HPKE_KDF_HKDF_SHA256, SP_HPKE_AEAD_AES128GCM}));
	SP_CHECK(!sp_hpke_suite_supported(&(struct sp_hpke_suite){SP_HPKE_KEM_MLKEM768_X25519,
	                                                          0x0002, SP_HPKE_AEAD_AES128GCM}));
	/* An ML-KEM public key whose coefficients are out of range (all 0xff) is refused. */
	memset(pk, 0xff, SP_XWING_MLKEM_PK_LEN);
	SP_CHECK_EQ_INT(sp_hpke_kem_setup_base_s(&xw_suite, pk, sizeof(pk), NULL, 0, NULL, 0, enc,
	                                         sizeof(enc), &ctx, NULL),
	                -EKEYREJECTED);
}

/* ---- (c) file modes for the @noble/post-quantum interoperation test ------------------------ */

static int read_hex_field(char **p, uint8_t *out, size_t want)
{
	char *tok = strtok_r(NULL, " \t\r\n", p);

	return tok != NULL && tc_unhex(tok, out, want) == (long)want ? 0 : -1;
}

static void put_hex(FILE *f, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", b[i]);
}

/*
 * --decap-file F: each line "seed pk ct ss [eseed]" made by noble; checks pk(seed),
 * Decap(seed, ct) and, with eseed, Encap(pk, eseed) = (ct, ss).
 */
static int decap_file(const char *path)
{
	static uint8_t pk[SP_XWING_PK_LEN], pk2[SP_XWING_PK_LEN], ct[SP_XWING_CT_LEN],
	        ct2[SP_XWING_CT_LEN];
	static char line[8192];
	uint8_t seed[32], ss[32], ss2[32], eseed[SP_XWING_ESEED_LEN];
	FILE *f = fopen(path, "r");
	int n = 0, bad = 0;

	if (f == NULL) {
		perror(path);
		return 2;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save);

		if (tok == NULL)
			continue;
		if (tc_unhex(tok, seed, 32) != 32 || read_hex_field(&save, pk, sizeof(pk)) ||
		    read_hex_field(&save, ct, sizeof(ct)) || read_hex_field(&save, ss, 32)) {
			printf("# line %d: malformed\n", n + 1);
			bad++;
			break;
		}
		n++;
		if (sp_xwing_public_key(seed, pk2) != 0 || memcmp(pk, pk2, sizeof(pk)) != 0) {
			printf("# line %d: pk(seed) differs from noble's\n", n);
			bad++;
		}
		if (sp_xwing_decap(seed, ct, ss2) != 0 || memcmp(ss, ss2, 32) != 0) {
			printf("# line %d: Decap(seed, ct) differs from noble's shared secret\n",
			       n);
			bad++;
		}
		if (read_hex_field(&save, eseed, sizeof(eseed)) == 0 &&
		    (sp_xwing_encap(pk, eseed, ct2, ss2) != 0 || memcmp(ct, ct2, sizeof(ct)) != 0 ||
		     memcmp(ss, ss2, 32) != 0)) {
			printf("# line %d: Encap(pk, eseed) differs from noble's\n", n);
			bad++;
		}
	}
	fclose(f);
	printf("# %d noble encapsulations checked, %d mismatches\n", n, bad);
	return n > 0 && bad == 0 ? 0 : 1;
}

/* --encap-file F N: writes N lines "seed pk ct ss" from random seeds for noble to check. */
static int encap_file(const char *path, int count)
{
	static uint8_t pk[SP_XWING_PK_LEN], ct[SP_XWING_CT_LEN];
	uint8_t seed[32], ss[32];
	FILE *f = fopen(path, "w");

	if (f == NULL) {
		perror(path);
		return 2;
	}
	for (int i = 0; i < count; i++) {
		if (RAND_bytes(seed, sizeof(seed)) != 1 || sp_xwing_public_key(seed, pk) != 0 ||
		    sp_xwing_encap(pk, NULL, ct, ss) != 0) {
			fclose(f);
			return 1;
		}
		put_hex(f, seed, 32);
		fputc(' ', f);
		put_hex(f, pk, sizeof(pk));
		fputc(' ', f);
		put_hex(f, ct, sizeof(ct));
		fputc(' ', f);
		put_hex(f, ss, 32);
		fputc('\n', f);
	}
	return fclose(f) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (!sp_xwing_available()) {
		printf("1..0 # SKIP MLKEM768-X25519 needs OpenSSL 3.5 or later (ML-KEM); built "
		       "with "
		       "OpenSSL %s (SP_HAVE_PQ_SEAL 0)\n",
		       SP_OPENSSL_BUILT);
		return argc > 1 ? 77 : 0;
	}
	if (argc == 3 && strcmp(argv[1], "--decap-file") == 0)
		return decap_file(argv[2]);
	if (argc == 4 && strcmp(argv[1], "--encap-file") == 0)
		return encap_file(argv[2], atoi(argv[3]));
	SP_RUN(test_a5_derive_keypair);
	SP_RUN(test_a5_setup_s);
	SP_RUN(test_a5_setup_r);
	SP_RUN(test_xwing_draft_vectors);
	SP_RUN(test_random_round_trip);
	SP_RUN(test_refusals);
	return sp_test_done();
}
