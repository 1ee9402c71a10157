/*
 * sp_seal: sealed envelopes (PROTOCOL.md section 13). A sender seals a payload to a recipient's
 * sealing key with HPKE (sp_hpke.h) and signs it, inside the seal, with its certificate key, so
 * the relay sees only the envelope's version, suite, HPKE encapsulation and size, and the
 * recipient learns who sent it, to whom, when, and that nobody changed, redirected or replayed
 * it.
 *
 * Who calls what:
 *  - A device loads its identity once: sp_sealer_load(cert, cert key, sealing key) (the sealing
 *    key file is made once with sp_seal_keygen_file()). Its contact card (sp_card.h) publishes
 *    its token and sealing public key.
 *  - To send: sp_seal(sealer, recipient peer (from the recipient's verified card), message) ->
 *    envelope bytes, the blob of one SEND to that one recipient with the same msg_id. A message
 *    to several recipients is one envelope and one SEND (own msg_id) per recipient.
 *  - On DELIVER: sp_seal_open(sealer, replay cache, DELIVER's msg_id, blob, now) -> the opened
 *    message or an error naming what was wrong. After the application has processed it:
 *    sp_seal_replay_add() (sp_seal_opened_remember() does it), then ACK. A DUPLICATE is ACKed
 *    again and dropped; every other error is ACKed and dropped too (the relay cannot do better
 *    with it), and counted.
 *  - If the opened message asks for a receipt: sp_seal_receipt() -> an envelope to the sender,
 *    sent like any message (the relay cannot tell it from one).
 *  - Suites: a device whose key file has an MLKEM768-X25519 seed (made by sp_seal_keygen_file()
 *    where the build has OpenSSL 3.5's ML-KEM) prefers suite 0x0101 and keeps its X25519 key;
 *    its card lists both (sp_card.h), and a sender seals with the first listed suite it
 *    implements (sp_card_parse() puts it in card.peer; sp_card_pick() chooses otherwise).
 *  - Rotation (13.11): a device's keys have epochs; sp_seal_keyring.h rotates, keeps and erases
 *    them and loads a sealer holding the current key and the earlier ones. sp_seal() names the
 *    recipient's epoch in the envelope (version 2) when its card has one (version 3);
 *    sp_seal_open() opens with the named key, or tries every key held for a version 1 envelope.
 *
 * A sealer is immutable after its setters have run and may then be shared by threads. Opened
 * messages and envelopes belong to the caller. Nothing here blocks except the functions that
 * read or write files.
 */
#ifndef SP_SEAL_H
#define SP_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "sp_bucket.h"
#include "sp_identity.h"
#include "sp_seal_replay.h"

/*
 * Envelope format versions (the first byte of every envelope, PROTOCOL.md 13.1): 1 names no key
 * (sealed to a card without a key epoch: the recipient tries the keys it holds), 2 names the
 * recipient's key epoch in its header (sealed to a card of version 3, 13.11). sp_seal() writes
 * 2 exactly when the recipient's peer data has an epoch (sp_seal_peer.epoch != 0); both open.
 */
#define SP_SEAL_VERSION       1
#define SP_SEAL_VERSION_EPOCH 2

/*
 * Suite registry (PROTOCOL.md 13.2): the u16 after the version byte. Each names an HPKE
 * (KEM, KDF, AEAD) triple. 0x0100 to 0x01FF are reserved for post-quantum hybrid KEMs; 0x0000
 * and 0xFF00 to 0xFFFF are never assigned. 0x0101 is implemented only in a build against
 * OpenSSL 3.5 or later (SP_HAVE_PQ_SEAL; sp_seal_suite_implemented() says at run time); every
 * build knows its name and sizes, to read cards and reply keys that name it.
 */
#define SP_SEAL_SUITE_X25519_CHACHA20POLY1305                                                      \
	0x0001                                /* DHKEM(X25519), HKDF-SHA256, ChaCha20Poly1305 */
#define SP_SEAL_SUITE_X25519_AES128GCM 0x0002 /* DHKEM(X25519), HKDF-SHA256, AES-128-GCM */
#define SP_SEAL_SUITE_MLKEM768_X25519_CHACHA20POLY1305                                             \
	0x0101 /* MLKEM768-X25519 (X-Wing, HPKE KEM 0x647A), HKDF-SHA256, ChaCha20Poly1305 */
#define SP_SEAL_SUITE_DEFAULT SP_SEAL_SUITE_X25519_CHACHA20POLY1305 /* of an X25519-only key */
#define SP_SEAL_SUITE_HYBRID  SP_SEAL_SUITE_MLKEM768_X25519_CHACHA20POLY1305

/*
 * Protocol maxima over every registered suite, implemented in this build or not, so that the
 * structs below have one size (one ABI) whatever OpenSSL the library was built against.
 */
#define SP_SEAL_MSG_ID_LEN 16
#define SP_SEAL_PUB_MAX    1216 /* largest sealing public key (Npk of 0x0101; 32 for 0x0001) */
#define SP_SEAL_ENC_MAX    1120 /* largest HPKE encapsulation (Nenc of 0x0101; 32 for 0x0001) */
#define SP_SEAL_HEADER_MAX (7 + SP_SEAL_ENC_MAX) /* version + suite + [key epoch] + enc */
/*
 * Padding buckets: with a padding block B > 1 every envelope is SP_SEAL_BUCKET_BASE + k * B
 * bytes long, whatever its suite (51 = the header of an X25519 suite, 35, and the tag, 16: the
 * content of those is padded to multiples of B; a hybrid envelope's content is padded so that
 * the envelope lands on the same sizes).
 */
#define SP_SEAL_BUCKET_BASE  SP_BUCKET_BASE /* sp_bucket.h, shared with the relay */
#define SP_SEAL_SPKI_MAX     512            /* largest sender SubjectPublicKeyInfo accepted */
#define SP_SEAL_OLD_KEYS_MAX 64 /* earlier sealing keys (rotated out) a sealer holds at most */

/* Defaults of the sealer's settings (each has a setter). */
#define SP_SEAL_SKEW_DEFAULT_MS      (5u * 60 * 1000)        /* clock skew allowed, each way */
#define SP_SEAL_PAD_DEFAULT          SP_BUCKET_BLOCK_DEFAULT /* the envelope on buckets of this */
#define SP_SEAL_MAX_ENVELOPE_DEFAULT (16u * 1024 * 1024)     /* the protocol's largest blob */

/* Inner flags (signed; unknown bits are refused as malformed). */
#define SP_SEAL_F_RECEIPT_WANTED                                                                   \
	0x01                      /* the sender asks for a receipt; needs SP_SEAL_F_REPLY_KEY      \
	                           */
#define SP_SEAL_F_IS_RECEIPT 0x02 /* the payload is a receipt (sp_seal_receipt_parse) */
#define SP_SEAL_F_REPLY_KEY  0x04 /* the sender's sealing key and suite are inside */
#define SP_SEAL_F_REPLY_ACCESS                                                                     \
	0x08 /* with REPLY_KEY: an access key of the sender's is inside too (17.6), so that the    \
	        recipient can answer through the anonymous door; sp_seal_msg.reply_access */
#define SP_SEAL_F_ALL      0x0f
#define SP_SEAL_ACCESS_LEN 32 /* an access key (PROTOCOL.md 17) */

/* Receipt statuses (the last byte of a receipt's payload). */
#define SP_SEAL_RECEIPT_RECEIVED 0x01 /* opened and accepted by the recipient's library */
#define SP_SEAL_RECEIPT_READ     0x02 /* shown to the user (the application says so) */

/*
 * Errors. Functions return 0, one of these, or a negative errno (-EINVAL bad argument, -ENOMEM,
 * -errno from file I/O). sp_seal_strerror() names either kind.
 */
enum sp_seal_err {
	SP_SEAL_ERR_MALFORMED = -2001,      /* the envelope or its sealed content is badly formed */
	SP_SEAL_ERR_VERSION = -2002,        /* unknown envelope or card version */
	SP_SEAL_ERR_SUITE = -2003,          /* unknown or unsupported suite */
	SP_SEAL_ERR_TOO_LARGE = -2004,      /* envelope above the sealer's max_envelope */
	SP_SEAL_ERR_DECRYPT = -2005,        /* not sealed to this key, or changed on the way */
	SP_SEAL_ERR_RECIPIENT = -2006,      /* sealed to another token (misdirected) */
	SP_SEAL_ERR_SENDER_KEY = -2007,     /* the sender's key is not a canonical P-256 SPKI */
	SP_SEAL_ERR_SIGNATURE = -2008,      /* the sender's signature does not hold */
	SP_SEAL_ERR_STALE = -2009,          /* outside the replay window (too old) */
	SP_SEAL_ERR_FUTURE = -2010,         /* sent_at is ahead of the recipient's clock */
	SP_SEAL_ERR_DUPLICATE = -2011,      /* already accepted, window still open */
	SP_SEAL_ERR_NO_RECEIPT = -2012,     /* no receipt wanted, or the message is not a receipt */
	SP_SEAL_ERR_PEER_KEY = -2013,       /* the recipient's sealing key is unusable */
	SP_SEAL_ERR_CARD_MALFORMED = -2014, /* card JSON or a field of it is malformed */
	SP_SEAL_ERR_CARD_TOKEN = -2015,     /* card token is not SHA-256 of its key */
	SP_SEAL_ERR_CARD_SIGNATURE = -2016, /* card signature does not hold */
	SP_SEAL_ERR_KEY_FILE = -2017,       /* a key or certificate file cannot be read or parsed */
	SP_SEAL_ERR_KEY_PERMS = -2018,    /* the sealing key file is readable by group or others */
	SP_SEAL_ERR_KEY_MISMATCH = -2019, /* certificate and key do not belong together */
	SP_SEAL_ERR_KEY_TYPE = -2020, /* a key of the wrong type (not P-256, not a sealing key) */
	SP_SEAL_ERR_REPLAY_FILE = -2021, /* a replay cache file is not one, or is damaged */
	SP_SEAL_ERR_CRYPTO = -2022,      /* OpenSSL failed unexpectedly */
	SP_SEAL_ERR_KEY_ERASED = -2023,  /* sealed to an earlier key epoch, erased since (13.11) */
	SP_SEAL_ERR_KEY_EPOCH = -2024,   /* sealed to a key epoch newer than the sealer's own */
	SP_SEAL_ERR_CARD_STALE = -2025,  /* a card older than one already seen for its token */
};

/* A short English text for a code of this module or a negative errno. Never NULL. */
const char *sp_seal_strerror(int err);

/*
 * What it takes to seal to someone: their token and sealing key (from a card or a message), and
 * the epoch of that key (13.11; 0: the card or reply key named none, the envelope is version 1).
 */
struct sp_seal_peer {
	uint8_t token[SP_TOKEN_LEN];
	uint16_t suite;
	size_t pub_len;
	uint8_t pub[SP_SEAL_PUB_MAX];
	uint32_t epoch;
};

/*
 * Facts about a registered suite id: its HPKE length of enc (Nenc) and public key (Npk), and
 * its name in contact cards. Returns 0 for every suite of PROTOCOL.md 13.2, including one this
 * build does not implement (sp_seal_suite_implemented), or SP_SEAL_ERR_SUITE for an id not
 * registered. Any out pointer may be NULL.
 */
int sp_seal_suite_info(uint16_t suite, size_t *enc_len, size_t *pub_len, const char **name);

/* 1 if this build seals and opens the suite (0x0101 needs OpenSSL 3.5 or later), else 0. */
int sp_seal_suite_implemented(uint16_t suite);

/* The suite id of a card name ("X25519-SHA256-ChaCha20Poly1305", ...), or 0 if unknown. */
uint16_t sp_seal_suite_by_name(const char *name);

struct sp_sealer;

/*
 * Sealing key files (PROTOCOL.md 13.10). Two formats load:
 *  - v1, "-----BEGIN PRIVATE KEY-----": an X25519 private key in PKCS#8 (what every build
 *    before the hybrid suite wrote, and what a build without it still writes);
 *  - v2, "-----BEGIN SEALPUSH SEALING KEY-----": base64 of version (1) = 1 || count (1) ||
 *    count x (HPKE KEM id (2) || length (2) || private key), with exactly one X25519 key
 *    (KEM 0x0020, its 32-byte scalar) and at most one MLKEM768-X25519 key (KEM 0x647A, its
 *    32-byte X-Wing seed); entries of other KEM ids are skipped. A build without the hybrid
 *    suite loads such a file with its X25519 key alone.
 *
 * Makes a new sealing key and writes it to path, created with mode 0600; refuses to overwrite
 * (-EEXIST). With the hybrid suite in this build (sp_seal_suite_implemented(0x0101)): a v2
 * file with an X25519 key and an X-Wing seed; otherwise a v1 file. Blocks on disk I/O.
 * Returns 0, -errno, SP_SEAL_ERR_CRYPTO.
 */
int sp_seal_keygen_file(const char *path);

/* The same, choosing: hybrid != 0 makes a v2 file with both keys (SP_SEAL_ERR_SUITE in a build
 * without the hybrid suite), 0 a v1 file (X25519 alone). */
int sp_seal_keygen_file_ex(const char *path, int hybrid);

/*
 * Loads a device's identity: its certificate (PEM; NULL to run with the key alone), the
 * certificate's private key (PEM, P-256) and its sealing key file (any format of
 * sp_seal_key_file_read(), mode 0600 or stricter; with an X-Wing seed that this build can use,
 * the sealer gets the hybrid key as by sp_sealer_set_hybrid_key(); a file with an epoch sets
 * the sealer's epoch). Checks that the certificate certifies the key. Blocks on disk
 * I/O. Returns 0 and *out (free with sp_sealer_free), SP_SEAL_ERR_KEY_FILE, _KEY_PERMS,
 * _KEY_MISMATCH, _KEY_TYPE, -ENOMEM.
 */
int sp_sealer_load(const char *cert_path, const char *key_path, const char *seal_key_path,
                   struct sp_sealer **out);

/*
 * The same from keys in memory: sign_key (P-256 private key), cert (may be NULL), seal_key
 * (X25519 private key). Takes its own references; the caller keeps its own. Returns as
 * sp_sealer_load(), without the file errors.
 */
int sp_sealer_new(EVP_PKEY *sign_key, X509 *cert, EVP_PKEY *seal_key, struct sp_sealer **out);

/*
 * Gives the sealer its MLKEM768-X25519 sealing key (the 32-byte X-Wing seed, copied) beside its
 * X25519 key, and makes the hybrid suite its preferred one (sp_sealer_set_suite). Returns 0,
 * -EINVAL (seed_len not 32), SP_SEAL_ERR_SUITE (no hybrid suite in this build),
 * SP_SEAL_ERR_CRYPTO.
 */
int sp_sealer_set_hybrid_key(struct sp_sealer *s, const uint8_t *seed, size_t seed_len);

/* 1 if the sealer holds an MLKEM768-X25519 key (it opens suite 0x0101), else 0. */
int sp_sealer_has_hybrid_key(const struct sp_sealer *s);

/*
 * Key epochs (PROTOCOL.md 13.11). A sealer has one current sealing key, of epoch
 * sp_sealer_epoch() (0 for the key `sealpush init` made, 1, 2, ... for each rotation), which
 * its card announces and its reply keys carry, and up to SP_SEAL_OLD_KEYS_MAX earlier keys that
 * it still opens envelopes with (a rotated device keeps them for a grace period, then erases
 * them: sp_seal_keyring.h). An envelope of version 2 names the epoch it was sealed to:
 * sp_seal_open() takes that key, and refuses an epoch below the current one that the sealer
 * does not hold as SP_SEAL_ERR_KEY_ERASED, one above it as SP_SEAL_ERR_KEY_EPOCH. A version 1
 * envelope names none: it is tried with the current key, then the earlier ones, newest first.
 */

/* The contents of a sealing key file (13.10), private key bytes included: wipe it with
 * sp_seal_key_file_clear(). */
struct sp_seal_key_file {
	int format;         /* 1 PEM PKCS#8 (X25519); 2 v2 body version 1; 3 v2 body version 2 */
	uint32_t epoch;     /* the key epoch (0 in formats 1 and 2) */
	int64_t created_at; /* Unix seconds (format 3); formats 1 and 2: the file's mtime */
	uint8_t x25519[32]; /* the X25519 private key */
	int has_seed;       /* an MLKEM768-X25519 seed follows */
	uint8_t seed[32];
};

/*
 * Parses the base64-decoded body of a "SEALPUSH SEALING KEY" file (body versions 1 and 2,
 * 13.10) into *out (format 2 or 3; created_at 0 for version 1). Pure: no I/O. Returns 0 or
 * SP_SEAL_ERR_KEY_FILE (out wiped).
 */
int sp_seal_key_body_parse(const uint8_t *body, size_t len, struct sp_seal_key_file *out);

/* Reads a sealing key file of any format (mode 0600 or stricter). Returns 0, SP_SEAL_ERR_KEY_FILE,
 * SP_SEAL_ERR_KEY_PERMS, -ENOMEM. Blocks on disk I/O. */
int sp_seal_key_file_read(const char *path, struct sp_seal_key_file *out);

/*
 * Makes a new sealing key of the given epoch (>= 1), created at created_at, and writes it to
 * path as a v2 file of body version 2 (mode 0600, never over an existing file: -EEXIST; written
 * and fsync'ed before it returns). hybrid: with an X-Wing seed (SP_SEAL_ERR_SUITE in a build
 * without the hybrid suite). Returns 0, -errno, -EINVAL, SP_SEAL_ERR_CRYPTO.
 */
int sp_seal_keygen_file_epoch(const char *path, int hybrid, uint32_t epoch, int64_t created_at);

/* Wipes the private key bytes of *k. Accepts NULL. */
void sp_seal_key_file_clear(struct sp_seal_key_file *k);

/* Sets the epoch of the sealer's current key (what its cards and reply keys carry). Must be
 * above every earlier key it holds (-EINVAL otherwise). */
int sp_sealer_set_epoch(struct sp_sealer *s, uint32_t epoch);

/* The epoch of the sealer's current key. */
uint32_t sp_sealer_epoch(const struct sp_sealer *s);

/*
 * Gives the sealer an earlier key (epoch below the current one, not held yet) to open envelopes
 * sealed to it; its X-Wing seed is used if this build has the hybrid suite. Returns 0, -EINVAL
 * (epoch not below the current, or held already), -ENOSPC (SP_SEAL_OLD_KEYS_MAX held),
 * SP_SEAL_ERR_CRYPTO, -ENOMEM.
 */
int sp_sealer_add_old_key(struct sp_sealer *s, const struct sp_seal_key_file *k);

/* How many earlier keys the sealer holds. */
size_t sp_sealer_old_keys(const struct sp_sealer *s);

/* Frees a sealer and wipes its keys. Accepts NULL. */
void sp_sealer_free(struct sp_sealer *s);

/* The sealer's own token (32 bytes, owned by the sealer). */
const uint8_t *sp_sealer_token(const struct sp_sealer *s);

/* The sealer's own peer data (token, preferred suite, sealing public key). */
void sp_sealer_peer(const struct sp_sealer *s, struct sp_seal_peer *out);

/*
 * The sealer's own peer data for a given suite (the public key of that suite's KEM). Returns 0,
 * or SP_SEAL_ERR_SUITE if the sealer has no key for it (or the build does not implement it).
 */
int sp_sealer_peer_suite(const struct sp_sealer *s, uint16_t suite, struct sp_seal_peer *out);

/*
 * The suites the sealer announces in its card, in order of preference, into out (up to max):
 * the preferred suite, then, if the sealer holds a key of the other KEM, that KEM's suite
 * (a hybrid device keeps X25519 for senders without ML-KEM). Returns how many (1 or 2).
 */
size_t sp_sealer_suites(const struct sp_sealer *s, uint16_t *out, size_t max);

/*
 * The sealer's own DER SubjectPublicKeyInfo and certificate (NULL if loaded without one);
 * owned by the sealer. For contact cards.
 */
const uint8_t *sp_sealer_spki(const struct sp_sealer *s, size_t *len);
X509 *sp_sealer_cert(const struct sp_sealer *s);

/*
 * Signs len bytes of data with the certificate key (ECDSA P-256, SHA-256, DER signature of at
 * most 72 bytes into sig, *sig_len set). For contact cards. Returns 0 or SP_SEAL_ERR_CRYPTO.
 */
int sp_sealer_sign(const struct sp_sealer *s, const uint8_t *data, size_t len, uint8_t sig[80],
                   size_t *sig_len);

/*
 * Parses a DER SubjectPublicKeyInfo that must be a P-256 key in its one canonical encoding (a
 * token is SHA-256 over these very bytes). Returns 0 and *out (the caller frees it), or
 * SP_SEAL_ERR_SENDER_KEY.
 */
int sp_seal_spki_key(const uint8_t *spki, size_t len, EVP_PKEY **out);

/* Settings. Call before sharing the sealer between threads. */
/*
 * The suite announced first in the sealer's card (default SP_SEAL_SUITE_HYBRID with a hybrid key,
 * else SP_SEAL_SUITE_DEFAULT); the sealer must hold a key for it (else SP_SEAL_ERR_SUITE). A
 * reply key inside an envelope is of the envelope's own suite when the sealer has a key for it
 * (the recipient implements that suite), else of this one.
 */
int sp_sealer_set_suite(struct sp_sealer *s, uint16_t suite);
/* The clock skew allowed each way, ms (default SP_SEAL_SKEW_DEFAULT_MS; at most one day). */
int sp_sealer_set_skew(struct sp_sealer *s, uint32_t skew_ms);
/* Pad the sealed content to a multiple of block bytes (1 = no padding; at most 65,536). */
int sp_sealer_set_pad(struct sp_sealer *s, uint32_t block);
/* The largest envelope sealed or opened (default 16 MiB; 1,024 to 1 GiB). */
int sp_sealer_set_max_envelope(struct sp_sealer *s, size_t max);

/*
 * The sender key cache. Opening checks the sender's SPKI and parses it into an OpenSSL key
 * (about 17 us with OpenSSL 3.0); the sealer keeps the parsed keys of up to entries senders
 * whose signature verified, keyed by token, so a repeat sender skips that step. Direct-mapped:
 * a sender's slot is fixed by its token, a new sender replaces the slot's key (counted as an
 * eviction), so the cache never holds more than entries keys (one parsed P-256 key each). A
 * mutex inside makes it safe for threads sharing the sealer. entries: 0 (no cache) to
 * SP_SEAL_KEY_CACHE_MAX; default SP_SEAL_KEY_CACHE_DEFAULT. Setting it empties the cache.
 * Returns 0, -EINVAL, -ENOMEM (the old cache is kept).
 */
#define SP_SEAL_KEY_CACHE_DEFAULT 256
#define SP_SEAL_KEY_CACHE_MAX     65536
int sp_sealer_set_key_cache(struct sp_sealer *s, size_t entries);

/*
 * The recipient key cache (suite 0x0101 only): sealing imports and checks the recipient's
 * ML-KEM-768 public key (about 20 us with OpenSSL 3.5); the sealer keeps the parsed keys of up
 * to entries recipients, direct-mapped by the key's own bytes and used only for an identical
 * key, so that sealing to a recipient again skips the import. Each entry holds one parsed
 * ML-KEM-768 public key (a few KiB). 0 (no cache) to SP_SEAL_PEER_CACHE_MAX; default
 * SP_SEAL_PEER_CACHE_DEFAULT; nothing in a build without the hybrid suite. Setting it empties
 * the cache. Returns 0, -EINVAL, -ENOMEM (the old cache is kept). Its counters:
 * sp_sealer_peer_cache_stats().
 */
#define SP_SEAL_PEER_CACHE_DEFAULT 16
#define SP_SEAL_PEER_CACHE_MAX     4096
int sp_sealer_set_peer_cache(struct sp_sealer *s, size_t entries);

/* Counters of the sender key cache, for metrics (all zero without a cache). */
struct sp_seal_key_cache_stats {
	size_t entries;     /* keys held now */
	size_t limit;       /* most keys held (the setting) */
	uint64_t hits;      /* opens that found the sender's key parsed */
	uint64_t misses;    /* opens that parsed it */
	uint64_t evictions; /* keys replaced by another sender's */
};
void sp_sealer_key_cache_stats(const struct sp_sealer *s, struct sp_seal_key_cache_stats *out);
/* The same for the recipient key cache ("senders" read "recipients"). */
void sp_sealer_peer_cache_stats(const struct sp_sealer *s, struct sp_seal_key_cache_stats *out);

/*
 * The largest payload that sp_seal() always fits into max_blob bytes in an envelope of the
 * sealer's preferred suite, with its padding and signature (at its longest), with
 * (reply_key != 0; counting a reply access key too) or without a reply key. 0 if not even an
 * empty payload fits.
 */
size_t sp_seal_max_payload(const struct sp_sealer *s, size_t max_blob, int reply_key);

/* The same for envelopes of the given suite (0 for a suite this build does not implement). */
size_t sp_seal_max_payload_suite(const struct sp_sealer *s, uint16_t suite, size_t max_blob,
                                 int reply_key);

/* A message to seal. */
struct sp_seal_msg {
	const uint8_t *msg_id; /* 16 bytes: the SEND's msg_id (random per message and recipient) */
	uint64_t sent_at_ms;   /* the sender's wall clock, ms since the Unix epoch */
	uint32_t ttl;          /* the SEND's ttl, seconds; 0: ephemeral, never stored */
	uint8_t flags;         /* SP_SEAL_F_RECEIPT_WANTED (adds the reply key by itself),
	                          SP_SEAL_F_REPLY_KEY, SP_SEAL_F_REPLY_ACCESS (needs a reply key and
	                          reply_access); IS_RECEIPT is set by sp_seal_receipt() */
	const uint8_t *payload;
	size_t payload_len;
	const uint8_t *reply_access; /* SP_SEAL_ACCESS_LEN bytes with SP_SEAL_F_REPLY_ACCESS */
};

/*
 * Seals m to the peer: encrypts to to->pub with to->suite, binds the envelope to to->token and
 * m->msg_id, signs it with the certificate key. *env (malloc'd, the caller frees it) and
 * *env_len get the envelope, the blob of the SEND. Returns 0, -EINVAL (bad argument or flags),
 * SP_SEAL_ERR_SUITE, SP_SEAL_ERR_PEER_KEY, SP_SEAL_ERR_TOO_LARGE, SP_SEAL_ERR_CRYPTO, -ENOMEM.
 */
int sp_seal(const struct sp_sealer *s, const struct sp_seal_peer *to, const struct sp_seal_msg *m,
            uint8_t **env, size_t *env_len);

/* A message that sp_seal_open() accepted. */
struct sp_seal_opened {
	uint8_t sender[SP_TOKEN_LEN]; /* SHA-256 of sender_spki: who sent it */
	const uint8_t *sender_spki;   /* DER SubjectPublicKeyInfo of the sender's key */
	size_t sender_spki_len;
	uint8_t msg_id[SP_SEAL_MSG_ID_LEN];
	uint16_t suite; /* the envelope's suite */
	uint8_t flags;
	uint64_t sent_at_ms;
	uint32_t ttl;
	uint64_t window_end_ms; /* until when a copy is a duplicate (13.6) */
	const uint8_t *payload; /* points into the opened message's own buffer */
	size_t payload_len;
	int has_reply; /* reply is the sender's sealing key (REPLY_KEY flag) */
	struct sp_seal_peer reply;
	int has_reply_access; /* reply_access is an access key of the sender's (REPLY_ACCESS) */
	uint8_t reply_access[SP_SEAL_ACCESS_LEN];
	uint8_t *buf; /* owns sender_spki and payload */
	size_t buf_len;
	uint8_t version;    /* the envelope's version (1 or 2) */
	uint32_t key_epoch; /* the epoch of this sealer's key that opened it */
};

/*
 * Opens an envelope delivered to this sealer with the DELIVER's msg_id, at the recipient's
 * wall clock now_ms, checks it in this order and returns the first failure:
 * SP_SEAL_ERR_TOO_LARGE, _MALFORMED / _VERSION / _SUITE (header), _DECRYPT (not for this key,
 * or any byte of the envelope or the msg_id changed), _MALFORMED (content), _RECIPIENT,
 * _SENDER_KEY, _SIGNATURE, _FUTURE, _STALE, and, with a replay cache, _STALE (below its floor)
 * and _DUPLICATE. replay may be NULL (no duplicate check; for tools). On success fills *out
 * (release with sp_seal_opened_clear) and returns 0; on failure *out is cleared.
 */
int sp_seal_open(const struct sp_sealer *s, struct sp_seal_replay *replay,
                 const uint8_t msg_id[SP_SEAL_MSG_ID_LEN], const uint8_t *env, size_t env_len,
                 uint64_t now_ms, struct sp_seal_opened *out);

/* Records an accepted message in the replay cache (sp_seal_replay_add with its fields). */
int sp_seal_opened_remember(struct sp_seal_replay *replay, const struct sp_seal_opened *m,
                            uint64_t now_ms);

/* Frees what an opened message owns and zeroes it. Accepts NULL and cleared messages. */
void sp_seal_opened_clear(struct sp_seal_opened *m);

/*
 * Seals a receipt for an opened message that asked for one (SP_SEAL_F_RECEIPT_WANTED): payload
 * = the original msg_id and status, flag IS_RECEIPT, sealed to the sender's token and reply
 * key. receipt_msg_id is a fresh random id for the receipt's own SEND (never the original's);
 * ttl its SEND's ttl. Returns as sp_seal(), and SP_SEAL_ERR_NO_RECEIPT if none was asked for.
 */
int sp_seal_receipt(const struct sp_sealer *s, const struct sp_seal_opened *orig, uint8_t status,
                    const uint8_t receipt_msg_id[SP_SEAL_MSG_ID_LEN], uint64_t sent_at_ms,
                    uint32_t ttl, uint8_t **env, size_t *env_len);

/*
 * Reads an opened receipt: the msg_id it acknowledges and its status. Returns 0, or
 * SP_SEAL_ERR_NO_RECEIPT (not a receipt), SP_SEAL_ERR_MALFORMED (wrong payload length).
 */
int sp_seal_receipt_parse(const struct sp_seal_opened *m, uint8_t msg_id[SP_SEAL_MSG_ID_LEN],
                          uint8_t *status);

#endif
