/*
 * sp_frame: the sealpush v1 wire codec (proto/PROTOCOL.md is the normative text).
 *
 * A frame is a 6-byte header (type u8, flags u8, body length u32 big-endian) and a body of
 * fields, each: id u8, length (1, 2 or 4-byte varint, shortest form), value. The codec is
 * pure: bytes in, frames out, no I/O, no globals, nothing but libc.
 *
 * Decoding is zero-copy: a decoded sp_frame_t points into the bytes it was decoded from
 * (byte-string fields are pointer + length), so those bytes must outlive the frame view.
 *
 * Three ways in:
 *   sp_header_decode()  peek at a header (the server does this on its socket buffer and
 *                       refuses an oversized frame before its body has arrived);
 *   sp_frame_decode()   one frame from a contiguous buffer that may hold less than a frame;
 *   sp_decoder_feed()   a byte stream in pieces of any size, down to one byte at a time;
 *                       the decoder owns a body buffer, allocated only once the header has
 *                       been checked against max_frame, and exactly as large as the body.
 * and one way out: sp_frame_encode(), which refuses to write a frame the decoder would reject.
 *
 * Return values: decoders return 1 (a frame), 0 (need more bytes) or a negative error
 * -SP_ERR_*; the positive SP_ERR_* values are the wire error codes of PROTOCOL.md, so an error
 * can be sent to the peer as it is. sp_error_is_fatal() says whether the connection must close.
 */
#ifndef SP_FRAME_H
#define SP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define SP_ALPN               "sealpush/1"
#define SP_VERSION_1          1
#define SP_HEADER_LEN         6
#define SP_MSG_ID_LEN         16
#define SP_TOKEN_LEN          32
#define SP_PING_LEN           8
#define SP_RESULT_LEN         3 /* one SEND_RESULT entry: recipient index u16, status u8 */
#define SP_COLLAPSE_MAX       64
#define SP_REASON_MAX         256
#define SP_AGENT_MAX          64
#define SP_MAX_FRAME_V1       (1u << 24) /* no v1 frame body is larger, whatever is negotiated */
#define SP_MIN_MAX_FRAME      4096       /* a negotiated max_frame is never smaller */
#define SP_PREHELLO_MAX_FRAME 1024       /* frames a server accepts before WELCOME */
#define SP_MAX_RECIPIENTS_V1  65535      /* recipient indexes are u16 */

enum sp_frame_type {
	SP_HELLO = 0x01,
	SP_WELCOME = 0x02,
	SP_SEND = 0x03,
	SP_SEND_RESULT = 0x04,
	SP_DELIVER = 0x05,
	SP_ACK = 0x06,
	SP_PING = 0x07,
	SP_PONG = 0x08,
	SP_GOAWAY = 0x09,
	SP_ERROR = 0x0A,
	SP_SUBSCRIBE = 0x0B,    /* C to S: Web Push subscriptions (PROTOCOL.md 14.5) */
	SP_SUBSCRIPTION = 0x0C, /* S to C: the answer */
	SP_DIR_PUBLISH = 0x0D,  /* C to S: publish a user card in the key directory (15.6) */
	SP_DIR_LOOKUP = 0x0E,   /* C to S: a card by handle or token, or the log's head */
	SP_DIR_ANSWER = 0x0F,   /* S to C: the answer to either, with proofs */
	/* 0x10: reserved */
	SP_RENEW = 0x11,        /* C to S: a new certificate for this device (PROTOCOL.md 16.4) */
	SP_RENEWED = 0x12,      /* S to C: the answer */
	SP_ACCESS_SET = 0x13,   /* C to S: the device's anonymous-delivery verifiers (17.4) */
	SP_ACCESS_STATE = 0x14, /* S to C: the answer */
	                        /* 0x15: reserved (sealed sender, issue 17) */
};
#define SP_FRAME_TYPE_MAX 0x14

/* Frame flags (per type). The codec clears the bits v1 does not define for a type, both when
 * decoding (receivers ignore them) and when encoding (senders send them as zero). */
#define SP_HELLO_SEND_ONLY    0x01 /* HELLO: this connection only sends; it takes no deliveries */
#define SP_DELIVER_STORED     0x01 /* DELIVER: the message was queued while the device was away */
#define SP_ERROR_CLOSING      0x01 /* ERROR: the sender closes the connection after this frame */
#define SP_SUBSCRIBE_REMOVE   0x01 /* SUBSCRIBE: remove the subscription sub_id */
#define SP_SUBSCRIBE_LIST     0x02 /* SUBSCRIBE: list the device's subscriptions */
#define SP_DIR_LOOKUP_HEAD    0x01 /* DIR_LOOKUP: only the head (and a consistency proof) */
#define SP_DIR_LOOKUP_HISTORY 0x02 /* DIR_LOOKUP: an entry of the requester's own handle */

/* WELCOME capabilities bits. */
#define SP_CAP_WEBPUSH    0x01 /* the relay has a Web Push door: SUBSCRIBE is understood */
#define SP_CAP_DIRECTORY  0x02 /* the relay has a key directory: DIR_PUBLISH, DIR_LOOKUP */
#define SP_CAP_RENEW      0x04 /* the relay renews certificates: RENEW is understood (16.4) */
#define SP_CAP_ANONYMOUS  0x08 /* the relay has an anonymous door: ACCESS_SET is understood (17) */

#define SP_ACCESS_KEY_LEN 32 /* an access key, and its verifier (SHA-256 of the key) */
#define SP_ACCESS_SET_MAX 16 /* verifiers one ACCESS_SET carries at most */
/* ACCESS_SET anon_mode values (PROTOCOL.md 17.4). */
enum { SP_ANON_REFUSE = 0, SP_ANON_KEY_HOLDERS = 1, SP_ANON_ANYONE = 2 };

#define SP_CSR_MAX        2048  /* RENEW csr: DER bytes */
#define SP_CHAIN_MAX      16384 /* RENEWED cert_chain: PEM bytes */

#define SP_APP_KEY_LEN    65 /* an application server key: an uncompressed P-256 point */
#define SP_SUB_ID_LEN     16
#define SP_ENDPOINT_MAX   512

#define SP_DIR_CARD_MAX   65536                  /* a user card's JSON text */
#define SP_DIR_ENTRY_MAX  (SP_DIR_CARD_MAX + 90) /* a log entry: label, handle, card */
#define SP_DIR_HANDLE_MAX 64
#define SP_DIR_U64_LEN    8  /* tree_size, leaf_index: u64 big-endian as 8 bytes */
#define SP_DIR_HEAD_MIN   50 /* a signed tree head: 50 bytes and its signature */
#define SP_DIR_HEAD_MAX   256
#define SP_DIR_PROOF_MAX  2049 /* a proof: count u8 and at most 64 hashes */

/* Field ids. 0x80..0xFF are "critical": a receiver that does not know one rejects the frame. */
enum sp_field_id {
	SP_F_MSG_ID = 0x01,
	SP_F_RECIPIENTS = 0x02,
	SP_F_TOKEN = 0x03,
	SP_F_TTL = 0x04,
	SP_F_PRIORITY = 0x05,
	SP_F_COLLAPSE_ID = 0x06,
	SP_F_BLOB = 0x07,
	SP_F_RESULTS = 0x08,
	SP_F_CODE = 0x09,
	SP_F_REASON = 0x0A,
	SP_F_VERSION = 0x0B,
	SP_F_CAPABILITIES = 0x0C,
	SP_F_KEEPALIVE = 0x0D,
	SP_F_WINDOW = 0x0E,
	SP_F_MAX_FRAME = 0x0F,
	SP_F_MAX_BLOB = 0x10,
	SP_F_MAX_RECIPIENTS = 0x11,
	SP_F_KEEPALIVE_MIN = 0x12,
	SP_F_KEEPALIVE_MAX = 0x13,
	SP_F_SEND_WINDOW = 0x14,
	SP_F_RETRY_AFTER = 0x15,
	SP_F_DATA = 0x16,
	SP_F_MSG_IDS = 0x17,
	SP_F_FRAME_TYPE = 0x18,
	SP_F_RESUME_ID = 0x19,
	SP_F_AGENT = 0x1A,
	SP_F_SUB_ID = 0x1B,
	SP_F_APP_KEY = 0x1C,
	SP_F_ENDPOINT = 0x1D,
	SP_F_STATUS = 0x1E,
	SP_F_SUB_IDS = 0x1F,
	SP_F_DIR_CARD = 0x20,    /* DIR_PUBLISH: the user card (JSON) */
	SP_F_HANDLE = 0x21,      /* DIR_LOOKUP: the handle looked up */
	SP_F_TREE_SIZE = 0x22,   /* DIR_LOOKUP: the size of the last head the client holds */
	SP_F_DIR_ENTRY = 0x23,   /* DIR_ANSWER: the log entry (leaf bytes) */
	SP_F_LEAF_INDEX = 0x24,  /* DIR_ANSWER: its index in the log */
	SP_F_TREE_HEAD = 0x25,   /* DIR_ANSWER: the signed tree head */
	SP_F_INCLUSION = 0x26,   /* DIR_ANSWER: the entry's inclusion proof in that head */
	SP_F_CONSISTENCY = 0x27, /* DIR_ANSWER: consistency proof from tree_size to the head */
	SP_F_CSR = 0x28,         /* RENEW: a PKCS #10 CSR, DER */
	SP_F_CERT_CHAIN = 0x29,  /* RENEWED: PEM, the certificate then its CA's */
	SP_F_NOT_AFTER = 0x2A,   /* RENEWED: the certificate's notAfter, Unix seconds */
	SP_F_ANON_MODE = 0x30,   /* ACCESS_SET, ACCESS_STATE: who may send anonymously (17.4) */
	SP_F_ACCESS_VERIFIERS = 0x31, /* ACCESS_SET: SHA-256 of each access key */
	SP_F_ACCESS_KEYS = 0x32,      /* SEND, anonymous connection: one access key per recipient */
	SP_F_HIST_LEFT = 0x38, /* DIR_ANSWER (HISTORY): the handle's entries after this one */
};
#define SP_FIELD_ID_MAX   0x3F
#define SP_FIELD_CRITICAL 0x80
#define SP_BIT(id)        ((uint64_t)1 << (id))

/* Priorities, as in APNs. */
enum { SP_PRIORITY_LOW = 1, SP_PRIORITY_NORMAL = 5, SP_PRIORITY_HIGH = 10 };

/* Error codes carried by ERROR and GOAWAY frames; negated, the codec's error returns. */
enum sp_error_code {
	SP_ERR_MALFORMED_FRAME = 1,
	SP_ERR_FRAME_TOO_LARGE = 2,
	SP_ERR_UNKNOWN_FRAME_TYPE = 3,
	SP_ERR_UNEXPECTED_FRAME = 4,
	SP_ERR_MISSING_FIELD = 5,
	SP_ERR_BAD_FIELD = 6,
	SP_ERR_DUPLICATE_FIELD = 7,
	SP_ERR_UNSUPPORTED_FIELD = 8,
	SP_ERR_UNSUPPORTED_VERSION = 9,
	SP_ERR_HELLO_TIMEOUT = 10,
	SP_ERR_IDLE_TIMEOUT = 11,
	SP_ERR_SLOW_CONSUMER = 12,
	SP_ERR_TOO_MANY_ERRORS = 13,
	SP_ERR_INTERNAL_ERROR = 14,
	SP_ERR_SHUTDOWN = 15,
	SP_ERR_REPLACED = 16,
	SP_ERR_CERT_REVOKED = 17,
	/* 18, 19: reserved (the key directory, issue 16) */
	SP_ERR_RENEW_REFUSED = 20,     /* RENEW refused: the CSR, or too soon (non-fatal) */
	SP_ERR_RENEW_UNAVAILABLE = 21, /* RENEW cannot be served now: no usable CA (non-fatal) */
	SP_ERR_ANONYMOUS = 22,         /* a frame an anonymous connection may not send (17.3) */
	/* 23, 24: reserved (sealed sender, issue 17) */
	/* Local results, never sent on the wire. */
	SP_ERR_NOSPACE = 1000, /* sp_frame_encode: the buffer is too small */
	SP_ERR_NOMEM = 1001,   /* sp_decoder_feed: the body buffer could not be allocated */
};

/* Per-recipient statuses carried by SEND_RESULT. 0x00..0x0F accept, 0x10.. refuse. */
enum sp_status {
	SP_ST_DELIVERED = 0x00,
	SP_ST_QUEUED = 0x01,
	SP_ST_BAD_DEVICE_TOKEN = 0x10,
	SP_ST_PAYLOAD_TOO_LARGE = 0x11,
	SP_ST_TOO_MANY_RECIPIENTS = 0x12,
	SP_ST_TOO_MANY_REQUESTS = 0x13,
	SP_ST_QUOTA_EXCEEDED = 0x14,
	SP_ST_EXPIRED = 0x15,
	SP_ST_DEVICE_OFFLINE = 0x16,
	SP_ST_FORBIDDEN = 0x17,
	SP_ST_TRY_LATER = 0x18,
	SP_ST_SHUTDOWN = 0x19,
	SP_ST_INTERNAL_ERROR = 0x1A,
	SP_ST_ACCESS_DENIED = 0x1B, /* anonymous SEND: no valid access key for this recipient */
	SP_ST_BAD_SIZE = 0x1C,      /* the blob is not on a padding bucket (pad_block, 17.6) */
};
#define SP_STATUS_IS_ACCEPTED(s) ((s) < 0x10)

typedef struct sp_header {
	uint8_t type;
	uint8_t flags;
	uint32_t length; /* body length, not counting the header */
} sp_header_t;

/*
 * One frame, decoded or to be encoded: the union of every v1 field, with `fields` saying which
 * are present (bit SP_BIT(id)). Byte strings point at bytes owned by someone else.
 */
typedef struct sp_frame {
	uint8_t type;
	uint8_t flags;
	uint8_t err_field; /* after a decode or encode error: the field at fault, or 0 */
	uint64_t fields;

	const uint8_t *msg_id;     /* SP_MSG_ID_LEN bytes */
	const uint8_t *token;      /* SP_TOKEN_LEN bytes */
	const uint8_t *resume_id;  /* SP_MSG_ID_LEN bytes */
	const uint8_t *data;       /* SP_PING_LEN bytes */
	const uint8_t *recipients; /* n_recipients * SP_TOKEN_LEN bytes */
	const uint8_t *msg_ids;    /* n_msg_ids * SP_MSG_ID_LEN bytes */
	const uint8_t *results;    /* n_results * SP_RESULT_LEN bytes; see sp_result_get() */
	const uint8_t *blob;
	const uint8_t *collapse_id;
	const uint8_t *reason;
	const uint8_t *agent;
	const uint8_t *sub_id;   /* SP_SUB_ID_LEN bytes */
	const uint8_t *app_key;  /* SP_APP_KEY_LEN bytes */
	const uint8_t *endpoint; /* endpoint_len bytes, printable ASCII */
	const uint8_t *sub_ids;  /* n_sub_ids * SP_SUB_ID_LEN bytes */
	const uint8_t *dir_card; /* directory (15.6): byte strings, lengths below */
	const uint8_t *handle;
	const uint8_t *tree_size;  /* SP_DIR_U64_LEN bytes */
	const uint8_t *leaf_index; /* SP_DIR_U64_LEN bytes */
	const uint8_t *dir_entry;
	const uint8_t *tree_head;
	const uint8_t *inclusion;
	const uint8_t *consistency;
	uint32_t dir_card_len;
	uint32_t handle_len;
	uint32_t dir_entry_len;
	uint32_t tree_head_len;
	uint32_t inclusion_len;
	uint32_t consistency_len;
	const uint8_t *csr;        /* csr_len bytes */
	const uint8_t *cert_chain; /* cert_chain_len bytes, printable ASCII and newlines */
	uint32_t csr_len;
	uint32_t cert_chain_len;
	uint32_t not_after;              /* Unix seconds */
	const uint8_t *access_verifiers; /* n_access_verifiers * SP_ACCESS_KEY_LEN bytes */
	const uint8_t *access_keys;      /* n_access_keys * SP_ACCESS_KEY_LEN bytes */
	uint32_t n_access_verifiers;
	uint32_t n_access_keys;
	uint8_t anon_mode; /* SP_ANON_* */
	uint32_t hist_left;
	uint32_t endpoint_len;
	uint32_t n_sub_ids;
	uint32_t n_recipients;
	uint32_t n_msg_ids;
	uint32_t n_results;
	uint32_t blob_len;
	uint32_t collapse_id_len;
	uint32_t reason_len;
	uint32_t agent_len;

	uint32_t ttl; /* seconds */
	uint32_t capabilities;
	uint32_t max_frame;
	uint32_t max_blob;
	uint32_t retry_after; /* milliseconds */
	uint16_t version;
	uint16_t keepalive; /* seconds */
	uint16_t keepalive_min;
	uint16_t keepalive_max;
	uint16_t window;
	uint16_t send_window;
	uint16_t max_recipients;
	uint16_t code;
	uint8_t priority;
	uint8_t frame_type;
	uint8_t status; /* SUBSCRIPTION: a status of section 9.2 */
} sp_frame_t;

/* Names for logs, metrics and test vectors; "?" for a value v1 does not define. */
const char *sp_frame_type_name(unsigned type);
const char *sp_field_name(unsigned id);
const char *sp_error_name(unsigned code);
const char *sp_status_name(unsigned status);

/* Whether an error code obliges the receiver to close the connection after reporting it. */
int sp_error_is_fatal(unsigned code);

/*
 * Decode a header from p[0..len). Returns 1 and fills *h, 0 if len < SP_HEADER_LEN, or
 * -SP_ERR_FRAME_TOO_LARGE if the body length exceeds max_frame (or SP_MAX_FRAME_V1). A header
 * of an unknown type decodes: the body decoder reports the type, so the caller can skip it.
 */
int sp_header_decode(const uint8_t *p, size_t len, uint32_t max_frame, sp_header_t *h);

/*
 * Decode a body of h->length bytes into *f (cleared first; f->type and f->flags are always
 * set). Returns 1 or a negative error; f->err_field names the field at fault (for
 * MALFORMED_FRAME, the field being read when the body ran out, informational only). An
 * unknown frame type gives -SP_ERR_UNKNOWN_FRAME_TYPE, unknown non-critical fields are
 * skipped. SEND and DELIVER without a priority field get f->priority = 10 (the default),
 * without the field's bit being set in f->fields.
 */
int sp_body_decode(const sp_header_t *h, const uint8_t *body, sp_frame_t *f);

/*
 * Decode one frame from the start of p[0..len). Returns 1 with *used = frame size, 0 if more
 * bytes are needed (*used = 0), or a negative error. After a body error *used is the whole
 * frame size, so a caller that continues (UNKNOWN_FRAME_TYPE) can skip it; after
 * FRAME_TOO_LARGE *used is 0 and the stream cannot be resynchronised.
 */
int sp_frame_decode(const uint8_t *p, size_t len, uint32_t max_frame, sp_frame_t *f, size_t *used);

/* The i-th SEND_RESULT entry (i < f->n_results). */
void sp_result_get(const sp_frame_t *f, uint32_t i, uint16_t *index, uint8_t *status);
/* Writes one SEND_RESULT entry into dst[SP_RESULT_LEN]. */
void sp_result_put(uint8_t *dst, uint16_t index, uint8_t status);

/*
 * Encode *f into buf[0..cap). Returns 0 with *len = bytes written; -SP_ERR_NOSPACE with
 * *len = bytes needed (call with cap 0 to size a buffer); or -SP_ERR_MISSING_FIELD /
 * -SP_ERR_BAD_FIELD / -SP_ERR_UNKNOWN_FRAME_TYPE (f->err_field set) if the frame is not a
 * valid v1 frame, or -SP_ERR_FRAME_TOO_LARGE if its body would exceed SP_MAX_FRAME_V1.
 * Fields are written in ascending id order; only present fields are written.
 */
int sp_frame_encode(sp_frame_t *f, uint8_t *buf, size_t cap, size_t *len);

/*
 * Streaming decoder. Owns one body buffer, allocated after the header passed max_frame and
 * grown only to the body length; sp_decoder_release() frees it (call when idle). Frames of an
 * unknown type are skipped without buffering their body.
 */
typedef struct sp_decoder {
	uint32_t max_frame; /* the caller may change it between frames (e.g. after WELCOME) */
	uint8_t state;
	uint8_t hdr_have;
	uint8_t hdr[SP_HEADER_LEN];
	sp_header_t h;
	uint32_t body_have;
	uint32_t cap;
	uint8_t *buf;
	int err; /* sticky fatal error, 0 if none */
} sp_decoder_t;

void sp_decoder_init(sp_decoder_t *d, uint32_t max_frame);

/*
 * Consume bytes from in[0..len). Returns 1 when a frame is complete (*f points into the
 * decoder's buffer, valid until the next call), 0 when all input was consumed without
 * completing one, or a negative error. *used is always the number of bytes consumed; feed
 * the rest again. After a body error (including UNKNOWN_FRAME_TYPE) the decoder is positioned
 * at the next frame; after FRAME_TOO_LARGE or NOMEM it returns that error for ever.
 */
int sp_decoder_feed(sp_decoder_t *d, const uint8_t *in, size_t len, size_t *used, sp_frame_t *f);

/* Whether the decoder is between frames (no partial frame buffered). */
int sp_decoder_idle(const sp_decoder_t *d);

/* Frees the body buffer (the decoder stays usable). NULL-safe. */
void sp_decoder_release(sp_decoder_t *d);

/*
 * Writes a one-line description of a codec error for an ERROR reason or a log, e.g.
 * "SEND frame (type 0x03) has a field with a bad length or value: field priority (0x05)".
 * Returns dst.
 */
char *sp_frame_strerror(int err, const sp_frame_t *f, char *dst, size_t dstlen);

#endif
