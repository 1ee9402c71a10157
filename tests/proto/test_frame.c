/*
 * test_frame: the wire codec (proto/sp_frame.c) against proto/vectors/frames.json, the vectors
 * written by proto/vectors/gen_vectors.py, an independent implementation of PROTOCOL.md
 * sections 3 to 5; then the codec's API case by case.
 *
 * Every valid vector is one case: sp_frame_decode() gives exactly its fields, every proper
 * prefix needs more, canonical vectors re-encode to the same bytes, and the streaming decoder
 * gives the same frame whole, byte by byte and split in two at every offset. Every invalid
 * vector is one case: the exact error and field through sp_frame_decode() and through
 * sp_decoder_feed() (whole and byte by byte), and what the decoder does next.
 *
 * The tables below (field kinds, which fields each frame allows and requires, names) are
 * written from PROTOCOL.md, not taken from the codec, so they check it.
 */
#include "sp_frame.h"
#include "sp_test.h"

#include <jansson.h>
#include <limits.h>

#ifndef SP_VECTORS
#error "SP_VECTORS must name proto/vectors/frames.json"
#endif

/* ---- Tables from PROTOCOL.md ---------------------------------------------------------------- */

enum kind { K_INT, K_FIXED, K_VAR, K_ARRAY };

struct field_info {
	const char *name;
	uint8_t kind;
	uint8_t size; /* K_INT: width; K_FIXED: length; K_ARRAY: item size */
};

static const struct field_info field_info[SP_FIELD_ID_MAX + 1] = {
        [SP_F_MSG_ID] = {"msg_id", K_FIXED, 16},
        [SP_F_RECIPIENTS] = {"recipients", K_ARRAY, 32},
        [SP_F_TOKEN] = {"token", K_FIXED, 32},
        [SP_F_TTL] = {"ttl", K_INT, 4},
        [SP_F_PRIORITY] = {"priority", K_INT, 1},
        [SP_F_COLLAPSE_ID] = {"collapse_id", K_VAR, 0},
        [SP_F_BLOB] = {"blob", K_VAR, 0},
        [SP_F_RESULTS] = {"results", K_ARRAY, 3},
        [SP_F_CODE] = {"code", K_INT, 2},
        [SP_F_REASON] = {"reason", K_VAR, 0},
        [SP_F_VERSION] = {"version", K_INT, 2},
        [SP_F_CAPABILITIES] = {"capabilities", K_INT, 4},
        [SP_F_KEEPALIVE] = {"keepalive", K_INT, 2},
        [SP_F_WINDOW] = {"window", K_INT, 2},
        [SP_F_MAX_FRAME] = {"max_frame", K_INT, 4},
        [SP_F_MAX_BLOB] = {"max_blob", K_INT, 4},
        [SP_F_MAX_RECIPIENTS] = {"max_recipients", K_INT, 2},
        [SP_F_KEEPALIVE_MIN] = {"keepalive_min", K_INT, 2},
        [SP_F_KEEPALIVE_MAX] = {"keepalive_max", K_INT, 2},
        [SP_F_SEND_WINDOW] = {"send_window", K_INT, 2},
        [SP_F_RETRY_AFTER] = {"retry_after", K_INT, 4},
        [SP_F_DATA] = {"data", K_FIXED, 8},
        [SP_F_MSG_IDS] = {"msg_ids", K_ARRAY, 16},
        [SP_F_FRAME_TYPE] = {"frame_type", K_INT, 1},
        [SP_F_RESUME_ID] = {"resume_id", K_FIXED, 16},
        [SP_F_SUB_ID] = {"sub_id", K_FIXED, 16},
        [SP_F_APP_KEY] = {"app_key", K_FIXED, 65},
        [SP_F_ENDPOINT] = {"endpoint", K_VAR, 0},
        [SP_F_STATUS] = {"status", K_INT, 1},
        [SP_F_SUB_IDS] = {"sub_ids", K_ARRAY, 16},
        [SP_F_AGENT] = {"agent", K_VAR, 0},
        [SP_F_DIR_CARD] = {"dir_card", K_VAR, 0},
        [SP_F_HANDLE] = {"handle", K_VAR, 0},
        [SP_F_TREE_SIZE] = {"tree_size", K_FIXED, 8},
        [SP_F_DIR_ENTRY] = {"dir_entry", K_VAR, 0},
        [SP_F_LEAF_INDEX] = {"leaf_index", K_FIXED, 8},
        [SP_F_TREE_HEAD] = {"tree_head", K_VAR, 0},
        [SP_F_INCLUSION] = {"inclusion", K_VAR, 0},
        [SP_F_CONSISTENCY] = {"consistency", K_VAR, 0},
        [SP_F_CSR] = {"csr", K_VAR, 0},
        [SP_F_CERT_CHAIN] = {"cert_chain", K_VAR, 0},
        [SP_F_NOT_AFTER] = {"not_after", K_INT, 4},
        [SP_F_ANON_MODE] = {"anon_mode", K_INT, 1},
        [SP_F_ACCESS_VERIFIERS] = {"access_verifiers", K_ARRAY, 32},
        [SP_F_ACCESS_KEYS] = {"access_keys", K_ARRAY, 32},
        [SP_F_HIST_LEFT] = {"hist_left", K_INT, 4},
};

#define B(id) SP_BIT(SP_F_##id)

struct frame_info {
	const char *name;
	uint64_t allowed;
	uint64_t required;
	uint8_t flags; /* flag bits defined for the type */
};

static const struct frame_info frame_info[SP_FRAME_TYPE_MAX + 1] = {
        [SP_HELLO] = {"HELLO",
                      B(VERSION) | B(CAPABILITIES) | B(KEEPALIVE) | B(WINDOW) | B(RESUME_ID) |
                              B(AGENT),
                      B(VERSION), SP_HELLO_SEND_ONLY},
        [SP_WELCOME] = {"WELCOME",
                        B(VERSION) | B(TOKEN) | B(MAX_FRAME) | B(MAX_BLOB) | B(MAX_RECIPIENTS) |
                                B(WINDOW) | B(SEND_WINDOW) | B(KEEPALIVE) | B(KEEPALIVE_MIN) |
                                B(KEEPALIVE_MAX) | B(CAPABILITIES),
                        B(VERSION) | B(TOKEN) | B(MAX_FRAME) | B(MAX_BLOB) | B(MAX_RECIPIENTS) |
                                B(WINDOW) | B(SEND_WINDOW) | B(KEEPALIVE) | B(KEEPALIVE_MIN) |
                                B(KEEPALIVE_MAX),
                        0},
        [SP_SEND] = {"SEND",
                     B(MSG_ID) | B(RECIPIENTS) | B(TTL) | B(PRIORITY) | B(COLLAPSE_ID) | B(BLOB) |
                             B(ACCESS_KEYS),
                     B(MSG_ID) | B(RECIPIENTS) | B(BLOB), 0},
        [SP_SEND_RESULT] = {"SEND_RESULT", B(MSG_ID) | B(RESULTS) | B(RETRY_AFTER),
                            B(MSG_ID) | B(RESULTS), 0},
        [SP_DELIVER] = {"DELIVER", B(MSG_ID) | B(BLOB) | B(PRIORITY) | B(COLLAPSE_ID),
                        B(MSG_ID) | B(BLOB), SP_DELIVER_STORED},
        [SP_ACK] = {"ACK", B(MSG_IDS), B(MSG_IDS), 0},
        [SP_PING] = {"PING", B(DATA), 0, 0},
        [SP_PONG] = {"PONG", B(DATA), 0, 0},
        [SP_GOAWAY] = {"GOAWAY", B(CODE) | B(RETRY_AFTER) | B(REASON), B(CODE), 0},
        [SP_ERROR] = {"ERROR", B(CODE) | B(REASON) | B(MSG_ID) | B(FRAME_TYPE), B(CODE),
                      SP_ERROR_CLOSING},
        [SP_SUBSCRIBE] = {"SUBSCRIBE", B(MSG_ID) | B(SUB_ID) | B(APP_KEY), B(MSG_ID),
                          SP_SUBSCRIBE_REMOVE | SP_SUBSCRIBE_LIST},
        [SP_SUBSCRIPTION] = {"SUBSCRIPTION",
                             B(MSG_ID) | B(STATUS) | B(SUB_ID) | B(APP_KEY) | B(ENDPOINT) |
                                     B(SUB_IDS) | B(REASON),
                             B(MSG_ID) | B(STATUS), 0},
        [SP_DIR_PUBLISH] = {"DIR_PUBLISH", B(MSG_ID) | B(DIR_CARD), B(MSG_ID) | B(DIR_CARD), 0},
        [SP_DIR_LOOKUP] = {"DIR_LOOKUP",
                           B(MSG_ID) | B(HANDLE) | B(TOKEN) | B(TREE_SIZE) | B(LEAF_INDEX),
                           B(MSG_ID), SP_DIR_LOOKUP_HEAD | SP_DIR_LOOKUP_HISTORY},
        [SP_DIR_ANSWER] = {"DIR_ANSWER",
                           B(MSG_ID) | B(STATUS) | B(DIR_ENTRY) | B(LEAF_INDEX) | B(TREE_HEAD) |
                                   B(INCLUSION) | B(CONSISTENCY) | B(RETRY_AFTER) | B(REASON) |
                                   B(HIST_LEFT),
                           B(MSG_ID) | B(STATUS), 0},
        [SP_RENEW] = {"RENEW", B(MSG_ID) | B(CSR), B(MSG_ID) | B(CSR), 0},
        [SP_RENEWED] = {"RENEWED", B(MSG_ID) | B(CERT_CHAIN) | B(NOT_AFTER) | B(TOKEN),
                        B(MSG_ID) | B(CERT_CHAIN) | B(NOT_AFTER) | B(TOKEN), 0},
        [SP_ACCESS_SET] = {"ACCESS_SET", B(MSG_ID) | B(ANON_MODE) | B(ACCESS_VERIFIERS),
                           B(MSG_ID) | B(ANON_MODE), 0},
        [SP_ACCESS_STATE] = {"ACCESS_STATE",
                             B(MSG_ID) | B(STATUS) | B(ANON_MODE) | B(RETRY_AFTER) | B(REASON),
                             B(MSG_ID) | B(STATUS), 0},
};

#undef B

static const char *const error_names[] = {
        NULL,
        "MALFORMED_FRAME",
        "FRAME_TOO_LARGE",
        "UNKNOWN_FRAME_TYPE",
        "UNEXPECTED_FRAME",
        "MISSING_FIELD",
        "BAD_FIELD",
        "DUPLICATE_FIELD",
        "UNSUPPORTED_FIELD",
        "UNSUPPORTED_VERSION",
        "HELLO_TIMEOUT",
        "IDLE_TIMEOUT",
        "SLOW_CONSUMER",
        "TOO_MANY_ERRORS",
        "INTERNAL_ERROR",
        "SHUTDOWN",
        "REPLACED",
        "CERT_REVOKED",
        "?", /* 18, 19: reserved for the key directory */
        "?",
        "RENEW_REFUSED",
        "RENEW_UNAVAILABLE",
        "ANONYMOUS",
};
#define N_ERRORS (sizeof(error_names) / sizeof(error_names[0]))

static const struct {
	unsigned value;
	const char *name;
} status_names[] = {
        {0x00, "DELIVERED"},
        {0x01, "QUEUED"},
        {0x10, "BAD_DEVICE_TOKEN"},
        {0x11, "PAYLOAD_TOO_LARGE"},
        {0x12, "TOO_MANY_RECIPIENTS"},
        {0x13, "TOO_MANY_REQUESTS"},
        {0x14, "QUOTA_EXCEEDED"},
        {0x15, "EXPIRED"},
        {0x16, "DEVICE_OFFLINE"},
        {0x17, "FORBIDDEN"},
        {0x18, "TRY_LATER"},
        {0x19, "SHUTDOWN"},
        {0x1A, "INTERNAL_ERROR"},
        {0x1B, "ACCESS_DENIED"},
        {0x1C, "BAD_SIZE"},
};
#define N_STATUSES (sizeof(status_names) / sizeof(status_names[0]))

static int known_type(unsigned t)
{
	return t >= 1 && t <= SP_FRAME_TYPE_MAX && frame_info[t].name != NULL;
}

/* ---- Field access by id ------------------------------------------------------------------- */

static uint32_t get_int(const sp_frame_t *f, unsigned id)
{
	switch (id) {
	case SP_F_TTL:
		return f->ttl;
	case SP_F_PRIORITY:
		return f->priority;
	case SP_F_CODE:
		return f->code;
	case SP_F_VERSION:
		return f->version;
	case SP_F_CAPABILITIES:
		return f->capabilities;
	case SP_F_KEEPALIVE:
		return f->keepalive;
	case SP_F_WINDOW:
		return f->window;
	case SP_F_MAX_FRAME:
		return f->max_frame;
	case SP_F_MAX_BLOB:
		return f->max_blob;
	case SP_F_MAX_RECIPIENTS:
		return f->max_recipients;
	case SP_F_KEEPALIVE_MIN:
		return f->keepalive_min;
	case SP_F_KEEPALIVE_MAX:
		return f->keepalive_max;
	case SP_F_SEND_WINDOW:
		return f->send_window;
	case SP_F_RETRY_AFTER:
		return f->retry_after;
	case SP_F_FRAME_TYPE:
		return f->frame_type;
	case SP_F_NOT_AFTER:
		return f->not_after;
	case SP_F_ANON_MODE:
		return f->anon_mode;
	case SP_F_HIST_LEFT:
		return f->hist_left;
	default:
		return UINT32_MAX;
	}
}

static void set_int(sp_frame_t *f, unsigned id, uint32_t v)
{
	switch (id) {
	case SP_F_TTL:
		f->ttl = v;
		break;
	case SP_F_PRIORITY:
		f->priority = (uint8_t)v;
		break;
	case SP_F_CODE:
		f->code = (uint16_t)v;
		break;
	case SP_F_VERSION:
		f->version = (uint16_t)v;
		break;
	case SP_F_CAPABILITIES:
		f->capabilities = v;
		break;
	case SP_F_KEEPALIVE:
		f->keepalive = (uint16_t)v;
		break;
	case SP_F_WINDOW:
		f->window = (uint16_t)v;
		break;
	case SP_F_MAX_FRAME:
		f->max_frame = v;
		break;
	case SP_F_MAX_BLOB:
		f->max_blob = v;
		break;
	case SP_F_MAX_RECIPIENTS:
		f->max_recipients = (uint16_t)v;
		break;
	case SP_F_KEEPALIVE_MIN:
		f->keepalive_min = (uint16_t)v;
		break;
	case SP_F_KEEPALIVE_MAX:
		f->keepalive_max = (uint16_t)v;
		break;
	case SP_F_SEND_WINDOW:
		f->send_window = (uint16_t)v;
		break;
	case SP_F_RETRY_AFTER:
		f->retry_after = v;
		break;
	case SP_F_FRAME_TYPE:
		f->frame_type = (uint8_t)v;
		break;
	case SP_F_NOT_AFTER:
		f->not_after = v;
		break;
	case SP_F_ANON_MODE:
		f->anon_mode = (uint8_t)v;
		break;
	case SP_F_HIST_LEFT:
		f->hist_left = v;
		break;
	default:
		break;
	}
}

/* A byte-string field as pointer + length in bytes (arrays: count * item size). */
static void get_bytes(const sp_frame_t *f, unsigned id, const uint8_t **p, uint32_t *n)
{
	switch (id) {
	case SP_F_MSG_ID:
		*p = f->msg_id, *n = SP_MSG_ID_LEN;
		break;
	case SP_F_TOKEN:
		*p = f->token, *n = SP_TOKEN_LEN;
		break;
	case SP_F_RESUME_ID:
		*p = f->resume_id, *n = SP_MSG_ID_LEN;
		break;
	case SP_F_DATA:
		*p = f->data, *n = SP_PING_LEN;
		break;
	case SP_F_RECIPIENTS:
		*p = f->recipients, *n = f->n_recipients * SP_TOKEN_LEN;
		break;
	case SP_F_MSG_IDS:
		*p = f->msg_ids, *n = f->n_msg_ids * SP_MSG_ID_LEN;
		break;
	case SP_F_RESULTS:
		*p = f->results, *n = f->n_results * SP_RESULT_LEN;
		break;
	case SP_F_BLOB:
		*p = f->blob, *n = f->blob_len;
		break;
	case SP_F_COLLAPSE_ID:
		*p = f->collapse_id, *n = f->collapse_id_len;
		break;
	case SP_F_REASON:
		*p = f->reason, *n = f->reason_len;
		break;
	case SP_F_AGENT:
		*p = f->agent, *n = f->agent_len;
		break;
	case SP_F_DIR_CARD:
		*p = f->dir_card, *n = f->dir_card_len;
		break;
	case SP_F_HANDLE:
		*p = f->handle, *n = f->handle_len;
		break;
	case SP_F_TREE_SIZE:
		*p = f->tree_size, *n = SP_DIR_U64_LEN;
		break;
	case SP_F_LEAF_INDEX:
		*p = f->leaf_index, *n = SP_DIR_U64_LEN;
		break;
	case SP_F_DIR_ENTRY:
		*p = f->dir_entry, *n = f->dir_entry_len;
		break;
	case SP_F_TREE_HEAD:
		*p = f->tree_head, *n = f->tree_head_len;
		break;
	case SP_F_INCLUSION:
		*p = f->inclusion, *n = f->inclusion_len;
		break;
	case SP_F_CONSISTENCY:
		*p = f->consistency, *n = f->consistency_len;
		break;
	case SP_F_CSR:
		*p = f->csr, *n = f->csr_len;
		break;
	case SP_F_CERT_CHAIN:
		*p = f->cert_chain, *n = f->cert_chain_len;
		break;
	case SP_F_ACCESS_VERIFIERS:
		*p = f->access_verifiers, *n = f->n_access_verifiers * SP_ACCESS_KEY_LEN;
		break;
	case SP_F_ACCESS_KEYS:
		*p = f->access_keys, *n = f->n_access_keys * SP_ACCESS_KEY_LEN;
		break;
	default:
		*p = NULL, *n = 0;
		break;
	}
}

/* Sets a byte-string field from n bytes (arrays: n must be a multiple of the item size). */
static void set_bytes(sp_frame_t *f, unsigned id, const uint8_t *p, uint32_t n)
{
	switch (id) {
	case SP_F_MSG_ID:
		f->msg_id = p;
		break;
	case SP_F_TOKEN:
		f->token = p;
		break;
	case SP_F_RESUME_ID:
		f->resume_id = p;
		break;
	case SP_F_DATA:
		f->data = p;
		break;
	case SP_F_RECIPIENTS:
		f->recipients = p, f->n_recipients = n / SP_TOKEN_LEN;
		break;
	case SP_F_MSG_IDS:
		f->msg_ids = p, f->n_msg_ids = n / SP_MSG_ID_LEN;
		break;
	case SP_F_RESULTS:
		f->results = p, f->n_results = n / SP_RESULT_LEN;
		break;
	case SP_F_BLOB:
		f->blob = p, f->blob_len = n;
		break;
	case SP_F_COLLAPSE_ID:
		f->collapse_id = p, f->collapse_id_len = n;
		break;
	case SP_F_REASON:
		f->reason = p, f->reason_len = n;
		break;
	case SP_F_AGENT:
		f->agent = p, f->agent_len = n;
		break;
	case SP_F_CSR:
		f->csr = p, f->csr_len = n;
		break;
	case SP_F_CERT_CHAIN:
		f->cert_chain = p, f->cert_chain_len = n;
		break;
	case SP_F_ACCESS_VERIFIERS:
		f->access_verifiers = p, f->n_access_verifiers = n / SP_ACCESS_KEY_LEN;
		break;
	case SP_F_ACCESS_KEYS:
		f->access_keys = p, f->n_access_keys = n / SP_ACCESS_KEY_LEN;
		break;
	default:
		break;
	}
}

/* ---- The vectors ------------------------------------------------------------------------- */

struct vec {
	char *name;
	uint8_t *bytes; /* exactly len bytes on the heap, so ASan sees any over-read */
	size_t len;
	/* valid */
	int canonical;
	sp_frame_t exp;
	uint8_t *store[SP_FIELD_ID_MAX + 1];
	/* invalid */
	int error;
	int field_id; /* -1: null */
	uint32_t max_frame;
	char *note;
};

static struct vec *valid_v, *invalid_v;
static size_t n_valid, n_invalid;
static int vectors_loaded;
static const struct vec *cur; /* the vector of the running case */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Lowercase hex to a heap buffer of exactly n bytes (one byte if n == 0); NULL if not hex. */
static uint8_t *unhex(const char *s, size_t *n)
{
	size_t len = strlen(s);
	uint8_t *out;

	if (len % 2)
		return NULL;
	out = malloc(len / 2 ? len / 2 : 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(out);
			return NULL;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	*n = len / 2;
	return out;
}

static int field_by_name(const char *name)
{
	for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++)
		if (strcmp(field_info[id].name, name) == 0)
			return (int)id;
	return -1;
}

static int type_by_name(const char *name)
{
	for (unsigned t = 1; t <= SP_FRAME_TYPE_MAX; t++)
		if (frame_info[t].name && strcmp(frame_info[t].name, name) == 0)
			return (int)t;
	return -1;
}

static int error_by_name(const char *name)
{
	for (unsigned e = 1; e < N_ERRORS; e++)
		if (strcmp(error_names[e], name) == 0)
			return (int)e;
	return -1;
}

/* One field value of a "frame" object into v->exp; 0 or -1 with a message. */
static int load_field(struct vec *v, const char *key, json_t *val)
{
	int id = field_by_name(key);
	const struct field_info *fi;
	uint8_t *buf = NULL;
	size_t n = 0;

	if (id < 0) {
		SP_FAIL("%s: unknown field name %s", v->name, key);
		return -1;
	}
	fi = &field_info[id];
	if (fi->kind == K_INT) {
		json_int_t x = json_integer_value(val);

		if (!json_is_integer(val) || x < 0 ||
		    x > (json_int_t)(UINT32_MAX >> (32 - 8 * fi->size))) {
			SP_FAIL("%s: %s is not a %u-byte integer", v->name, key, fi->size);
			return -1;
		}
		set_int(&v->exp, (unsigned)id, (uint32_t)x);
	} else if (id == SP_F_RESULTS) {
		size_t i, count = json_array_size(val);

		buf = malloc(count * SP_RESULT_LEN + 1);
		for (i = 0; buf && i < count; i++) {
			json_t *e = json_array_get(val, i);
			json_int_t idx = json_integer_value(json_array_get(e, 0));
			json_int_t st = json_integer_value(json_array_get(e, 1));

			if (json_array_size(e) != 2 || idx < 0 || idx > 0xFFFF || st < 0 ||
			    st > 0xFF)
				break;
			buf[3 * i] = (uint8_t)(idx >> 8);
			buf[3 * i + 1] = (uint8_t)idx;
			buf[3 * i + 2] = (uint8_t)st;
		}
		if (!buf || i != count || !json_is_array(val)) {
			free(buf);
			SP_FAIL("%s: bad results", v->name);
			return -1;
		}
		n = count * SP_RESULT_LEN;
	} else if (fi->kind == K_ARRAY) {
		size_t i, count = json_array_size(val);

		buf = malloc(count * fi->size + 1);
		for (i = 0; buf && i < count; i++) {
			const char *s = json_string_value(json_array_get(val, i));
			size_t m = 0;
			uint8_t *item = s ? unhex(s, &m) : NULL;

			if (!item || m != fi->size) {
				free(item);
				break;
			}
			memcpy(buf + i * fi->size, item, m);
			free(item);
		}
		if (!buf || i != count || !json_is_array(val)) {
			free(buf);
			SP_FAIL("%s: bad array %s", v->name, key);
			return -1;
		}
		n = count * fi->size;
	} else {
		const char *s = json_string_value(val);

		buf = s ? unhex(s, &n) : NULL;
		if (!buf || (fi->kind == K_FIXED && n != fi->size)) {
			free(buf);
			SP_FAIL("%s: bad bytes %s", v->name, key);
			return -1;
		}
	}
	if (buf) {
		v->store[id] = buf;
		set_bytes(&v->exp, (unsigned)id, buf, (uint32_t)n);
	}
	v->exp.fields |= SP_BIT(id);
	return 0;
}

static int load_valid(struct vec *v, json_t *o)
{
	json_t *fr = json_object_get(o, "frame"), *fields = json_object_get(fr, "fields"), *val;
	const char *tname = json_string_value(json_object_get(fr, "type"));
	const char *key;
	int t = tname ? type_by_name(tname) : -1;

	v->canonical = json_is_true(json_object_get(o, "canonical"));
	if (t < 0 || !json_is_integer(json_object_get(fr, "flags")) || !json_is_object(fields)) {
		SP_FAIL("%s: bad frame object", v->name);
		return -1;
	}
	v->exp.type = (uint8_t)t;
	v->exp.flags = (uint8_t)json_integer_value(json_object_get(fr, "flags"));
	json_object_foreach(fields, key, val)
	{
		if (load_field(v, key, val) < 0)
			return -1;
	}
	return 0;
}

static int load_invalid(struct vec *v, json_t *o)
{
	const char *err = json_string_value(json_object_get(o, "error"));
	json_t *fid = json_object_get(o, "field_id"), *fname = json_object_get(o, "field");
	json_int_t mf = json_integer_value(json_object_get(o, "max_frame"));

	v->error = err ? error_by_name(err) : -1;
	v->field_id = json_is_integer(fid) ? (int)json_integer_value(fid) : -1;
	v->max_frame = (uint32_t)mf;
	v->note = strdup(json_string_value(json_object_get(o, "note"))
	                         ? json_string_value(json_object_get(o, "note"))
	                         : "");
	if (v->error < 0 || mf <= 0 || mf > UINT32_MAX || (!json_is_null(fid) && v->field_id < 0)) {
		SP_FAIL("%s: bad invalid vector", v->name);
		return -1;
	}
	/* "field" is the name of "field_id" when the spec names it. */
	if (json_is_string(fname) &&
	    (v->field_id < 1 || v->field_id > SP_FIELD_ID_MAX ||
	     strcmp(json_string_value(fname), field_info[v->field_id].name) != 0)) {
		SP_FAIL("%s: field and field_id disagree", v->name);
		return -1;
	}
	return 0;
}

static int load_list(json_t *list, int valid, struct vec **out, size_t *count)
{
	size_t n = json_array_size(list);
	struct vec *vs = calloc(n ? n : 1, sizeof(*vs));

	*out = vs;
	*count = 0;
	if (!json_is_array(list) || !vs) {
		SP_FAIL("no %s list", valid ? "valid" : "invalid");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_array_get(list, i);
		const char *name = json_string_value(json_object_get(o, "name"));
		const char *hex = json_string_value(json_object_get(o, "hex"));
		struct vec *v = &vs[i];

		*count = i + 1;
		v->name = strdup(name ? name : "?");
		v->bytes = hex ? unhex(hex, &v->len) : NULL;
		if (!name || !v->bytes) {
			SP_FAIL("vector %zu (%s): no name or bad hex", i, v->name);
			return -1;
		}
		if (valid ? load_valid(v, o) : load_invalid(v, o))
			return -1;
	}
	return 0;
}

static void free_vectors(struct vec *vs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(vs[i].name);
		free(vs[i].bytes);
		free(vs[i].note);
		for (unsigned id = 0; id <= SP_FIELD_ID_MAX; id++)
			free(vs[i].store[id]);
	}
	free(vs);
}

static const struct vec *find_valid(const char *name)
{
	for (size_t i = 0; i < n_valid; i++)
		if (strcmp(valid_v[i].name, name) == 0)
			return &valid_v[i];
	return NULL;
}

static void test_load_vectors(void)
{
	static const char *const examples[] = {
	        "example-hello",  "example-welcome",     "example-send", "example-deliver",
	        "example-ack",    "example-send-result", "example-ping", "example-pong",
	        "example-goaway", "example-error",
	};
	json_error_t jerr;
	json_t *doc = json_load_file(SP_VECTORS, 0, &jerr);

	if (!doc) {
		SP_FAIL("%s:%d: %s", SP_VECTORS, jerr.line, jerr.text);
		return;
	}
	SP_CHECK_EQ_INT(json_integer_value(json_object_get(doc, "version")), 1);
	if (load_list(json_object_get(doc, "valid"), 1, &valid_v, &n_valid) == 0 &&
	    load_list(json_object_get(doc, "invalid"), 0, &invalid_v, &n_invalid) == 0)
		vectors_loaded = 1;
	json_decref(doc);
	SP_CHECK(n_valid > 50);
	SP_CHECK(n_invalid > 100);
	for (size_t i = 0; i < sizeof(examples) / sizeof(examples[0]); i++)
		if (!find_valid(examples[i]))
			SP_FAIL("no vector %s", examples[i]);
	/* Names are unique across both lists. */
	for (size_t i = 0; i < n_valid + n_invalid; i++) {
		const struct vec *a = i < n_valid ? &valid_v[i] : &invalid_v[i - n_valid];

		for (size_t j = i + 1; j < n_valid + n_invalid; j++) {
			const struct vec *b = j < n_valid ? &valid_v[j] : &invalid_v[j - n_valid];

			if (strcmp(a->name, b->name) == 0)
				SP_FAIL("vector name %s twice", a->name);
		}
	}
}

/* ---- Checks ---------------------------------------------------------------------------------- */

/* Whether got is exactly the vector's frame; prints what differs, tagged with `how`. */
static void check_frame(const sp_frame_t *got, const struct vec *v, const char *how)
{
	const sp_frame_t *e = &v->exp;
	unsigned flags = got->flags;

	if (got->type != e->type) {
		SP_FAIL("%s via %s: type %u, want %u", v->name, how, got->type, e->type);
		return;
	}
	/* The vectors list the flag bits a receiver keeps; undefined ones are ignored. */
	if (!v->canonical)
		flags &= frame_info[e->type].flags;
	if (flags != e->flags)
		SP_FAIL("%s via %s: flags 0x%02x, want 0x%02x", v->name, how, got->flags, e->flags);
	if (got->fields != e->fields)
		SP_FAIL("%s via %s: fields 0x%" PRIx64 ", want 0x%" PRIx64, v->name, how,
		        got->fields, e->fields);
	for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++) {
		if (!(e->fields & SP_BIT(id)) || !(got->fields & SP_BIT(id)))
			continue;
		if (field_info[id].kind == K_INT) {
			if (get_int(got, id) != get_int(e, id))
				SP_FAIL("%s via %s: %s = %" PRIu32 ", want %" PRIu32, v->name, how,
				        field_info[id].name, get_int(got, id), get_int(e, id));
		} else {
			const uint8_t *gp, *ep;
			uint32_t gn, en;

			get_bytes(got, id, &gp, &gn);
			get_bytes(e, id, &ep, &en);
			if (gn != en)
				SP_FAIL("%s via %s: %s is %" PRIu32 " bytes, want %" PRIu32,
				        v->name, how, field_info[id].name, gn, en);
			else if (en && (!gp || memcmp(gp, ep, en) != 0))
				SP_FAIL("%s via %s: %s differs", v->name, how, field_info[id].name);
		}
	}
}

static void check_error(int r, const sp_frame_t *f, const struct vec *v, const char *how)
{
	if (r != -v->error) {
		SP_FAIL("%s via %s: returned %d (%s), want %d (%s)", v->name, how, r,
		        r < 0 ? sp_error_name((unsigned)-r) : "no error", -v->error,
		        error_names[v->error]);
		return;
	}
	/*
	 * The field at fault, where the vector names one. PROTOCOL.md names no field for a
	 * malformed frame, so there the codec may report the field it was reading.
	 */
	if (v->field_id >= 0) {
		if (f->err_field != v->field_id)
			SP_FAIL("%s via %s: err_field 0x%02x (%s), want 0x%02x (%s)", v->name, how,
			        f->err_field, sp_field_name(f->err_field), (unsigned)v->field_id,
			        sp_field_name((unsigned)v->field_id));
	} else if (v->error != SP_ERR_MALFORMED_FRAME && f->err_field != 0) {
		SP_FAIL("%s via %s: err_field 0x%02x, want none", v->name, how, f->err_field);
	}
}

/*
 * Feeds p[*off..n) to the decoder until it returns non-zero or the piece is consumed.
 * Returns the decoder's result (0 when the piece was consumed); *off advances.
 */
static int feed_piece(sp_decoder_t *d, const uint8_t *p, size_t n, size_t *off, sp_frame_t *f)
{
	while (*off < n) {
		size_t used = 99;
		int r = sp_decoder_feed(d, p + *off, n - *off, &used, f);

		if (used > n - *off) {
			SP_FAIL("decoder used %zu of %zu bytes", used, n - *off);
			return -9999;
		}
		*off += used;
		if (r != 0)
			return r;
		if (used == 0) {
			SP_FAIL("decoder consumed nothing and returned 0");
			return -9999;
		}
	}
	return 0;
}

/* Feeds p[0..n) in pieces of at most `chunk` bytes; stops at the first non-zero result. */
static int feed_chunks(sp_decoder_t *d, const uint8_t *p, size_t n, size_t chunk, size_t *off,
                       sp_frame_t *f)
{
	while (*off < n) {
		size_t end = *off + chunk < n ? *off + chunk : n;
		int r = feed_piece(d, p, end, off, f);

		if (r != 0)
			return r;
	}
	return 0;
}

/* Whether an encode of *f gives exactly want[0..n). */
static void check_encode(const sp_frame_t *in, const uint8_t *want, size_t n, const char *name,
                         const char *how)
{
	sp_frame_t f = *in;
	uint8_t *buf = malloc(n);
	size_t len = 12345;
	int r;

	r = sp_frame_encode(&f, NULL, 0, &len);
	if (r != -SP_ERR_NOSPACE || len != n)
		SP_FAIL("%s: encode (%s) with cap 0: %d, len %zu, want NOSPACE, %zu", name, how, r,
		        len, n);
	r = sp_frame_encode(&f, buf, n, &len);
	if (r != 0)
		SP_FAIL("%s: encode (%s): %d (%s field 0x%02x)", name, how, r,
		        sp_error_name((unsigned)-r), f.err_field);
	else if (len != n || memcmp(buf, want, n) != 0)
		SP_FAIL("%s: encode (%s) gives different bytes (%zu, want %zu)", name, how, len, n);
	free(buf);
}

/* ---- Valid vectors ------------------------------------------------------------------------- */

/* One pass of the streaming decoder over a valid vector; 0 if it gave the frame. */
static int check_stream_one(sp_decoder_t *d, const struct vec *v, size_t split, size_t chunk,
                            const char *how)
{
	int failed = sp_test_case_failed;
	sp_frame_t f;
	size_t off = 0;
	int r;

	sp_test_case_failed = 0;

	/* Up to `split` in chunks, then the rest in chunks. */
	r = feed_chunks(d, v->bytes, split, chunk, &off, &f);
	if (r == 0 && off == split)
		r = feed_chunks(d, v->bytes, v->len, chunk, &off, &f);
	if (r != 1 || off != v->len) {
		SP_FAIL("%s via %s (split %zu): returned %d after %zu of %zu bytes (field 0x%02x)",
		        v->name, how, split, r, off, v->len, f.err_field);
		sp_decoder_release(d); /* start over on a fresh decoder */
		sp_decoder_init(d, SP_MAX_FRAME_V1);
	} else {
		check_frame(&f, v, how);
		if (!sp_decoder_idle(d))
			SP_FAIL("%s via %s: decoder not idle after the frame", v->name, how);
	}
	r = sp_test_case_failed;
	sp_test_case_failed |= failed;
	return r ? -1 : 0;
}

static void run_valid(void)
{
	const struct vec *v = cur;
	uint32_t body = (uint32_t)(v->len - SP_HEADER_LEN);
	sp_frame_t f;
	sp_decoder_t d;
	size_t used = 99, stride;
	uint8_t *tail;
	int r;

	/* Decode. */
	r = sp_frame_decode(v->bytes, v->len, SP_MAX_FRAME_V1, &f, &used);
	if (r != 1) {
		SP_FAIL("%s: sp_frame_decode returned %d (%s), err_field 0x%02x", v->name, r,
		        r < 0 ? sp_error_name((unsigned)-r) : "need more", f.err_field);
	} else {
		SP_CHECK_EQ_INT(used, v->len);
		check_frame(&f, v, "sp_frame_decode");
		/* Re-encode the decoded frame, and encode the vector's own fields. */
		if (v->canonical) {
			check_encode(&f, v->bytes, v->len, v->name, "decoded frame");
			check_encode(&v->exp, v->bytes, v->len, v->name, "vector fields");
		}
	}

	/* max_frame is inclusive: a body of exactly max_frame bytes decodes. */
	r = sp_frame_decode(v->bytes, v->len, body, &f, &used);
	if (r != 1)
		SP_FAIL("%s: with max_frame = body length %" PRIu32 ": %d", v->name, body, r);
	if (body > 0) {
		used = 99;
		r = sp_frame_decode(v->bytes, v->len, body - 1, &f, &used);
		if (r != -SP_ERR_FRAME_TOO_LARGE || used != 0)
			SP_FAIL("%s: with max_frame = body length - 1: %d, used %zu", v->name, r,
			        used);
	}

	/* Need more: every proper prefix, placed at the end of a buffer so over-reads show. */
	tail = malloc(v->len);
	for (size_t cut = 0; cut < v->len; cut++) {
		memcpy(tail + v->len - cut, v->bytes, cut);
		used = 99;
		r = sp_frame_decode(tail + v->len - cut, cut, SP_MAX_FRAME_V1, &f, &used);
		if (r != 0 || used != 0) {
			SP_FAIL("%s: prefix of %zu bytes: %d, used %zu (want 0, 0)", v->name, cut,
			        r, used);
			break;
		}
	}
	free(tail);

	/* Streaming: whole, one byte at a time, and split in two at every offset. */
	sp_decoder_init(&d, SP_MAX_FRAME_V1);
	check_stream_one(&d, v, 0, v->len, "sp_decoder_feed whole");
	check_stream_one(&d, v, 0, 1, "sp_decoder_feed byte by byte");
	/* (The 16 KiB frames with a stride, and their last 16 offsets.) Stops at the first
	 * failing split. */
	stride = v->len > 4096 ? 61 : 1;
	for (size_t split = 1; split < v->len; split += stride)
		if (check_stream_one(&d, v, split, v->len, "sp_decoder_feed in two pieces"))
			goto out;
	for (size_t split = v->len > 16 ? v->len - 16 : 1; split < v->len; split++)
		if (check_stream_one(&d, v, split, v->len, "sp_decoder_feed in two pieces"))
			goto out;
out:
	SP_CHECK(d.cap <= body);
	sp_decoder_release(&d);
}

/* ---- Invalid vectors ------------------------------------------------------------------------ */

static void run_invalid(void)
{
	const struct vec *v = cur;
	const struct vec *ping = find_valid("example-ping");
	int too_large = v->error == SP_ERR_FRAME_TOO_LARGE;
	sp_frame_t f;
	sp_decoder_t d;
	size_t used = 99, off;
	int r;

	if (!ping) {
		SP_FAIL("no example-ping vector");
		return;
	}

	/* sp_frame_decode: the error, the field, and how much it covers. */
	r = sp_frame_decode(v->bytes, v->len, v->max_frame, &f, &used);
	check_error(r, &f, v, "sp_frame_decode");
	SP_CHECK_EQ_INT(used, too_large ? 0 : v->len);

	/* Every proper prefix needs more, until the header shows a frame too large. */
	for (size_t cut = 0; cut < v->len; cut++) {
		r = sp_frame_decode(v->bytes, cut, v->max_frame, &f, &used);
		if (r != (too_large && cut >= SP_HEADER_LEN ? -SP_ERR_FRAME_TOO_LARGE : 0)) {
			SP_FAIL("%s: prefix of %zu bytes: %d", v->name, cut, r);
			break;
		}
	}

	/* An unknown frame type is skipped: the frame after it decodes. */
	if (v->error == SP_ERR_UNKNOWN_FRAME_TYPE) {
		size_t n = v->len + ping->len;
		uint8_t *two = malloc(n);

		memcpy(two, v->bytes, v->len);
		memcpy(two + v->len, ping->bytes, ping->len);
		r = sp_frame_decode(two, n, v->max_frame, &f, &used);
		SP_CHECK_EQ_INT(r, -SP_ERR_UNKNOWN_FRAME_TYPE);
		SP_CHECK_EQ_INT(used, v->len);
		r = sp_frame_decode(two + v->len, n - v->len, v->max_frame, &f, &used);
		SP_CHECK_EQ_INT(r, 1);
		if (r == 1)
			check_frame(&f, ping, "sp_frame_decode after an unknown type");
		free(two);
	}

	/* Streaming, all at once. */
	sp_decoder_init(&d, v->max_frame);
	off = 0;
	r = feed_piece(&d, v->bytes, v->len, &off, &f);
	check_error(r, &f, v, "sp_decoder_feed whole");
	if (too_large) {
		/* Refused on the header, before allocating; stuck for ever. */
		SP_CHECK(off <= SP_HEADER_LEN);
		SP_CHECK(d.buf == NULL);
		SP_CHECK_EQ_INT(d.cap, 0);
		used = 99;
		r = sp_decoder_feed(&d, ping->bytes, ping->len, &used, &f);
		SP_CHECK_EQ_INT(r, -SP_ERR_FRAME_TOO_LARGE);
		SP_CHECK_EQ_INT(used, 0);
		r = sp_decoder_feed(&d, v->bytes + off, v->len - off, &used, &f);
		SP_CHECK_EQ_INT(r, -SP_ERR_FRAME_TOO_LARGE);
		SP_CHECK(d.buf == NULL);
	} else {
		SP_CHECK_EQ_INT(off, v->len);
		SP_CHECK(sp_decoder_idle(&d));
		if (v->error == SP_ERR_UNKNOWN_FRAME_TYPE) {
			/* Skipped without buffering its body. */
			SP_CHECK(d.buf == NULL);
			SP_CHECK_EQ_INT(d.cap, 0);
		}
		/* Positioned at the next frame. */
		off = 0;
		r = feed_piece(&d, ping->bytes, ping->len, &off, &f);
		SP_CHECK_EQ_INT(r, 1);
		if (r == 1)
			check_frame(&f, ping, "sp_decoder_feed after an error");
	}
	sp_decoder_release(&d);

	/* Streaming, one byte at a time: the error comes with the byte that decides it. */
	sp_decoder_init(&d, v->max_frame);
	off = 0;
	r = feed_chunks(&d, v->bytes, v->len, 1, &off, &f);
	check_error(r, &f, v, "sp_decoder_feed byte by byte");
	SP_CHECK_EQ_INT(off, too_large ? SP_HEADER_LEN : v->len);
	if (too_large) {
		SP_CHECK(d.buf == NULL);
		SP_CHECK_EQ_INT(d.cap, 0);
	}
	sp_decoder_release(&d);
}

/* ---- Several frames in one buffer -------------------------------------------------------- */

/* All valid vectors, with every unknown-type vector after the first few. */
static uint8_t *concat_all(size_t *n)
{
	size_t len = 0, off = 0;
	uint8_t *buf;

	for (size_t i = 0; i < n_valid; i++)
		len += valid_v[i].len;
	for (size_t i = 0; i < n_invalid; i++)
		if (invalid_v[i].error == SP_ERR_UNKNOWN_FRAME_TYPE)
			len += invalid_v[i].len;
	buf = malloc(len);
	for (size_t i = 0; i < n_valid; i++) {
		memcpy(buf + off, valid_v[i].bytes, valid_v[i].len);
		off += valid_v[i].len;
		if (i == 3) {
			for (size_t j = 0; j < n_invalid; j++) {
				if (invalid_v[j].error != SP_ERR_UNKNOWN_FRAME_TYPE)
					continue;
				memcpy(buf + off, invalid_v[j].bytes, invalid_v[j].len);
				off += invalid_v[j].len;
			}
		}
	}
	*n = len;
	return buf;
}

static size_t n_unknown_vectors(void)
{
	size_t n = 0;

	for (size_t i = 0; i < n_invalid; i++)
		n += invalid_v[i].error == SP_ERR_UNKNOWN_FRAME_TYPE;
	return n;
}

static void test_concatenated_frame_decode(void)
{
	size_t n, off = 0, frames = 0, unknown = 0, used;
	uint8_t *buf = concat_all(&n);
	sp_frame_t f;

	while (off < n) {
		int r = sp_frame_decode(buf + off, n - off, SP_MAX_FRAME_V1, &f, &used);

		if (r == 1) {
			if (frames < n_valid)
				check_frame(&f, &valid_v[frames], "concatenated sp_frame_decode");
			frames++;
		} else if (r == -SP_ERR_UNKNOWN_FRAME_TYPE) {
			unknown++;
		} else {
			SP_FAIL("at offset %zu: %d", off, r);
			break;
		}
		if (used == 0) {
			SP_FAIL("no progress at offset %zu", off);
			break;
		}
		off += used;
	}
	SP_CHECK_EQ_INT(frames, n_valid);
	SP_CHECK_EQ_INT(unknown, n_unknown_vectors());
	free(buf);
}

static void test_concatenated_stream(void)
{
	static const size_t chunks[] = {1, 2, 5, 64, 1000, 4096, SIZE_MAX};
	size_t n;
	uint8_t *buf = concat_all(&n);

	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		sp_decoder_t d;
		sp_frame_t f;
		size_t off = 0, frames = 0, unknown = 0;

		sp_decoder_init(&d, SP_MAX_FRAME_V1);
		while (off < n) {
			size_t end = chunks[c] < n - off ? off + chunks[c] : n;

			while (off < end) {
				int r = feed_piece(&d, buf, end, &off, &f);

				if (r == 0)
					break;
				if (r == 1) {
					if (frames < n_valid)
						check_frame(&f, &valid_v[frames],
						            "concatenated sp_decoder_feed");
					frames++;
				} else if (r == -SP_ERR_UNKNOWN_FRAME_TYPE) {
					unknown++;
				} else {
					SP_FAIL("chunk %zu: at offset %zu: %d", chunks[c], off, r);
					off = n;
					break;
				}
			}
		}
		if (frames != n_valid || unknown != n_unknown_vectors())
			SP_FAIL("chunk %zu: %zu frames and %zu unknown, want %zu and %zu",
			        chunks[c], frames, unknown, n_valid, n_unknown_vectors());
		SP_CHECK(sp_decoder_idle(&d));
		sp_decoder_release(&d);
	}
	free(buf);
}

/* ---- Encoder ---------------------------------------------------------------------------- */

static const uint8_t MID[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
static uint8_t tok[32], tokens[3 * 32], ids[2 * 16], resume[16], ping_data[8];
static uint8_t access_keys[3 * 32], access_verifiers[2 * 32];
static uint8_t results[2 * 3] = {0x00, 0x00, 0x00, 0x00, 0x01, 0x13};
static const uint8_t blob[] = "sealed-blob!";
static const uint8_t collapse[] = "inbox";
static const uint8_t reason[] = "going away";
static const uint8_t agent[] = "libsealpush/0.1";
static const uint8_t endpoint[] = "https://push.example.org/push/AAAA";
static uint8_t sub_id[16], app_key[65], sub_ids[32];
static const uint8_t dir_card[] = "{\"v\":1}";
static uint8_t dir_u64[8], dir_head[120], dir_proof[65];

/* Every field set to a valid value; fields = what the type allows. */
static void fill_all(sp_frame_t *f, uint8_t type)
{
	for (unsigned i = 0; i < sizeof(tokens); i++)
		tokens[i] = (uint8_t)(0xb0 + i);
	memset(tok, 0xa1, sizeof(tok));
	for (unsigned i = 0; i < sizeof(ids); i++)
		ids[i] = (uint8_t)(i * 3);
	memset(resume, 0x5e, sizeof(resume));
	for (unsigned i = 0; i < sizeof(ping_data); i++)
		ping_data[i] = (uint8_t)(i + 1);

	memset(f, 0, sizeof(*f));
	f->type = type;
	f->fields = known_type(type) ? frame_info[type].allowed : 0;
	f->msg_id = MID;
	f->token = tok;
	f->resume_id = resume;
	f->data = ping_data;
	f->recipients = tokens, f->n_recipients = 3;
	f->msg_ids = ids, f->n_msg_ids = 2;
	f->results = results, f->n_results = 2;
	f->blob = blob, f->blob_len = (uint32_t)(sizeof(blob) - 1);
	f->collapse_id = collapse, f->collapse_id_len = (uint32_t)(sizeof(collapse) - 1);
	f->reason = reason, f->reason_len = (uint32_t)(sizeof(reason) - 1);
	f->agent = agent, f->agent_len = (uint32_t)(sizeof(agent) - 1);
	memset(sub_id, 0x5b, sizeof(sub_id));
	memset(app_key, 0x04, sizeof(app_key));
	memset(sub_ids, 0x1f, sizeof(sub_ids));
	f->sub_id = sub_id;
	f->app_key = app_key;
	f->endpoint = endpoint, f->endpoint_len = (uint32_t)(sizeof(endpoint) - 1);
	f->sub_ids = sub_ids, f->n_sub_ids = 2;
	memset(dir_u64, 0x01, sizeof(dir_u64));
	memset(dir_head, 0x48, sizeof(dir_head));
	memset(dir_proof, 0x2a, sizeof(dir_proof));
	dir_proof[0] = 2;
	f->dir_card = dir_card, f->dir_card_len = (uint32_t)(sizeof(dir_card) - 1);
	f->handle = (const uint8_t *)"alice", f->handle_len = 5;
	f->tree_size = dir_u64;
	f->leaf_index = dir_u64;
	f->dir_entry = dir_card, f->dir_entry_len = (uint32_t)(sizeof(dir_card) - 1);
	f->tree_head = dir_head, f->tree_head_len = (uint32_t)sizeof(dir_head);
	f->inclusion = dir_proof, f->inclusion_len = (uint32_t)sizeof(dir_proof);
	f->consistency = dir_proof, f->consistency_len = (uint32_t)sizeof(dir_proof);
	f->status = 0x17;
	f->csr = (const uint8_t *)"\x30\x03\x02\x01\x00", f->csr_len = 5;
	f->cert_chain = (const uint8_t *)"-----BEGIN CERTIFICATE-----\n", f->cert_chain_len = 28;
	f->not_after = 1900000000u;
	memset(access_keys, 0x6b, sizeof(access_keys));
	memset(access_verifiers, 0x76, sizeof(access_verifiers));
	f->access_keys = access_keys, f->n_access_keys = 3; /* one per recipient */
	f->access_verifiers = access_verifiers, f->n_access_verifiers = 2;
	f->anon_mode = SP_ANON_KEY_HOLDERS;
	f->hist_left = 3;
	f->ttl = 86400;
	f->capabilities = 0x80000001u;
	f->max_frame = 65536;
	f->max_blob = 16384;
	f->retry_after = 5000;
	f->version = 1;
	f->keepalive = 60;
	f->keepalive_min = 10;
	f->keepalive_max = 3600;
	f->window = 64;
	f->send_window = 256;
	f->max_recipients = 100;
	f->code = 15;
	f->priority = 5;
	f->frame_type = 3;
}

/* Every field of want present in got with the same value. */
static void check_same_fields(const sp_frame_t *got, const sp_frame_t *want, const char *what)
{
	SP_CHECK_EQ_INT(got->type, want->type);
	SP_CHECK_EQ_INT(got->flags, want->flags);
	if (got->fields != want->fields)
		SP_FAIL("%s: fields 0x%" PRIx64 ", want 0x%" PRIx64, what, got->fields,
		        want->fields);
	for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++) {
		const uint8_t *gp, *wp;
		uint32_t gn, wn;

		if (!(want->fields & SP_BIT(id)))
			continue;
		if (field_info[id].kind == K_INT) {
			if (get_int(got, id) != get_int(want, id))
				SP_FAIL("%s: %s differs", what, field_info[id].name);
			continue;
		}
		get_bytes(got, id, &gp, &gn);
		get_bytes(want, id, &wp, &wn);
		if (gn != wn || (wn && memcmp(gp, wp, wn) != 0))
			SP_FAIL("%s: %s differs", what, field_info[id].name);
	}
}

static void test_encode_roundtrip_all_types(void)
{
	for (uint8_t t = 1; t <= SP_FRAME_TYPE_MAX; t++) {
		if (!known_type(t))
			continue;
		sp_frame_t f, g;
		uint8_t buf[1024];
		size_t len = 0, used = 0;
		int r;

		fill_all(&f, t);
		f.flags = frame_info[t].flags;
		r = sp_frame_encode(&f, buf, sizeof(buf), &len);
		if (r != 0) {
			SP_FAIL("%s: encode %d, err_field %u", frame_info[t].name, r, f.err_field);
			continue;
		}
		SP_CHECK_EQ_INT(f.err_field, 0);
		/* Canonical: field ids ascending, each id once. */
		for (size_t pos = SP_HEADER_LEN, last = 0; pos < len;) {
			unsigned id = buf[pos], vl = buf[pos + 1];

			if (vl >= 64)
				vl = (vl & 0x3fu) << 8 | buf[pos + 2], pos++;
			if (id <= last)
				SP_FAIL("%s: field 0x%02x after 0x%02zx", frame_info[t].name, id,
				        last);
			last = id;
			pos += 2 + vl;
		}
		r = sp_frame_decode(buf, len, SP_MAX_FRAME_V1, &g, &used);
		SP_CHECK_EQ_INT(r, 1);
		SP_CHECK_EQ_INT(used, len);
		check_same_fields(&g, &f, frame_info[t].name);
	}
}

static void test_encode_nospace(void)
{
	for (uint8_t t = 1; t <= SP_FRAME_TYPE_MAX; t++) {
		if (!known_type(t))
			continue;
		sp_frame_t f;
		uint8_t full[1024], *buf;
		size_t need = 0, len;
		int r;

		fill_all(&f, t);
		r = sp_frame_encode(&f, NULL, 0, &need);
		SP_CHECK_EQ_INT(r, -SP_ERR_NOSPACE);
		SP_CHECK(need > SP_HEADER_LEN);
		r = sp_frame_encode(&f, full, sizeof(full), &len);
		SP_CHECK_EQ_INT(r, 0);
		SP_CHECK_EQ_INT(len, need);
		/* Every cap below the size, in a buffer of exactly cap bytes (ASan sees writes). */
		for (size_t cap = 0; cap < need; cap++) {
			buf = malloc(cap ? cap : 1);
			len = 0;
			r = sp_frame_encode(&f, cap ? buf : NULL, cap, &len);
			if (r != -SP_ERR_NOSPACE || len != need)
				SP_FAIL("%s: cap %zu: %d, len %zu (want NOSPACE, %zu)",
				        frame_info[t].name, cap, r, len, need);
			free(buf);
		}
		buf = malloc(need);
		r = sp_frame_encode(&f, buf, need, &len);
		SP_CHECK_EQ_INT(r, 0);
		SP_CHECK_EQ_INT(len, need);
		SP_CHECK_MEM(buf, full, need);
		free(buf);
	}
}

static void test_encode_missing_field(void)
{
	for (uint8_t t = 1; t <= SP_FRAME_TYPE_MAX; t++) {
		if (!known_type(t))
			continue;
		for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++) {
			sp_frame_t f;
			uint8_t buf[1024];
			size_t len = 99;
			int r;

			if (!(frame_info[t].required & SP_BIT(id)))
				continue;
			fill_all(&f, t);
			f.fields &= ~SP_BIT(id);
			r = sp_frame_encode(&f, buf, sizeof(buf), &len);
			if (r != -SP_ERR_MISSING_FIELD || f.err_field != id)
				SP_FAIL("%s without %s: %d, err_field 0x%02x", frame_info[t].name,
				        field_info[id].name, r, f.err_field);
			SP_CHECK_EQ_INT(len, 0);
		}
	}
}

static void test_encode_field_not_allowed(void)
{
	for (uint8_t t = 1; t <= SP_FRAME_TYPE_MAX; t++) {
		if (!known_type(t))
			continue;
		for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++) {
			sp_frame_t f;
			uint8_t buf[1024];
			size_t len;
			int r;

			if (frame_info[t].allowed & SP_BIT(id))
				continue;
			fill_all(&f, t);
			f.fields |= SP_BIT(id);
			r = sp_frame_encode(&f, buf, sizeof(buf), &len);
			if (r != -SP_ERR_BAD_FIELD || f.err_field != id)
				SP_FAIL("%s with %s: %d, err_field 0x%02x", frame_info[t].name,
				        field_info[id].name, r, f.err_field);
		}
	}
}

/* Encodes f and expects -err with err_field id. */
static void expect_encode_error(sp_frame_t *f, int err, unsigned id, const char *what)
{
	uint8_t buf[2048];
	size_t len;
	int r = sp_frame_encode(f, buf, sizeof(buf), &len);

	if (r != -err || f->err_field != id)
		SP_FAIL("%s: %d (%s), err_field 0x%02x; want %s, 0x%02x", what, r,
		        r < 0 ? sp_error_name((unsigned)-r) : "ok", f->err_field, error_names[err],
		        id);
}

static void test_encode_bad_values(void)
{
	static const uint8_t prios[] = {0, 2, 3, 4, 6, 7, 8, 9, 11, 255};
	static uint8_t long_collapse[SP_COLLAPSE_MAX + 1], long_reason[SP_REASON_MAX + 1];
	static uint8_t long_agent[SP_AGENT_MAX + 1];
	sp_frame_t f;
	uint8_t buf[2048];
	size_t len;

	for (size_t i = 0; i < sizeof(prios); i++) {
		fill_all(&f, SP_SEND);
		f.priority = prios[i];
		expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_PRIORITY, "SEND bad priority");
		fill_all(&f, SP_DELIVER);
		f.priority = prios[i];
		expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_PRIORITY, "DELIVER bad priority");
	}
	memset(long_collapse, 'c', sizeof(long_collapse));
	fill_all(&f, SP_SEND);
	f.collapse_id = long_collapse, f.collapse_id_len = SP_COLLAPSE_MAX + 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_COLLAPSE_ID, "collapse_id 65");
	f.collapse_id_len = SP_COLLAPSE_MAX;
	SP_CHECK_EQ_INT(sp_frame_encode(&f, buf, sizeof(buf), &len), 0);
	f.collapse_id_len = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_COLLAPSE_ID, "collapse_id 0");

	memset(long_reason, 'r', sizeof(long_reason));
	fill_all(&f, SP_ERROR);
	f.reason = long_reason, f.reason_len = SP_REASON_MAX + 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_REASON, "reason 257");
	f.reason_len = SP_REASON_MAX;
	SP_CHECK_EQ_INT(sp_frame_encode(&f, buf, sizeof(buf), &len), 0);

	memset(long_agent, 'a', sizeof(long_agent));
	fill_all(&f, SP_HELLO);
	f.agent = long_agent, f.agent_len = SP_AGENT_MAX + 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_AGENT, "agent 65");
	f.agent_len = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_AGENT, "agent 0");
	f.agent = (const uint8_t *)"cli\x7f", f.agent_len = 4;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_AGENT, "agent with 0x7f");

	fill_all(&f, SP_SEND);
	f.n_recipients = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_RECIPIENTS, "0 recipients");
	f.n_recipients = SP_MAX_RECIPIENTS_V1 + 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_RECIPIENTS, "65536 recipients");
	f.n_recipients = UINT32_MAX;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_RECIPIENTS, "2^32-1 recipients");
	fill_all(&f, SP_SEND_RESULT);
	f.n_results = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_RESULTS, "0 results");
	fill_all(&f, SP_ACK);
	f.n_msg_ids = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_MSG_IDS, "0 msg_ids");

	/* Integers out of bounds. */
	fill_all(&f, SP_HELLO);
	f.version = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_VERSION, "version 0");
	fill_all(&f, SP_HELLO);
	f.keepalive = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_KEEPALIVE, "keepalive 0");
	fill_all(&f, SP_GOAWAY);
	f.code = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_CODE, "code 0");
	fill_all(&f, SP_WELCOME);
	f.max_frame = SP_MIN_MAX_FRAME - 1, f.max_blob = 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_MAX_FRAME, "max_frame 4095");
	fill_all(&f, SP_WELCOME);
	f.max_frame = SP_MAX_FRAME_V1 + 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_MAX_FRAME, "max_frame 2^24+1");
	fill_all(&f, SP_WELCOME);
	f.send_window = 0;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_SEND_WINDOW, "send_window 0");
	fill_all(&f, SP_ACCESS_SET);
	f.anon_mode = SP_ANON_ANYONE + 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_ANON_MODE, "anon_mode 3");
	fill_all(&f, SP_ACCESS_SET);
	f.n_access_verifiers = SP_ACCESS_SET_MAX + 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_ACCESS_VERIFIERS, "17 verifiers");
	/* SEND: one access key per recipient (PROTOCOL.md 17.3). */
	fill_all(&f, SP_SEND);
	f.n_access_keys = 2;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_ACCESS_KEYS, "2 access keys, 3 recipients");

	/* WELCOME's cross-field bounds (the field of keepalive_min > keepalive_max is pinned
	 * by the vector bad-welcome-keepalive_min-over-keepalive_max). */
	fill_all(&f, SP_WELCOME);
	f.max_blob = f.max_frame + 1;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_MAX_BLOB, "max_blob > max_frame");
	fill_all(&f, SP_WELCOME);
	f.keepalive = 9;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_KEEPALIVE, "keepalive < keepalive_min");
	fill_all(&f, SP_WELCOME);
	f.keepalive = 3601;
	expect_encode_error(&f, SP_ERR_BAD_FIELD, SP_F_KEEPALIVE, "keepalive > keepalive_max");
	fill_all(&f, SP_WELCOME);
	f.keepalive_min = 100, f.keepalive_max = 99, f.keepalive = 99;
	SP_CHECK_EQ_INT(sp_frame_encode(&f, buf, sizeof(buf), &len), -SP_ERR_BAD_FIELD);
}

static void test_encode_null_pointer(void)
{
	static const unsigned byte_fields[] = {
	        SP_F_MSG_ID,  SP_F_RECIPIENTS, SP_F_TOKEN,  SP_F_COLLAPSE_ID,
	        SP_F_BLOB,    SP_F_RESULTS,    SP_F_REASON, SP_F_DATA,
	        SP_F_MSG_IDS, SP_F_RESUME_ID,  SP_F_AGENT,
	};

	for (size_t i = 0; i < sizeof(byte_fields) / sizeof(byte_fields[0]); i++) {
		unsigned id = byte_fields[i];

		for (uint8_t t = 1; t <= SP_FRAME_TYPE_MAX; t++) {
			sp_frame_t f;
			const uint8_t *p;
			uint32_t n;
			char what[64];

			if (!(frame_info[t].allowed & SP_BIT(id)))
				continue;
			fill_all(&f, t);
			get_bytes(&f, id, &p, &n);
			set_bytes(&f, id, NULL, n);
			snprintf(what, sizeof(what), "%s: NULL %s", frame_info[t].name,
			         field_info[id].name);
			expect_encode_error(&f, SP_ERR_BAD_FIELD, id, what);
		}
	}

	/* A NULL pointer with length 0 is an empty value: fine where 0 bytes are allowed. */
	{
		sp_frame_t f, g;
		uint8_t buf[256];
		size_t len, used;

		fill_all(&f, SP_SEND);
		f.blob = NULL, f.blob_len = 0;
		SP_CHECK_EQ_INT(sp_frame_encode(&f, buf, sizeof(buf), &len), 0);
		SP_CHECK_EQ_INT(sp_frame_decode(buf, len, SP_MAX_FRAME_V1, &g, &used), 1);
		SP_CHECK_EQ_INT(g.blob_len, 0);
		SP_CHECK(g.fields & SP_BIT(SP_F_BLOB));
	}
}

static void test_encode_unknown_type(void)
{
	static const unsigned types[] = {0x00, 0x10, 0x15, 0x7F, 0x80, 0xFF};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		sp_frame_t f;
		uint8_t buf[64];
		size_t len = 99;
		int r;

		fill_all(&f, SP_PING);
		f.type = (uint8_t)types[i];
		r = sp_frame_encode(&f, buf, sizeof(buf), &len);
		if (r != -SP_ERR_UNKNOWN_FRAME_TYPE)
			SP_FAIL("type 0x%02x: %d", types[i], r);
		SP_CHECK_EQ_INT(len, 0);
	}
}

static void test_encode_too_large(void)
{
	/* A blob of 16 MiB fits its field but not a v1 frame: refused before any write. */
	static const uint8_t one = 0;
	sp_frame_t f;
	size_t len = 99;
	int r;

	fill_all(&f, SP_SEND);
	f.blob = &one, f.blob_len = SP_MAX_FRAME_V1;
	r = sp_frame_encode(&f, NULL, 0, &len);
	SP_CHECK_EQ_INT(r, -SP_ERR_FRAME_TOO_LARGE);
	f.blob_len = SP_MAX_FRAME_V1 + 1;
	r = sp_frame_encode(&f, NULL, 0, &len);
	SP_CHECK(r == -SP_ERR_BAD_FIELD || r == -SP_ERR_FRAME_TOO_LARGE);
}

/* ---- Names and small API pieces ------------------------------------------------------------ */

static void test_names(void)
{
	static const unsigned bad_types[] = {0, 0x10, 0x15, 0x7F, 0x80, 0xFF, 0x100, UINT_MAX};
	static const unsigned bad_fields[] = {0,    0x2B, 0x33, 0x3F,  0x40,
	                                      0x7F, 0x80, 0xFF, 0x100, UINT_MAX};
	static const unsigned bad_errors[] = {0, 18, 19, 23, 24, 255, 999, UINT_MAX};
	static const unsigned bad_statuses[] = {0x02, 0x0F, 0x1D, 0x20, 0xFF, 0x100, UINT_MAX};

	for (unsigned t = 1; t <= SP_FRAME_TYPE_MAX; t++)
		if (strcmp(sp_frame_type_name(t), known_type(t) ? frame_info[t].name : "?") != 0)
			SP_FAIL("type %u: %s", t, sp_frame_type_name(t));
	for (size_t i = 0; i < sizeof(bad_types) / sizeof(bad_types[0]); i++)
		if (strcmp(sp_frame_type_name(bad_types[i]), "?") != 0)
			SP_FAIL("type %u: %s", bad_types[i], sp_frame_type_name(bad_types[i]));

	for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++)
		if (strcmp(sp_field_name(id), field_info[id].name ? field_info[id].name : "?") != 0)
			SP_FAIL("field %u: %s", id, sp_field_name(id));
	for (size_t i = 0; i < sizeof(bad_fields) / sizeof(bad_fields[0]); i++)
		if (strcmp(sp_field_name(bad_fields[i]), "?") != 0)
			SP_FAIL("field %u: %s", bad_fields[i], sp_field_name(bad_fields[i]));

	for (unsigned e = 1; e < N_ERRORS; e++)
		if (strcmp(sp_error_name(e), error_names[e]) != 0)
			SP_FAIL("error %u: %s", e, sp_error_name(e));
	for (size_t i = 0; i < sizeof(bad_errors) / sizeof(bad_errors[0]); i++)
		if (strcmp(sp_error_name(bad_errors[i]), "?") != 0)
			SP_FAIL("error %u: %s", bad_errors[i], sp_error_name(bad_errors[i]));

	for (size_t i = 0; i < N_STATUSES; i++)
		if (strcmp(sp_status_name(status_names[i].value), status_names[i].name) != 0)
			SP_FAIL("status 0x%02x: %s", status_names[i].value,
			        sp_status_name(status_names[i].value));
	for (size_t i = 0; i < sizeof(bad_statuses) / sizeof(bad_statuses[0]); i++)
		if (strcmp(sp_status_name(bad_statuses[i]), "?") != 0)
			SP_FAIL("status 0x%x: %s", bad_statuses[i],
			        sp_status_name(bad_statuses[i]));
	for (unsigned s = 0; s < 0x100; s++)
		SP_CHECK_EQ_INT(SP_STATUS_IS_ACCEPTED(s), s < 0x10);
}

static void test_error_is_fatal(void)
{
	for (unsigned e = 1; e < N_ERRORS; e++)
		SP_CHECK_EQ_INT(!!sp_error_is_fatal(e), e != SP_ERR_UNKNOWN_FRAME_TYPE);
	SP_CHECK(sp_error_is_fatal(18));
	SP_CHECK(sp_error_is_fatal(0xFFFF));
}

static void test_strerror(void)
{
	const struct vec *bad = NULL, *missing = NULL, *ex = find_valid("example-error");
	char buf[512], small[12];
	sp_frame_t f;
	size_t used;
	int r;

	for (size_t i = 0; i < n_invalid; i++) {
		if (strcmp(invalid_v[i].name, "example-send-priority-7") == 0)
			bad = &invalid_v[i];
		if (strcmp(invalid_v[i].name, "missing-welcome-token") == 0)
			missing = &invalid_v[i];
	}
	if (!bad || !missing || !ex) {
		SP_FAIL("vectors missing");
		return;
	}

	r = sp_frame_decode(bad->bytes, bad->len, bad->max_frame, &f, &used);
	SP_CHECK(sp_frame_strerror(r, &f, buf, sizeof(buf)) == buf);
	SP_CHECK(strstr(buf, "SEND") != NULL);
	SP_CHECK(strstr(buf, "priority") != NULL);
	/* Section 11: the reason of the example ERROR is the codec's description. */
	if (strlen(buf) != ex->exp.reason_len || memcmp(buf, ex->exp.reason, ex->exp.reason_len))
		SP_FAIL("strerror gives \"%s\", section 11 shows \"%.*s\"", buf,
		        (int)ex->exp.reason_len, (const char *)ex->exp.reason);

	r = sp_frame_decode(missing->bytes, missing->len, missing->max_frame, &f, &used);
	sp_frame_strerror(r, &f, buf, sizeof(buf));
	SP_CHECK(strstr(buf, "WELCOME") != NULL);
	SP_CHECK(strstr(buf, "token") != NULL);

	/* Positive codes too, errors without a field, local errors, no frame. */
	memset(&f, 0, sizeof(f));
	f.type = SP_PING;
	sp_frame_strerror(SP_ERR_FRAME_TOO_LARGE, &f, buf, sizeof(buf));
	SP_CHECK(strstr(buf, "PING") != NULL);
	sp_frame_strerror(-SP_ERR_NOSPACE, &f, buf, sizeof(buf));
	SP_CHECK(buf[0] != '\0');
	sp_frame_strerror(-SP_ERR_NOMEM, NULL, buf, sizeof(buf));
	SP_CHECK(buf[0] != '\0');
	sp_frame_strerror(-SP_ERR_SHUTDOWN, NULL, buf, sizeof(buf));
	SP_CHECK(buf[0] != '\0');
	/* Truncated to the buffer, NUL-terminated. */
	memset(small, 'x', sizeof(small));
	sp_frame_strerror(r, &f, small, sizeof(small));
	SP_CHECK(memchr(small, '\0', sizeof(small)) != NULL);
}

static void test_result_get_put(void)
{
	static const struct {
		uint16_t index;
		uint8_t status;
		uint8_t wire[3];
	} cases[] = {
	        {0, 0x00, {0x00, 0x00, 0x00}},      {1, 0x01, {0x00, 0x01, 0x01}},
	        {0x1234, 0x13, {0x12, 0x34, 0x13}}, {0xFFFF, 0xFF, {0xFF, 0xFF, 0xFF}},
	        {0x00FF, 0x1A, {0x00, 0xFF, 0x1A}},
	};
	uint8_t buf[sizeof(cases) / sizeof(cases[0]) * SP_RESULT_LEN];
	sp_frame_t f;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sp_result_put(buf + i * SP_RESULT_LEN, cases[i].index, cases[i].status);
		SP_CHECK_MEM(buf + i * SP_RESULT_LEN, cases[i].wire, SP_RESULT_LEN);
	}
	memset(&f, 0, sizeof(f));
	f.results = buf;
	f.n_results = (uint32_t)(sizeof(cases) / sizeof(cases[0]));
	for (uint32_t i = 0; i < f.n_results; i++) {
		uint16_t index = 0;
		uint8_t status = 0;

		sp_result_get(&f, i, &index, &status);
		SP_CHECK_EQ_INT(index, cases[i].index);
		SP_CHECK_EQ_INT(status, cases[i].status);
	}

	/* And on a decoded SEND_RESULT. */
	{
		const struct vec *v = find_valid("send-result-results-3");
		sp_frame_t g;
		size_t used;
		uint16_t index;
		uint8_t status;

		SP_CHECK(v != NULL);
		if (v && sp_frame_decode(v->bytes, v->len, SP_MAX_FRAME_V1, &g, &used) == 1) {
			SP_CHECK_EQ_INT(g.n_results, 3);
			sp_result_get(&g, 2, &index, &status);
			SP_CHECK_EQ_INT(index, 65535);
			SP_CHECK_EQ_INT(status, 0xFF);
			sp_result_get(&g, 1, &index, &status);
			SP_CHECK_EQ_INT(index, 1);
			SP_CHECK_EQ_INT(status, SP_ST_BAD_DEVICE_TOKEN);
		}
	}
}

static void test_header_decode(void)
{
	uint8_t hdr[SP_HEADER_LEN] = {SP_SEND, 0x01, 0x00, 0x00, 0x10, 0x00};
	sp_header_t h;

	for (size_t n = 0; n < SP_HEADER_LEN; n++)
		SP_CHECK_EQ_INT(sp_header_decode(hdr, n, 65536, &h), 0);
	SP_CHECK_EQ_INT(sp_header_decode(hdr, sizeof(hdr), 4096, &h), 1);
	SP_CHECK_EQ_INT(h.type, SP_SEND);
	SP_CHECK_EQ_INT(h.flags, 0x01);
	SP_CHECK_EQ_INT(h.length, 4096);
	SP_CHECK_EQ_INT(sp_header_decode(hdr, sizeof(hdr), 4095, &h), -SP_ERR_FRAME_TOO_LARGE);
	/* The v1 limit holds whatever max_frame says. */
	hdr[2] = 0x01, hdr[3] = 0x00, hdr[4] = 0x00, hdr[5] = 0x00;
	SP_CHECK_EQ_INT(sp_header_decode(hdr, sizeof(hdr), UINT32_MAX, &h), 1);
	hdr[5] = 0x01;
	SP_CHECK_EQ_INT(sp_header_decode(hdr, sizeof(hdr), UINT32_MAX, &h),
	                -SP_ERR_FRAME_TOO_LARGE);
	/* An unknown type decodes. */
	hdr[0] = 0xFF, hdr[2] = 0, hdr[3] = 0, hdr[4] = 0, hdr[5] = 3;
	SP_CHECK_EQ_INT(sp_header_decode(hdr, sizeof(hdr), 4096, &h), 1);
	SP_CHECK_EQ_INT(h.type, 0xFF);
}

static void test_decoder_idle(void)
{
	const struct vec *v = find_valid("example-send");
	sp_decoder_t d;
	sp_frame_t f;
	size_t used;

	if (!v) {
		SP_FAIL("no example-send");
		return;
	}
	sp_decoder_init(&d, 65536);
	SP_CHECK(sp_decoder_idle(&d));
	SP_CHECK_EQ_INT(sp_decoder_feed(&d, v->bytes, 0, &used, &f), 0);
	SP_CHECK_EQ_INT(used, 0);
	SP_CHECK(sp_decoder_idle(&d));
	SP_CHECK_EQ_INT(sp_decoder_feed(&d, v->bytes, 3, &used, &f), 0);
	SP_CHECK_EQ_INT(used, 3);
	SP_CHECK(!sp_decoder_idle(&d)); /* inside the header */
	SP_CHECK_EQ_INT(sp_decoder_feed(&d, v->bytes + 3, 10, &used, &f), 0);
	SP_CHECK(!sp_decoder_idle(&d)); /* inside the body */
	SP_CHECK_EQ_INT(sp_decoder_feed(&d, v->bytes + 13, v->len - 13, &used, &f), 1);
	SP_CHECK_EQ_INT(used, v->len - 13);
	SP_CHECK(sp_decoder_idle(&d));
	sp_decoder_release(&d);
	SP_CHECK(sp_decoder_idle(&d));
}

static void test_decoder_release(void)
{
	const struct vec *big = find_valid("send-blob-16384"), *small = find_valid("example-ping");
	sp_decoder_t d;
	sp_frame_t f;
	size_t off;

	sp_decoder_release(NULL);
	if (!big || !small) {
		SP_FAIL("vectors missing");
		return;
	}
	sp_decoder_init(&d, SP_MAX_FRAME_V1);
	sp_decoder_release(&d); /* before any buffer */
	SP_CHECK(d.buf == NULL);

	off = 0;
	SP_CHECK_EQ_INT(feed_piece(&d, big->bytes, big->len, &off, &f), 1);
	check_frame(&f, big, "sp_decoder_feed before release");
	SP_CHECK(d.buf != NULL);
	SP_CHECK_EQ_INT(d.cap, big->len - SP_HEADER_LEN); /* exactly the body */

	/* A smaller frame reuses the buffer. */
	off = 0;
	SP_CHECK_EQ_INT(feed_piece(&d, small->bytes, small->len, &off, &f), 1);
	check_frame(&f, small, "sp_decoder_feed after a big frame");
	SP_CHECK_EQ_INT(d.cap, big->len - SP_HEADER_LEN);

	sp_decoder_release(&d);
	SP_CHECK(d.buf == NULL);
	SP_CHECK_EQ_INT(d.cap, 0);
	SP_CHECK(sp_decoder_idle(&d));
	sp_decoder_release(&d); /* twice */

	/* Usable after release, including in the middle of the stream. */
	off = 0;
	SP_CHECK_EQ_INT(feed_piece(&d, small->bytes, small->len, &off, &f), 1);
	check_frame(&f, small, "sp_decoder_feed after release");
	SP_CHECK_EQ_INT(d.cap, small->len - SP_HEADER_LEN);
	off = 0;
	SP_CHECK_EQ_INT(feed_piece(&d, big->bytes, big->len, &off, &f), 1);
	check_frame(&f, big, "sp_decoder_feed growing after release");
	sp_decoder_release(&d);
}

static void test_decoder_max_frame_change(void)
{
	const struct vec *v = find_valid("send-blob-16384"), *w = find_valid("example-welcome");
	sp_decoder_t d;
	sp_frame_t f;
	size_t off = 0, used;

	if (!v || !w) {
		SP_FAIL("vectors missing");
		return;
	}
	/* Before WELCOME: 1,024 bytes; a WELCOME fits, a big SEND does not until raised. */
	sp_decoder_init(&d, SP_PREHELLO_MAX_FRAME);
	SP_CHECK_EQ_INT(feed_piece(&d, w->bytes, w->len, &off, &f), 1);
	d.max_frame = 65536;
	off = 0;
	SP_CHECK_EQ_INT(feed_piece(&d, v->bytes, v->len, &off, &f), 1);
	check_frame(&f, v, "sp_decoder_feed with a raised max_frame");
	d.max_frame = SP_PREHELLO_MAX_FRAME;
	SP_CHECK_EQ_INT(sp_decoder_feed(&d, v->bytes, v->len, &used, &f), -SP_ERR_FRAME_TOO_LARGE);
	/* Stuck, whatever max_frame says now. */
	d.max_frame = 65536;
	SP_CHECK_EQ_INT(sp_decoder_feed(&d, w->bytes, w->len, &used, &f), -SP_ERR_FRAME_TOO_LARGE);
	SP_CHECK_EQ_INT(used, 0);
	sp_decoder_release(&d);
}

/* ---- Main -------------------------------------------------------------------------------------
 */

int main(void)
{
	char name[160];

	SP_RUN(test_load_vectors);
	if (vectors_loaded) {
		for (size_t i = 0; i < n_valid; i++) {
			cur = &valid_v[i];
			snprintf(name, sizeof(name), "valid %s", cur->name);
			sp_test_run(name, run_valid);
		}
		for (size_t i = 0; i < n_invalid; i++) {
			cur = &invalid_v[i];
			snprintf(name, sizeof(name), "invalid %s (%s)", cur->name,
			         error_names[cur->error]);
			sp_test_run(name, run_invalid);
		}
		SP_RUN(test_concatenated_frame_decode);
		SP_RUN(test_concatenated_stream);
		SP_RUN(test_strerror);
		SP_RUN(test_result_get_put);
		SP_RUN(test_decoder_idle);
		SP_RUN(test_decoder_release);
		SP_RUN(test_decoder_max_frame_change);
	}
	SP_RUN(test_encode_roundtrip_all_types);
	SP_RUN(test_encode_nospace);
	SP_RUN(test_encode_missing_field);
	SP_RUN(test_encode_field_not_allowed);
	SP_RUN(test_encode_bad_values);
	SP_RUN(test_encode_null_pointer);
	SP_RUN(test_encode_unknown_type);
	SP_RUN(test_encode_too_large);
	SP_RUN(test_names);
	SP_RUN(test_error_is_fatal);
	SP_RUN(test_header_decode);

	free_vectors(valid_v, n_valid);
	free_vectors(invalid_v, n_invalid);
	return sp_test_done();
}
