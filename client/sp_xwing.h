/*
 * sp_xwing: the hybrid KEM MLKEM768-X25519 (the X-Wing construction: draft-connolly-cfrg-xwing-kem,
 * identical to MLKEM768-X25519 of draft-irtf-cfrg-concrete-hybrid-kems; HPKE KEM id 0x647A in
 * draft-ietf-hpke-pq), composed from OpenSSL's ML-KEM-768, X25519, SHAKE256 and SHA3-256. No
 * primitive is written here: the module only strings OpenSSL's together.
 *
 *	keygen(seed):  expanded = SHAKE256(seed, 96)
 *	               (pk_M, sk_M) = ML-KEM-768.KeyGen_internal(d || z = expanded[0:64])
 *	               sk_X = expanded[64:96], pk_X = X25519(sk_X, 9); pk = pk_M || pk_X
 *	encap(pk, eseed): ct_M, ss_M = ML-KEM-768.Encaps(pk_M, m = eseed[0:32])
 *	               ek_X = eseed[32:64], ct_X = X25519(ek_X, 9), ss_X = X25519(ek_X, pk_X)
 *	decap(seed, ct): ss_M = ML-KEM-768.Decaps(sk_M, ct_M), ss_X = X25519(sk_X, ct_X)
 *	ss = SHA3-256(ss_M || ss_X || ct_X || pk_X || "\.//^\")
 *
 * The private key is the 32-byte seed (as X-Wing and HPKE serialise it); every decapsulation
 * expands it again. Needs OpenSSL 3.5 or later (ML-KEM with seeded key generation and the "ikme"
 * encapsulation parameter); built without it (SP_HAVE_PQ_SEAL 0) every function returns
 * -EOPNOTSUPP and sp_xwing_available() 0.
 *
 * Errors: 0 or a negative errno-style code: -EINVAL (NULL argument), -EKEYREJECTED (OpenSSL refused
 * a key: an ML-KEM public key that fails the FIPS 203 modulus check, or an X25519 share giving
 * the all-zero secret), -ENOMEM (OpenSSL failed otherwise), -EOPNOTSUPP. Nothing blocks;
 * everything is thread-safe.
 */
#ifndef SP_XWING_H
#define SP_XWING_H

#include <stdint.h>

#include <openssl/types.h>

#define SP_XWING_SEED_LEN     32   /* Nsk: the private key */
#define SP_XWING_ESEED_LEN    64   /* randomness of one encapsulation: m || ek_X */
#define SP_XWING_PK_LEN       1216 /* Npk: pk_M (1184) || pk_X (32) */
#define SP_XWING_CT_LEN       1120 /* Nenc: ct_M (1088) || ct_X (32) */
#define SP_XWING_SS_LEN       32   /* Nsecret */
#define SP_XWING_MLKEM_PK_LEN 1184
#define SP_XWING_MLKEM_CT_LEN 1088

/* 1 if this build has the KEM (OpenSSL 3.5 or later), else 0. */
int sp_xwing_available(void);

/* The public key of a seed (keygen above). Returns 0, -EINVAL, -ENOMEM, -EOPNOTSUPP. */
int sp_xwing_public_key(const uint8_t seed[SP_XWING_SEED_LEN], uint8_t pk[SP_XWING_PK_LEN]);

/*
 * Encapsulates to pk: writes the ciphertext ct and the shared secret ss. eseed NULL: fresh
 * randomness from OpenSSL's CSPRNG (production); otherwise the 64 bytes given (EncapsulateDerand,
 * test vectors only). Returns 0, -EINVAL, -EKEYREJECTED (pk refused), -ENOMEM, -EOPNOTSUPP.
 */
int sp_xwing_encap(const uint8_t pk[SP_XWING_PK_LEN], const uint8_t *eseed,
                   uint8_t ct[SP_XWING_CT_LEN], uint8_t ss[SP_XWING_SS_LEN]);

/*
 * Decapsulates ct with the private seed. ML-KEM rejects implicitly (a tampered ct_M gives a
 * pseudorandom ss, not an error). Returns 0, -EINVAL, -EKEYREJECTED (ct_X gives the all-zero
 * X25519 secret, which OpenSSL refuses), -ENOMEM, -EOPNOTSUPP.
 */
int sp_xwing_decap(const uint8_t seed[SP_XWING_SEED_LEN], const uint8_t ct[SP_XWING_CT_LEN],
                   uint8_t ss[SP_XWING_SS_LEN]);

/*
 * The ML-KEM-768 half of a public key pk (its first SP_XWING_MLKEM_PK_LEN bytes) parsed and
 * checked (FIPS 203 7.2) into *out, for a sender that seals to one recipient many times;
 * sp_xwing_encap_mlkem() then encapsulates with it (pk_m from this pk). Returns 0, -EINVAL,
 * -EKEYREJECTED, -EOPNOTSUPP.
 */
int sp_xwing_import_mlkem(const uint8_t pk[SP_XWING_PK_LEN], EVP_PKEY **out);
int sp_xwing_encap_mlkem(EVP_PKEY *pk_m, const uint8_t pk[SP_XWING_PK_LEN], const uint8_t *eseed,
                         uint8_t ct[SP_XWING_CT_LEN], uint8_t ss[SP_XWING_SS_LEN]);

/*
 * A prepared decapsulation key: the seed expanded once (the ML-KEM-768 key and the X25519 key
 * parsed, the public key computed), for a recipient that opens many messages: decapsulating
 * with it skips ML-KEM key generation and two X25519 multiplications per message. Immutable
 * once made; may be shared by threads. sp_xwing_key_free wipes and frees it (accepts NULL).
 * sp_xwing_key_new returns 0 and *out, -EINVAL, -ENOMEM, -EOPNOTSUPP.
 */
struct sp_xwing_key;

int sp_xwing_key_new(const uint8_t seed[SP_XWING_SEED_LEN], struct sp_xwing_key **out);
void sp_xwing_key_free(struct sp_xwing_key *k);

/* The key's public key (SP_XWING_PK_LEN bytes, owned by the key). */
const uint8_t *sp_xwing_key_pk(const struct sp_xwing_key *k);

/* sp_xwing_decap() with a prepared key: the same result, the same errors. */
int sp_xwing_decap_key(const struct sp_xwing_key *k, const uint8_t ct[SP_XWING_CT_LEN],
                       uint8_t ss[SP_XWING_SS_LEN]);

#endif
