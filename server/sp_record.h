/*
 * sp_record: TLS 1.3 record protection (RFC 8446 sections 5.1-5.5, 7.1-7.3) for a connection
 * whose handshake OpenSSL finished and whose SSL object has been freed.
 *
 * Who calls what:
 *   - Each worker thread makes one sp_rl_crypto_t at start (sp_rl_crypto_new) and frees it at
 *     exit. It holds the fetched algorithms and the one EVP_CIPHER_CTX that protects every
 *     record of every connection of that worker. Not thread-safe: one per thread.
 *   - After SSL_do_handshake() succeeds, the connection code takes the cipher suite, the two
 *     application traffic secrets (keylog callback: CLIENT_TRAFFIC_SECRET_0 and
 *     SERVER_TRAFFIC_SECRET_0) and the record sequence numbers (read: 0 when
 *     SSL_has_pending() is 0; write: the records the server wrote under its application key,
 *     i.e. the NewSessionTicket records), calls sp_rl_init() on the sp_rl_t inside the
 *     connection, wipes its copies of the secrets and calls SSL_free().
 *   - Reading: buffer input until sp_rl_record_len() gives a length and that many bytes are
 *     there, then sp_rl_open() the record in place. The caller handles the inner content
 *     types: application data; alerts (2 bytes: level, description; close_notify is 1 0);
 *     handshake messages (only KeyUpdate, type 24, is legal here: call sp_rl_update(READ)
 *     after it, and if update_requested answer with a KeyUpdate(update_not_requested) sealed
 *     under the old write key, then sp_rl_update(WRITE)). Any negative return is fatal to the
 *     connection: send the alert named next to the error code (sealed, if the write state is
 *     still usable) and close.
 *   - Writing: sp_rl_seal() at most SP_RL_MAX_PLAIN bytes per record. When
 *     sp_rl_write_needs_update() says so, send a KeyUpdate and sp_rl_update(WRITE).
 *   - On close: sp_rl_wipe().
 * All functions are synchronous and never block; none allocates except sp_rl_crypto_new().
 */
#ifndef SP_RECORD_H
#define SP_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define SP_RL_HEADER     5
#define SP_RL_MAX_PLAIN  16384                   /* TLSPlaintext fragment limit */
#define SP_RL_MAX_CIPHER (16384 + 256)           /* TLSCiphertext length limit (RFC 8446 5.2) */
#define SP_RL_OVERHEAD   (SP_RL_HEADER + 1 + 16) /* header, inner content type, AEAD tag */
#define SP_RL_MAX_RECORD (SP_RL_HEADER + SP_RL_MAX_CIPHER) /* largest record sp_rl_open takes */
/* Write-key usage after which sp_rl_write_needs_update() asks for a KeyUpdate: 2^23 records,
 * well under the 2^24.5 full-size records per AES-GCM key of RFC 8446 5.5. */
#define SP_RL_WRITE_UPDATE_AFTER (UINT64_C(1) << 23)

enum { SP_RL_CT_ALERT = 21, SP_RL_CT_HANDSHAKE = 22, SP_RL_CT_APPDATA = 23 };

/* Errors (negative returns), each with the alert to send (RFC 8446 6.2). */
enum {
	/* decode_error: legacy version not 0x0303, length under 17 (a tag and the content type),
	 * or not the length the caller gave */
	SP_RL_ERR_DECODE = 1,
	/* bad_record_mac: AEAD authentication failed */
	SP_RL_ERR_DECRYPT,
	/* unexpected_message: outer type not application_data (a change_cipher_spec after the
	 * handshake included), all-zero inner plaintext, an inner type other than
	 * alert/handshake/application_data, an empty alert or handshake record */
	SP_RL_ERR_UNEXPECTED,
	/* record_overflow: TLSCiphertext longer than 2^14 + 256, or TLSInnerPlaintext longer than
	 * 2^14 + 1 */
	SP_RL_ERR_OVERFLOW,
	/* internal_error: bad arguments, unknown suite, sequence number exhausted, or an OpenSSL
	 * failure */
	SP_RL_ERR_INTERNAL,
};

/* Per worker thread: one EVP_CIPHER_CTX, the fetched EVP_CIPHERs (AES-128-GCM, AES-256-GCM,
 * ChaCha20-Poly1305), EVP_MDs (SHA-256, SHA-384) and the HKDF EVP_KDF with one EVP_KDF_CTX.
 * Everything is fetched explicitly once, so per-record calls do no implicit fetch. */
typedef struct sp_rl_crypto sp_rl_crypto_t;

/* Fetches the algorithms and makes the contexts (default library context and properties).
 * Returns NULL on failure (out of memory, algorithm not available). */
sp_rl_crypto_t *sp_rl_crypto_new(void);
/* Frees it; accepts NULL. The sp_rl_t states made with it stay valid for another one. */
void sp_rl_crypto_free(sp_rl_crypto_t *cx);

/* One direction: current traffic secret (kept for KeyUpdate), its key and IV, and the
 * sequence number of the next record. */
typedef struct sp_rl_dir {
	uint8_t secret[48];
	uint8_t key[32];
	uint8_t iv[12];
	uint64_t seq;
} sp_rl_dir_t;

/* The record layer state of one connection (216 bytes, plain data, lives inside the
 * connection; no pointers, so it may be copied or moved). suite 0 means unusable. */
typedef struct sp_rl {
	uint16_t suite;
	uint8_t hash_len;
	uint8_t key_len;
	sp_rl_dir_t rd, wr;
} sp_rl_t;

/* Server side: rd from the client application traffic secret, wr from the server's; seqs as
 * given. suite is the TLS 1.3 cipher suite id (0x1301 TLS_AES_128_GCM_SHA256, 0x1302
 * TLS_AES_256_GCM_SHA384, 0x1303 TLS_CHACHA20_POLY1305_SHA256); secret_len must be the
 * suite's hash length (32 or 48). Derives key and iv with HKDF-Expand-Label (RFC 8446 7.1,
 * 7.3). Returns 0, or -SP_RL_ERR_INTERNAL (unknown suite, bad secret length, OpenSSL failure),
 * in which case *rl is wiped. The caller keeps ownership of the secrets (wipe them). */
int sp_rl_init(sp_rl_t *rl, sp_rl_crypto_t *cx, uint16_t suite, const uint8_t *client_secret,
               const uint8_t *server_secret, size_t secret_len, uint64_t rd_seq, uint64_t wr_seq);

/* Length of the record starting at p (header + body), from its 5-byte header: returns the
 * total (22 to SP_RL_MAX_RECORD), 0 if fewer than 5 bytes are there (len may be 0 with p
 * NULL), or an error: -SP_RL_ERR_UNEXPECTED if the outer type is not application_data (23;
 * TLS 1.3 protected records are always 23, so this refuses a change_cipher_spec (20),
 * handshake (22) or alert (21) record after the handshake), -SP_RL_ERR_DECODE if the legacy
 * version is not 0x0303 or the length is under 17 (a tag and the content type),
 * -SP_RL_ERR_OVERFLOW if the length is over SP_RL_MAX_CIPHER. Checks in that order. Pure. */
int sp_rl_record_len(const uint8_t *p, size_t len);

/* Decrypts one complete record (rec_len must be what sp_rl_record_len() returned for it) in
 * place. On success returns the content length (0 to SP_RL_MAX_PLAIN), sets *type to the
 * inner content type (21, 22 or 23) and *plain to the content start (rec + SP_RL_HEADER),
 * and advances rd.seq. The zero padding is stripped (RFC 8446 5.4: the inner type is the last
 * non-zero byte). Errors: the sp_rl_record_len() errors, -SP_RL_ERR_DECODE if rec_len is not
 * the header's length, -SP_RL_ERR_OVERFLOW if the inner plaintext would be over 2^14 + 1
 * bytes (checked before decrypting: it is body length - 16), -SP_RL_ERR_DECRYPT (tag; rd.seq
 * is not advanced and the body is zeroed), -SP_RL_ERR_UNEXPECTED (all-zero inner plaintext,
 * other inner type, empty alert or handshake content), -SP_RL_ERR_INTERNAL (rd.seq exhausted:
 * it never wraps; unusable state). On any error the content of rec is undefined. */
int sp_rl_open(sp_rl_t *rl, sp_rl_crypto_t *cx, uint8_t *rec, size_t rec_len, uint8_t *type,
               uint8_t **plain);

/* Encrypts len (<= SP_RL_MAX_PLAIN, may be 0) bytes of content type `type` (non-zero) into
 * one record at out (cap >= len + SP_RL_OVERHEAD), without padding. in may overlap out (in ==
 * out + SP_RL_HEADER seals in place). Returns the record size (len + SP_RL_OVERHEAD) and
 * advances wr.seq. Errors: -SP_RL_ERR_OVERFLOW (len too big), -SP_RL_ERR_INTERNAL (cap too
 * small, type 0, unusable state, wr.seq exhausted, OpenSSL failure); out is then undefined. */
int sp_rl_seal(sp_rl_t *rl, sp_rl_crypto_t *cx, uint8_t type, const uint8_t *in, size_t len,
               uint8_t *out, size_t cap);

/* KeyUpdate (RFC 8446 7.2) of one direction: secret = HKDF-Expand-Label(secret, "traffic upd",
 * "", Hash.length), new key and iv, seq = 0. Returns 0 or -SP_RL_ERR_INTERNAL (bad dir: *rl
 * is unchanged; OpenSSL failure: *rl is wiped). */
enum { SP_RL_READ, SP_RL_WRITE };
int sp_rl_update(sp_rl_t *rl, sp_rl_crypto_t *cx, int dir);

/* 1 when the write key has protected SP_RL_WRITE_UPDATE_AFTER records: send a KeyUpdate
 * (update_not_requested) and sp_rl_update(SP_RL_WRITE). Else 0. */
int sp_rl_write_needs_update(const sp_rl_t *rl);

/* Wipes keys, secrets and sequence numbers (OPENSSL_cleanse); suite 0 makes it unusable.
 * Accepts NULL. */
void sp_rl_wipe(sp_rl_t *rl);

#endif
