/*
 * sp_hpke: Hybrid Public Key Encryption (RFC 9180), base mode, composed from OpenSSL 3.0
 * primitives (X25519 key agreement, HKDF, AEAD ciphers). OpenSSL 3.0 has no HPKE API of its
 * own (3.2 has); nothing here is a hand-written cryptographic primitive: the module only strings
 * OpenSSL's X25519, HKDF-Extract, HKDF-Expand, AES-128-GCM and ChaCha20-Poly1305 together the way
 * RFC 9180 sections 4, 5 and 7 say.
 *
 * Algorithms (RFC 9180 section 7 identifiers):
 *	KEM  0x0020 DHKEM(X25519, HKDF-SHA256)   Nsecret 32, Nenc 32, Npk 32, Nsk 32
 *	KEM  0x647A MLKEM768-X25519 (X-Wing)     Nsecret 32, Nenc 1120, Npk 1216, Nsk 32
 *	            (draft-ietf-hpke-pq; only with OpenSSL 3.5 or later, SP_HAVE_PQ_SEAL: see
 *	            sp_xwing.h; base mode; through the sp_hpke_kem_* functions below only)
 *	KDF  0x0001 HKDF-SHA256                  Nh 32
 *	AEAD 0x0001 AES-128-GCM                  Nk 16, Nn 12, Nt 16
 *	AEAD 0x0003 ChaCha20Poly1305             Nk 32, Nn 12, Nt 16
 *
 * Cost: OpenSSL 3.0 spends about 0.8 us per HKDF-Expand call and 1.4 us per HKDF-Extract call
 * (most of it per-call overhead: HKDF-Extract fetches HMAC by name on every call), so what
 * matters is the number of calls. With a prepared schedule (sp_hpke_sched_*) a setup makes
 * four: DHKEM's ExtractAndExpand as one EXTRACT_AND_EXPAND call, the key schedule's Extract,
 * and two Expands (key, base_nonce); the exporter_secret only when asked for.
 *
 * Use: the sender calls sp_hpke_setup_base_s() with the recipient's public key and gets enc (to
 * send) and a context; the recipient calls sp_hpke_setup_base_r() with enc and its private key
 * and gets the same context. Each sp_hpke_seal()/sp_hpke_open() on a context uses the next
 * sequence number (nonce = base_nonce XOR seq), so both sides must process messages in the
 * same order. A context is plain memory (no heap), owned by the caller, used by one thread at
 * a time; sp_hpke_ctx_clear() wipes its secrets.
 *
 * Errors: functions return 0 or a negative errno-style code: -EINVAL (unknown algorithm id,
 * NULL or wrong-length argument), -EBADMSG (AEAD open failed: wrong key, wrong aad, tampered
 * ciphertext), -EKEYREJECTED (X25519 refused a key: the shared secret would be all zero, i.e. a
 * low-order public key), -EOVERFLOW (sequence number exhausted), -ENOMEM (OpenSSL failed
 * otherwise, usually out of memory). Nothing blocks; everything is thread-safe except sharing
 * one context between threads.
 */
#ifndef SP_HPKE_H
#define SP_HPKE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

/* RFC 9180 algorithm identifiers. */
#define SP_HPKE_KEM_X25519_SHA256     0x0020
#define SP_HPKE_KEM_MLKEM768_X25519   0x647A
#define SP_HPKE_KDF_HKDF_SHA256       0x0001
#define SP_HPKE_AEAD_AES128GCM        0x0001
#define SP_HPKE_AEAD_CHACHA20POLY1305 0x0003

/* Sizes for the algorithms above (the largest of each, for buffers). */
#define SP_HPKE_X25519_LEN 32 /* Nsk = Npk = Nenc = Ndh = Nsecret for DHKEM(X25519) */
#define SP_HPKE_NH         32 /* HKDF-SHA256 output size */
#define SP_HPKE_MAX_NK     32
#define SP_HPKE_NN         12
#define SP_HPKE_NT         16
/* key_schedule_context = mode || psk_id_hash || info_hash */
#define SP_HPKE_KSC_LEN (1 + 2 * SP_HPKE_NH)
/* The largest Nenc, Npk and Nsk of the KEMs above (MLKEM768-X25519), for buffers. */
#define SP_HPKE_MAX_NENC 1120
#define SP_HPKE_MAX_NPK  1216
#define SP_HPKE_MAX_NSK  32
/* Encapsulation randomness of MLKEM768-X25519 (ikmE of the test vectors: m || ek_X). */
#define SP_HPKE_XWING_IKME_LEN 64
/* Largest info and exporter_context accepted (OpenSSL 3.0 HKDF caps its info at 1,024 bytes). */
#define SP_HPKE_MAX_INFO 512

/* A ciphersuite: (KEM, KDF, AEAD) identifiers. */
struct sp_hpke_suite {
	uint16_t kem;
	uint16_t kdf;
	uint16_t aead;
};

/* An encryption context (RFC 9180 5.1), for one direction of one exchange. */
struct sp_hpke_ctx {
	struct sp_hpke_suite suite;
	size_t key_len; /* Nk of the AEAD */
	uint8_t key[SP_HPKE_MAX_NK];
	uint8_t base_nonce[SP_HPKE_NN];
	uint8_t exporter_secret[SP_HPKE_NH]; /* valid only if has_exporter */
	int has_exporter;                    /* set up with SP_HPKE_SCHED_EXPORT */
	uint64_t seq;
};

/* Intermediate values of the key schedule, for tests against RFC 9180 Appendix A. */
struct sp_hpke_trace {
	uint8_t shared_secret[SP_HPKE_X25519_LEN];
	uint8_t key_schedule_context[SP_HPKE_KSC_LEN];
	uint8_t secret[SP_HPKE_NH];
	uint8_t exporter_secret[SP_HPKE_NH]; /* only with SP_HPKE_SCHED_EXPORT */
};

/*
 * A prepared key schedule: what SetupBase computes the same way for every message of one suite
 * and one info (RFC 9180 5.1: the key_schedule_context = mode || psk_id_hash || info_hash), done
 * once by sp_hpke_sched_init() instead of two HKDF-Extract calls per message. Flags:
 * SP_HPKE_SCHED_EXPORT also derives the exporter_secret (one more HKDF step per setup), without
 * it sp_hpke_export() refuses the context.
 *
 * The schedule also lends one HKDF context (OpenSSL's EVP_KDF_CTX with SHA-256 set) to the
 * setups that use it, saving its creation per message: a setup borrows it under a try-lock and
 * makes a context of its own when another thread holds it, so a schedule may be shared by
 * threads once initialised. Between setups the lent context holds no secret (its key is reset
 * to zeros after each use). sp_hpke_sched_clear() frees it. A schedule holds a mutex: keep it
 * where it was initialised (never copy the struct).
 */
#define SP_HPKE_SCHED_EXPORT 0x01u

struct sp_hpke_sched {
	struct sp_hpke_suite suite;
	unsigned flags;
	uint8_t ksc[SP_HPKE_KSC_LEN];
	pthread_mutex_t lock; /* guards kctx */
	EVP_KDF_CTX *kctx;    /* the lent HKDF context, or NULL */
	int ready;
};

/*
 * Returns 1 if this module implements the suite (base mode), else 0. A suite with KEM 0x647A is
 * supported only in a build with SP_HAVE_PQ_SEAL, and only by the sp_hpke_kem_* functions and
 * the context functions (seal, open, export); the X25519-sized functions refuse it (-EINVAL).
 */
int sp_hpke_suite_supported(const struct sp_hpke_suite *suite);

/*
 * Nenc, Npk and Nsk of a KEM id into the non-NULL pointers. Returns 0, or -EINVAL for an unknown
 * id, -EOPNOTSUPP for 0x647A in a build without SP_HAVE_PQ_SEAL.
 */
int sp_hpke_kem_lengths(uint16_t kem, size_t *nenc, size_t *npk, size_t *nsk);

/* Nk of an AEAD id (16 or 32), or 0 for an unknown id. */
size_t sp_hpke_aead_key_len(uint16_t aead);

/*
 * DeriveKeyPair(ikm) of RFC 9180 7.1.3 for the KEM: deterministic, for tests and for callers
 * that keep a seed. ikm should carry at least 32 bytes of entropy; ikm_len 1 to SP_HPKE_MAX_INFO.
 * Writes the serialized private key sk and public key pk (32 bytes each). Returns 0, -EINVAL,
 * -ENOMEM.
 */
int sp_hpke_derive_keypair(uint16_t kem, const uint8_t *ikm, size_t ikm_len,
                           uint8_t sk[SP_HPKE_X25519_LEN], uint8_t pk[SP_HPKE_X25519_LEN]);

/*
 * GenerateKeyPair(): a fresh random key pair from OpenSSL's CSPRNG. Returns 0, -EINVAL, -ENOMEM.
 */
int sp_hpke_generate_keypair(uint16_t kem, uint8_t sk[SP_HPKE_X25519_LEN],
                             uint8_t pk[SP_HPKE_X25519_LEN]);

/* pk(sk): the public key of a serialized private key. Returns 0, -EINVAL, -ENOMEM. */
int sp_hpke_public_key(uint16_t kem, const uint8_t sk[SP_HPKE_X25519_LEN],
                       uint8_t pk[SP_HPKE_X25519_LEN]);

/*
 * SetupBaseS(pkR, info): encapsulates to the recipient's public key pk_r, writes enc (32 bytes,
 * sent to the recipient) and fills ctx. ikm_e NULL: a random ephemeral key (production);
 * otherwise the ephemeral key is DeriveKeyPair(ikm_e) (test vectors only: a repeated ikm_e
 * breaks confidentiality). info: 0 to SP_HPKE_MAX_INFO bytes. trace, when not NULL, receives the
 * intermediate values. The context can Export. Returns 0, -EINVAL, -EKEYREJECTED (pk_r is a
 * low-order point), -ENOMEM. This and the two SetupBaseR functions below prepare the key
 * schedule on every call; a caller that sets up many contexts for one suite and info should
 * prepare it once (sp_hpke_sched_init) and use sp_hpke_sched_setup_s/_r.
 */
int sp_hpke_setup_base_s(const struct sp_hpke_suite *suite, const uint8_t pk_r[SP_HPKE_X25519_LEN],
                         const uint8_t *info, size_t info_len, const uint8_t *ikm_e,
                         size_t ikm_e_len, uint8_t enc[SP_HPKE_X25519_LEN], struct sp_hpke_ctx *ctx,
                         struct sp_hpke_trace *trace);

/*
 * SetupBaseR(enc, skR, info): decapsulates enc with the recipient's private key sk_r and fills
 * ctx. pk_r is pk(sk_r) when the caller has it (saves an X25519 operation), or NULL. Returns 0,
 * -EINVAL, -EKEYREJECTED (enc is a low-order point), -ENOMEM.
 */
int sp_hpke_setup_base_r(const struct sp_hpke_suite *suite, const uint8_t enc[SP_HPKE_X25519_LEN],
                         const uint8_t sk_r[SP_HPKE_X25519_LEN],
                         const uint8_t pk_r[SP_HPKE_X25519_LEN], const uint8_t *info,
                         size_t info_len, struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace);

/*
 * SetupBaseR with the recipient's private key already parsed (an X25519 EVP_PKEY, only read):
 * importing a raw X25519 private key costs a scalar multiplication in OpenSSL (it computes the
 * public key), so a recipient that opens many messages keeps its key parsed. pk_r = pk(sk_r),
 * required. Returns as sp_hpke_setup_base_r().
 */
int sp_hpke_setup_base_r_key(const struct sp_hpke_suite *suite,
                             const uint8_t enc[SP_HPKE_X25519_LEN], EVP_PKEY *sk_r,
                             const uint8_t pk_r[SP_HPKE_X25519_LEN], const uint8_t *info,
                             size_t info_len, struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace);

/*
 * Prepares a key schedule for a suite and an info (0 to SP_HPKE_MAX_INFO bytes, copied into
 * nothing: only its hash is kept) with flags (SP_HPKE_SCHED_EXPORT or 0). Costs two HKDF steps.
 * Returns 0, -EINVAL, -ENOMEM; on failure *sched needs no clearing.
 */
int sp_hpke_sched_init(struct sp_hpke_sched *sched, const struct sp_hpke_suite *suite,
                       const uint8_t *info, size_t info_len, unsigned flags);

/*
 * Frees the schedule's HKDF context and wipes it; no setup may be running on it. Accepts NULL,
 * cleared schedules and schedules whose init failed.
 */
void sp_hpke_sched_clear(struct sp_hpke_sched *sched);

/*
 * SetupBaseS with a prepared schedule: as sp_hpke_setup_base_s() with the schedule's suite,
 * info and flags. Thread-safe on a shared schedule.
 */
int sp_hpke_sched_setup_s(struct sp_hpke_sched *sched, const uint8_t pk_r[SP_HPKE_X25519_LEN],
                          const uint8_t *ikm_e, size_t ikm_e_len, uint8_t enc[SP_HPKE_X25519_LEN],
                          struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace);

/*
 * SetupBaseR with a prepared schedule and a parsed recipient key: as sp_hpke_setup_base_r_key()
 * with the schedule's suite, info and flags. Thread-safe on a shared schedule.
 */
int sp_hpke_sched_setup_r(struct sp_hpke_sched *sched, const uint8_t enc[SP_HPKE_X25519_LEN],
                          EVP_PKEY *sk_r, const uint8_t pk_r[SP_HPKE_X25519_LEN],
                          struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace);

/*
 * The KDF half of a setup with a prepared schedule, from the X25519 output dh = DH(skE, pkR) =
 * DH(skR, pkE): DHKEM's ExtractAndExpand with kem_context = enc || pk_r, then the key schedule.
 * Both setups above call it after their X25519 step; it is public for callers that do the DH
 * themselves and for measuring the cost beyond X25519 (tests/client/seal-bench.c). Returns 0,
 * -EINVAL, -ENOMEM. Thread-safe on a shared schedule.
 */
int sp_hpke_sched_kdf(struct sp_hpke_sched *sched, const uint8_t dh[SP_HPKE_X25519_LEN],
                      const uint8_t enc[SP_HPKE_X25519_LEN], const uint8_t pk_r[SP_HPKE_X25519_LEN],
                      struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace);

/*
 * The key schedule alone with a prepared schedule, from a KEM's shared_secret ss (32 bytes):
 * for KEMs that hand it over directly (MLKEM768-X25519, whose encapsulation the caller runs
 * itself, sp_xwing.h), so that sealing with them also skips the per-message schedule set-up.
 * Any KEM of the schedule's suite. Returns 0, -EINVAL, -ENOMEM. Thread-safe on a shared schedule.
 */
int sp_hpke_sched_ss(struct sp_hpke_sched *sched, const uint8_t ss[32], struct sp_hpke_ctx *ctx,
                     struct sp_hpke_trace *trace);

/*
 * The KEM-generic interface: the same operations for any KEM above, with explicit lengths that
 * must equal the KEM's Nsk, Npk and Nenc (sp_hpke_kem_lengths; -EINVAL otherwise). For
 * DHKEM(X25519) they call the functions above; for MLKEM768-X25519 (draft-ietf-hpke-pq section
 * 5):
 *	DeriveKeyPair(ikm): seed = SHAKE256(ikm || "HPKE-v1" || "KEM" || 0x647A || I2OSP(13, 2) ||
 *	    "DeriveKeyPair" || I2OSP(32, 2), 32 bytes) (LabeledDerive with the empty context); sk is
 *	    the seed, pk its X-Wing public key;
 *	Encap/Decap: X-Wing's (sp_xwing.h); shared_secret is the KEM's, no ExtractAndExpand;
 * then the RFC 9180 key schedule unchanged. Returns as the functions above, plus -EOPNOTSUPP for
 * 0x647A in a build without SP_HAVE_PQ_SEAL.
 */
int sp_hpke_kem_derive_keypair(uint16_t kem, const uint8_t *ikm, size_t ikm_len, uint8_t *sk,
                               size_t sk_len, uint8_t *pk, size_t pk_len);

int sp_hpke_kem_generate_keypair(uint16_t kem, uint8_t *sk, size_t sk_len, uint8_t *pk,
                                 size_t pk_len);

/*
 * SetupBaseS for any KEM. ikm_e NULL: fresh randomness. Otherwise, test vectors only: for X25519
 * the ephemeral key is DeriveKeyPair(ikm_e); for MLKEM768-X25519 ikm_e is the encapsulation
 * randomness itself (SP_HPKE_XWING_IKME_LEN bytes, as the draft's vectors use it).
 */
int sp_hpke_kem_setup_base_s(const struct sp_hpke_suite *suite, const uint8_t *pk_r,
                             size_t pk_r_len, const uint8_t *info, size_t info_len,
                             const uint8_t *ikm_e, size_t ikm_e_len, uint8_t *enc, size_t enc_len,
                             struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace);

/* SetupBaseR for any KEM, from the serialized private key sk_r. */
int sp_hpke_kem_setup_base_r(const struct sp_hpke_suite *suite, const uint8_t *enc, size_t enc_len,
                             const uint8_t *sk_r, size_t sk_r_len, const uint8_t *info,
                             size_t info_len, struct sp_hpke_ctx *ctx, struct sp_hpke_trace *trace);

/*
 * ContextS.Seal(aad, pt): encrypts pt_len bytes of pt into ct (pt_len + SP_HPKE_NT bytes: the
 * ciphertext, then the tag) with the nonce of the current sequence number, then advances it.
 * ct may equal pt (in place). Returns 0, -EINVAL, -EOVERFLOW, -ENOMEM; on failure ct is
 * undefined and the sequence number has not moved.
 */
int sp_hpke_seal(struct sp_hpke_ctx *ctx, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                 size_t pt_len, uint8_t *ct);

/*
 * ContextR.Open(aad, ct): checks and decrypts ct_len bytes (ciphertext and tag) into pt
 * (ct_len - SP_HPKE_NT bytes), then advances the sequence number. pt may equal ct. Returns 0,
 * -EBADMSG (authentication failed; pt is wiped and the sequence number does not move), -EINVAL
 * (ct_len < SP_HPKE_NT), -EOVERFLOW, -ENOMEM.
 */
int sp_hpke_open(struct sp_hpke_ctx *ctx, const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                 size_t ct_len, uint8_t *pt);

/*
 * Context.Export(exporter_context, L) (RFC 9180 5.3): writes out_len (1 to 255 * 32) bytes of
 * secret derived from the context into out. Returns 0, -EINVAL (also for a context set up by a
 * schedule without SP_HPKE_SCHED_EXPORT), -ENOMEM.
 */
int sp_hpke_export(const struct sp_hpke_ctx *ctx, const uint8_t *exporter_context,
                   size_t exporter_context_len, uint8_t *out, size_t out_len);

/* The nonce for the current sequence number (base_nonce XOR seq), for tests. */
void sp_hpke_nonce(const struct sp_hpke_ctx *ctx, uint8_t nonce[SP_HPKE_NN]);

/* Wipes the context's secrets. Accepts NULL. */
void sp_hpke_ctx_clear(struct sp_hpke_ctx *ctx);

/* X25519 of the raw private key sk: its public key into pub_out (if not NULL) and DH(sk, pk)
 * into dh (if pk is not NULL). Returns 0, -EKEYREJECTED (an all-zero result), -ENOMEM. For
 * the KEMs built on it (sp_xwing.c). */
int sp_hpke_x25519(const uint8_t sk[SP_HPKE_X25519_LEN], const uint8_t *pk, uint8_t *dh,
                   uint8_t *pub_out);

/* dh = X25519(sk, pk) with the private key already parsed (an X25519 EVP_PKEY, only read).
 * Returns 0, -EINVAL, -EKEYREJECTED, -ENOMEM. */
int sp_hpke_x25519_key(EVP_PKEY *sk, const uint8_t *pk, uint8_t *dh);

#endif
