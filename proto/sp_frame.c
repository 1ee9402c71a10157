/*
 * sp_frame.c: the v1 codec. Two const tables drive everything: field_desc[] says how each
 * field id is stored and which lengths and values are legal, frame_desc[] says which fields
 * each frame type allows and requires. Decoding and encoding both check values through
 * field_check(), so the encoder cannot produce what the decoder refuses.
 */
#include "sp_frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum field_kind { K_NONE = 0, K_U8, K_U16, K_U32, K_BYTES };

/* Extra value rules beyond [min, max]. */
enum field_rule { R_NONE = 0, R_PRIORITY, R_PRINTABLE };

#define NO_OFF 0xFFFF

struct field_desc {
	const char *name;
	uint8_t kind;
	uint8_t rule;
	uint16_t unit; /* K_BYTES: length must be a multiple of unit */
	uint32_t min;  /* K_U*: value bounds; K_BYTES: length bounds */
	uint32_t max;
	uint16_t off;     /* offset of the value (K_U*) or pointer (K_BYTES) in sp_frame_t */
	uint16_t len_off; /* K_BYTES: offset of the uint32_t length/count, or NO_OFF if fixed */
};

#define F_INT(n, k, lo, hi, member, r)                                                             \
	{                                                                                          \
		n, k, r, 0, lo, hi, offsetof(sp_frame_t, member), NO_OFF                           \
	}
#define F_FIXED(n, size, member)                                                                   \
	{                                                                                          \
		n, K_BYTES, R_NONE, size, size, size, offsetof(sp_frame_t, member), NO_OFF         \
	}
#define F_VAR(n, unit, lo, hi, member, lenmember, r)                                               \
	{                                                                                          \
		n, K_BYTES, r, unit, lo, hi, offsetof(sp_frame_t, member),                         \
		        offsetof(sp_frame_t, lenmember)                                            \
	}

static const struct field_desc field_desc[SP_FIELD_ID_MAX + 1] = {
        [SP_F_MSG_ID] = F_FIXED("msg_id", SP_MSG_ID_LEN, msg_id),
        [SP_F_RECIPIENTS] =
                F_VAR("recipients", SP_TOKEN_LEN, SP_TOKEN_LEN, SP_TOKEN_LEN *SP_MAX_RECIPIENTS_V1,
                      recipients, n_recipients, R_NONE),
        [SP_F_TOKEN] = F_FIXED("token", SP_TOKEN_LEN, token),
        [SP_F_TTL] = F_INT("ttl", K_U32, 0, UINT32_MAX, ttl, R_NONE),
        [SP_F_PRIORITY] = F_INT("priority", K_U8, 1, 10, priority, R_PRIORITY),
        [SP_F_COLLAPSE_ID] =
                F_VAR("collapse_id", 1, 1, SP_COLLAPSE_MAX, collapse_id, collapse_id_len, R_NONE),
        [SP_F_BLOB] = F_VAR("blob", 1, 0, SP_MAX_FRAME_V1, blob, blob_len, R_NONE),
        [SP_F_RESULTS] = F_VAR("results", SP_RESULT_LEN, SP_RESULT_LEN,
                               SP_RESULT_LEN *SP_MAX_RECIPIENTS_V1, results, n_results, R_NONE),
        [SP_F_CODE] = F_INT("code", K_U16, 1, UINT16_MAX, code, R_NONE),
        [SP_F_REASON] = F_VAR("reason", 1, 0, SP_REASON_MAX, reason, reason_len, R_NONE),
        [SP_F_VERSION] = F_INT("version", K_U16, 1, UINT16_MAX, version, R_NONE),
        [SP_F_CAPABILITIES] = F_INT("capabilities", K_U32, 0, UINT32_MAX, capabilities, R_NONE),
        [SP_F_KEEPALIVE] = F_INT("keepalive", K_U16, 1, UINT16_MAX, keepalive, R_NONE),
        [SP_F_WINDOW] = F_INT("window", K_U16, 1, UINT16_MAX, window, R_NONE),
        [SP_F_MAX_FRAME] =
                F_INT("max_frame", K_U32, SP_MIN_MAX_FRAME, SP_MAX_FRAME_V1, max_frame, R_NONE),
        [SP_F_MAX_BLOB] = F_INT("max_blob", K_U32, 1, SP_MAX_FRAME_V1, max_blob, R_NONE),
        [SP_F_MAX_RECIPIENTS] =
                F_INT("max_recipients", K_U16, 1, UINT16_MAX, max_recipients, R_NONE),
        [SP_F_KEEPALIVE_MIN] = F_INT("keepalive_min", K_U16, 1, UINT16_MAX, keepalive_min, R_NONE),
        [SP_F_KEEPALIVE_MAX] = F_INT("keepalive_max", K_U16, 1, UINT16_MAX, keepalive_max, R_NONE),
        [SP_F_SEND_WINDOW] = F_INT("send_window", K_U16, 1, UINT16_MAX, send_window, R_NONE),
        [SP_F_RETRY_AFTER] = F_INT("retry_after", K_U32, 0, UINT32_MAX, retry_after, R_NONE),
        [SP_F_DATA] = F_FIXED("data", SP_PING_LEN, data),
        [SP_F_MSG_IDS] = F_VAR("msg_ids", SP_MSG_ID_LEN, SP_MSG_ID_LEN,
                               SP_MSG_ID_LEN *SP_MAX_RECIPIENTS_V1, msg_ids, n_msg_ids, R_NONE),
        [SP_F_FRAME_TYPE] = F_INT("frame_type", K_U8, 0, UINT8_MAX, frame_type, R_NONE),
        [SP_F_RESUME_ID] = F_FIXED("resume_id", SP_MSG_ID_LEN, resume_id),
        [SP_F_AGENT] = F_VAR("agent", 1, 1, SP_AGENT_MAX, agent, agent_len, R_PRINTABLE),
        [SP_F_SUB_ID] = F_FIXED("sub_id", SP_SUB_ID_LEN, sub_id),
        [SP_F_APP_KEY] = F_FIXED("app_key", SP_APP_KEY_LEN, app_key),
        [SP_F_ENDPOINT] =
                F_VAR("endpoint", 1, 1, SP_ENDPOINT_MAX, endpoint, endpoint_len, R_PRINTABLE),
        [SP_F_STATUS] = F_INT("status", K_U8, 0, UINT8_MAX, status, R_NONE),
        [SP_F_SUB_IDS] = F_VAR("sub_ids", SP_SUB_ID_LEN, SP_SUB_ID_LEN,
                               SP_SUB_ID_LEN *SP_MAX_RECIPIENTS_V1, sub_ids, n_sub_ids, R_NONE),
        [SP_F_DIR_CARD] = F_VAR("dir_card", 1, 1, SP_DIR_CARD_MAX, dir_card, dir_card_len, R_NONE),
        [SP_F_HANDLE] = F_VAR("handle", 1, 1, SP_DIR_HANDLE_MAX, handle, handle_len, R_PRINTABLE),
        [SP_F_TREE_SIZE] = F_FIXED("tree_size", SP_DIR_U64_LEN, tree_size),
        [SP_F_DIR_ENTRY] =
                F_VAR("dir_entry", 1, 1, SP_DIR_ENTRY_MAX, dir_entry, dir_entry_len, R_NONE),
        [SP_F_LEAF_INDEX] = F_FIXED("leaf_index", SP_DIR_U64_LEN, leaf_index),
        [SP_F_TREE_HEAD] = F_VAR("tree_head", 1, SP_DIR_HEAD_MIN, SP_DIR_HEAD_MAX, tree_head,
                                 tree_head_len, R_NONE),
        [SP_F_INCLUSION] =
                F_VAR("inclusion", 1, 1, SP_DIR_PROOF_MAX, inclusion, inclusion_len, R_NONE),
        [SP_F_CONSISTENCY] =
                F_VAR("consistency", 1, 1, SP_DIR_PROOF_MAX, consistency, consistency_len, R_NONE),
        [SP_F_CSR] = F_VAR("csr", 1, 1, SP_CSR_MAX, csr, csr_len, R_NONE),
        [SP_F_CERT_CHAIN] =
                F_VAR("cert_chain", 1, 1, SP_CHAIN_MAX, cert_chain, cert_chain_len, R_NONE),
        [SP_F_NOT_AFTER] = F_INT("not_after", K_U32, 0, UINT32_MAX, not_after, R_NONE),
        [SP_F_ANON_MODE] = F_INT("anon_mode", K_U8, 0, SP_ANON_ANYONE, anon_mode, R_NONE),
        [SP_F_ACCESS_VERIFIERS] = F_VAR("access_verifiers", SP_ACCESS_KEY_LEN, SP_ACCESS_KEY_LEN,
                                        SP_ACCESS_KEY_LEN *SP_ACCESS_SET_MAX, access_verifiers,
                                        n_access_verifiers, R_NONE),
        [SP_F_ACCESS_KEYS] =
                F_VAR("access_keys", SP_ACCESS_KEY_LEN, SP_ACCESS_KEY_LEN,
                      SP_ACCESS_KEY_LEN *SP_MAX_RECIPIENTS_V1, access_keys, n_access_keys, R_NONE),
        [SP_F_HIST_LEFT] = F_INT("hist_left", K_U32, 0, UINT32_MAX, hist_left, R_NONE),
};

struct frame_desc {
	const char *name;
	uint64_t allowed;
	uint64_t required;
	uint8_t flags; /* the flag bits v1 defines for this type; others are cleared */
};

#define B(id) SP_BIT(SP_F_##id)

static const struct frame_desc frame_desc[SP_FRAME_TYPE_MAX + 1] = {
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
        [SP_ERR_MALFORMED_FRAME] = "MALFORMED_FRAME",
        [SP_ERR_FRAME_TOO_LARGE] = "FRAME_TOO_LARGE",
        [SP_ERR_UNKNOWN_FRAME_TYPE] = "UNKNOWN_FRAME_TYPE",
        [SP_ERR_UNEXPECTED_FRAME] = "UNEXPECTED_FRAME",
        [SP_ERR_MISSING_FIELD] = "MISSING_FIELD",
        [SP_ERR_BAD_FIELD] = "BAD_FIELD",
        [SP_ERR_DUPLICATE_FIELD] = "DUPLICATE_FIELD",
        [SP_ERR_UNSUPPORTED_FIELD] = "UNSUPPORTED_FIELD",
        [SP_ERR_UNSUPPORTED_VERSION] = "UNSUPPORTED_VERSION",
        [SP_ERR_HELLO_TIMEOUT] = "HELLO_TIMEOUT",
        [SP_ERR_IDLE_TIMEOUT] = "IDLE_TIMEOUT",
        [SP_ERR_SLOW_CONSUMER] = "SLOW_CONSUMER",
        [SP_ERR_TOO_MANY_ERRORS] = "TOO_MANY_ERRORS",
        [SP_ERR_INTERNAL_ERROR] = "INTERNAL_ERROR",
        [SP_ERR_SHUTDOWN] = "SHUTDOWN",
        [SP_ERR_REPLACED] = "REPLACED",
        [SP_ERR_CERT_REVOKED] = "CERT_REVOKED",
        [SP_ERR_RENEW_REFUSED] = "RENEW_REFUSED",
        [SP_ERR_RENEW_UNAVAILABLE] = "RENEW_UNAVAILABLE",
        [SP_ERR_ANONYMOUS] = "ANONYMOUS",
};

static const char *const status_names[] = {
        [SP_ST_DELIVERED] = "DELIVERED",
        [SP_ST_QUEUED] = "QUEUED",
        [SP_ST_BAD_DEVICE_TOKEN] = "BAD_DEVICE_TOKEN",
        [SP_ST_PAYLOAD_TOO_LARGE] = "PAYLOAD_TOO_LARGE",
        [SP_ST_TOO_MANY_RECIPIENTS] = "TOO_MANY_RECIPIENTS",
        [SP_ST_TOO_MANY_REQUESTS] = "TOO_MANY_REQUESTS",
        [SP_ST_QUOTA_EXCEEDED] = "QUOTA_EXCEEDED",
        [SP_ST_EXPIRED] = "EXPIRED",
        [SP_ST_DEVICE_OFFLINE] = "DEVICE_OFFLINE",
        [SP_ST_FORBIDDEN] = "FORBIDDEN",
        [SP_ST_TRY_LATER] = "TRY_LATER",
        [SP_ST_SHUTDOWN] = "SHUTDOWN",
        [SP_ST_INTERNAL_ERROR] = "INTERNAL_ERROR",
        [SP_ST_ACCESS_DENIED] = "ACCESS_DENIED",
        [SP_ST_BAD_SIZE] = "BAD_SIZE",
};

#define NAME_OF(table, i) ((i) < sizeof(table) / sizeof(table[0]) && table[i] ? table[i] : "?")

const char *sp_frame_type_name(unsigned type)
{
	return type <= SP_FRAME_TYPE_MAX && frame_desc[type].name ? frame_desc[type].name : "?";
}

const char *sp_field_name(unsigned id)
{
	return id <= SP_FIELD_ID_MAX && field_desc[id].name ? field_desc[id].name : "?";
}

const char *sp_error_name(unsigned code)
{
	return NAME_OF(error_names, code);
}

const char *sp_status_name(unsigned status)
{
	return NAME_OF(status_names, status);
}

int sp_error_is_fatal(unsigned code)
{
	/* Only an unknown frame type leaves the connection usable (PROTOCOL.md, "Errors"). */
	return code != SP_ERR_UNKNOWN_FRAME_TYPE;
}

static uint32_t get_be(const uint8_t *p, unsigned n)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static void put_be(uint8_t *p, uint32_t v, unsigned n)
{
	for (unsigned i = n; i-- > 0; v >>= 8)
		p[i] = (uint8_t)v;
}

static unsigned int_width(uint8_t kind)
{
	return kind == K_U8 ? 1 : kind == K_U16 ? 2 : 4;
}

/* Whether a value (K_U*) or a byte string (K_BYTES) is legal for the field. */
static int field_check(const struct field_desc *d, uint32_t v, const uint8_t *p)
{
	if (d->kind == K_BYTES) {
		if (v < d->min || v > d->max || v % d->unit != 0)
			return 0;
		if (d->rule == R_PRINTABLE) {
			for (uint32_t i = 0; i < v; i++)
				if (p[i] < 0x20 || p[i] > 0x7E)
					return 0;
		}
		return 1;
	}
	if (v < d->min || v > d->max)
		return 0;
	if (d->rule == R_PRIORITY)
		return v == SP_PRIORITY_LOW || v == SP_PRIORITY_NORMAL || v == SP_PRIORITY_HIGH;
	return 1;
}

/* Field lengths: a 1, 2 or 4-byte varint whose top two bits give the form. */
static unsigned varint_size(uint32_t v)
{
	return v < 64 ? 1 : v < 16384 ? 2 : 4;
}

static int varint_get(const uint8_t *p, size_t avail, uint32_t *v, unsigned *n)
{
	static const uint32_t min_for_form[] = {0, 64, 0, 16384};
	unsigned form = p[0] >> 6;
	unsigned size;

	if (form == 3)
		return -SP_ERR_MALFORMED_FRAME; /* the 8-byte form is not used in v1 */
	size = 1u << form;
	if (size > avail)
		return -SP_ERR_MALFORMED_FRAME;
	*v = get_be(p, size) & ((size == 4 ? 0x3FFFFFFFu : size == 2 ? 0x3FFFu : 0x3Fu));
	if (*v < min_for_form[size - 1])
		return -SP_ERR_MALFORMED_FRAME; /* not the shortest form */
	*n = size;
	return 0;
}

static void varint_put(uint8_t *p, uint32_t v)
{
	switch (varint_size(v)) {
	case 1:
		p[0] = (uint8_t)v;
		break;
	case 2:
		put_be(p, v | 0x4000u, 2);
		break;
	default:
		put_be(p, v | 0x80000000u, 4);
		break;
	}
}

int sp_header_decode(const uint8_t *p, size_t len, uint32_t max_frame, sp_header_t *h)
{
	if (len < SP_HEADER_LEN)
		return 0;
	h->type = p[0];
	h->flags = p[1];
	h->length = get_be(p + 2, 4);
	if (h->length > max_frame || h->length > SP_MAX_FRAME_V1)
		return -SP_ERR_FRAME_TOO_LARGE;
	return 1;
}

static int frame_check_cross(sp_frame_t *f)
{
	if (f->type == SP_WELCOME) {
		if (f->max_blob > f->max_frame) {
			f->err_field = SP_F_MAX_BLOB;
			return -SP_ERR_BAD_FIELD;
		}
		if ((uint64_t)f->max_blob + (uint64_t)SP_TOKEN_LEN * f->max_recipients + 128 >
		    f->max_frame) {
			/* A SEND of max_recipients and max_blob must fit (PROTOCOL.md 5.2). */
			f->err_field = SP_F_MAX_FRAME;
			return -SP_ERR_BAD_FIELD;
		}
		if (f->keepalive_min > f->keepalive_max) {
			f->err_field = SP_F_KEEPALIVE_MAX;
			return -SP_ERR_BAD_FIELD;
		}
		if (f->keepalive < f->keepalive_min || f->keepalive > f->keepalive_max) {
			f->err_field = SP_F_KEEPALIVE;
			return -SP_ERR_BAD_FIELD;
		}
	}
	if (f->type == SP_SEND && (f->fields & SP_BIT(SP_F_ACCESS_KEYS)) &&
	    (f->fields & SP_BIT(SP_F_RECIPIENTS)) && f->n_access_keys != f->n_recipients) {
		/* One access key per recipient, in the same order (PROTOCOL.md 17.3). */
		f->err_field = SP_F_ACCESS_KEYS;
		return -SP_ERR_BAD_FIELD;
	}
	return 0;
}

static int missing_field(sp_frame_t *f, uint64_t missing)
{
	for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++) {
		if (missing & SP_BIT(id)) {
			f->err_field = (uint8_t)id;
			break;
		}
	}
	return -SP_ERR_MISSING_FIELD;
}

int sp_body_decode(const sp_header_t *h, const uint8_t *body, sp_frame_t *f)
{
	const struct frame_desc *fd;
	size_t pos = 0;

	memset(f, 0, sizeof(*f));
	f->type = h->type;
	f->flags = h->flags;
	if (h->type > SP_FRAME_TYPE_MAX || !frame_desc[h->type].name)
		return -SP_ERR_UNKNOWN_FRAME_TYPE;
	fd = &frame_desc[h->type];
	f->flags = h->flags & fd->flags;

	while (pos < h->length) {
		const struct field_desc *d;
		unsigned id = body[pos++], n;
		uint32_t flen;
		int r;

		if (pos == h->length) {
			f->err_field = (uint8_t)id;
			return -SP_ERR_MALFORMED_FRAME;
		}
		r = varint_get(body + pos, h->length - pos, &flen, &n);
		if (r < 0 || flen > h->length - pos - n) {
			f->err_field = (uint8_t)id;
			return -SP_ERR_MALFORMED_FRAME;
		}
		pos += n;
		if (!(fd->allowed & (id <= SP_FIELD_ID_MAX ? SP_BIT(id) : 0))) {
			if (id & SP_FIELD_CRITICAL) {
				f->err_field = (uint8_t)id;
				return -SP_ERR_UNSUPPORTED_FIELD;
			}
			pos += flen; /* unknown here: skipped, so later versions can add fields */
			continue;
		}
		d = &field_desc[id];
		if (f->fields & SP_BIT(id)) {
			f->err_field = (uint8_t)id;
			return -SP_ERR_DUPLICATE_FIELD;
		}
		if (d->kind == K_BYTES) {
			if (!field_check(d, flen, body + pos)) {
				f->err_field = (uint8_t)id;
				return -SP_ERR_BAD_FIELD;
			}
			memcpy((char *)f + d->off, &(const uint8_t *){body + pos},
			       sizeof(const uint8_t *));
			if (d->len_off != NO_OFF) {
				uint32_t count = flen / d->unit;
				memcpy((char *)f + d->len_off, &count, sizeof(count));
			}
		} else {
			unsigned w = int_width(d->kind);
			uint32_t v;

			if (flen != w || !field_check(d, v = get_be(body + pos, w), NULL)) {
				f->err_field = (uint8_t)id;
				return -SP_ERR_BAD_FIELD;
			}
			if (w == 1)
				*((uint8_t *)f + d->off) = (uint8_t)v;
			else if (w == 2)
				memcpy((char *)f + d->off, &(uint16_t){(uint16_t)v}, 2);
			else
				memcpy((char *)f + d->off, &v, 4);
		}
		f->fields |= SP_BIT(id);
		pos += flen;
	}
	if ((f->fields & fd->required) != fd->required)
		return missing_field(f, fd->required & ~f->fields);
	if (!(f->fields & SP_BIT(SP_F_PRIORITY)) && (fd->allowed & SP_BIT(SP_F_PRIORITY)))
		f->priority = SP_PRIORITY_HIGH;
	return frame_check_cross(f) < 0 ? -SP_ERR_BAD_FIELD : 1;
}

int sp_frame_decode(const uint8_t *p, size_t len, uint32_t max_frame, sp_frame_t *f, size_t *used)
{
	sp_header_t h;
	int r;

	*used = 0;
	r = sp_header_decode(p, len, max_frame, &h);
	if (r <= 0) {
		if (r < 0) {
			memset(f, 0, sizeof(*f));
			f->type = p[0];
			f->flags = p[1];
		}
		return r;
	}
	if (len - SP_HEADER_LEN < h.length)
		return 0;
	*used = SP_HEADER_LEN + (size_t)h.length;
	return sp_body_decode(&h, p + SP_HEADER_LEN, f);
}

void sp_result_get(const sp_frame_t *f, uint32_t i, uint16_t *index, uint8_t *status)
{
	const uint8_t *e = f->results + (size_t)i * SP_RESULT_LEN;

	*index = (uint16_t)get_be(e, 2);
	*status = e[2];
}

void sp_result_put(uint8_t *dst, uint16_t index, uint8_t status)
{
	put_be(dst, index, 2);
	dst[2] = status;
}

/* The value or byte string of field d in f: returns its wire length. */
static uint32_t field_value(const sp_frame_t *f, const struct field_desc *d, uint32_t *v,
                            const uint8_t **p)
{
	const char *base = (const char *)f;

	if (d->kind == K_BYTES) {
		uint32_t count = 1;

		memcpy(p, base + d->off, sizeof(*p));
		if (d->len_off == NO_OFF)
			return d->min;
		memcpy(&count, base + d->len_off, sizeof(count));
		/* Counts of arrays are in units; a count too large to be a length is refused. */
		if (count > UINT32_MAX / d->unit)
			return UINT32_MAX;
		return count * d->unit;
	}
	if (d->kind == K_U8)
		*v = *((const uint8_t *)base + d->off);
	else if (d->kind == K_U16) {
		uint16_t v16;

		memcpy(&v16, base + d->off, 2);
		*v = v16;
	} else
		memcpy(v, base + d->off, 4);
	return int_width(d->kind);
}

int sp_frame_encode(sp_frame_t *f, uint8_t *buf, size_t cap, size_t *len)
{
	const struct frame_desc *fd;
	uint64_t body = 0;
	uint8_t *w;

	*len = 0;
	f->err_field = 0;
	if (f->type > SP_FRAME_TYPE_MAX || !frame_desc[f->type].name)
		return -SP_ERR_UNKNOWN_FRAME_TYPE;
	fd = &frame_desc[f->type];
	if ((f->fields & fd->required) != fd->required)
		return missing_field(f, fd->required & ~f->fields);

	/* Pass 1: check every present field and size the body. */
	for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++) {
		const struct field_desc *d = &field_desc[id];
		const uint8_t *p = NULL;
		uint32_t v = 0, flen;

		if (!(f->fields & SP_BIT(id)))
			continue;
		flen = field_value(f, d, &v, &p);
		if (!(fd->allowed & SP_BIT(id)) || (d->kind == K_BYTES && flen > 0 && !p) ||
		    !field_check(d, d->kind == K_BYTES ? flen : v, p)) {
			f->err_field = (uint8_t)id;
			return -SP_ERR_BAD_FIELD;
		}
		body += 1 + varint_size(flen) + (uint64_t)flen;
	}
	if (frame_check_cross(f) < 0)
		return -SP_ERR_BAD_FIELD;
	if (body > SP_MAX_FRAME_V1)
		return -SP_ERR_FRAME_TOO_LARGE;
	*len = SP_HEADER_LEN + (size_t)body;
	if (cap < *len)
		return -SP_ERR_NOSPACE;

	/* Pass 2: write. */
	buf[0] = f->type;
	buf[1] = f->flags & fd->flags;
	put_be(buf + 2, (uint32_t)body, 4);
	w = buf + SP_HEADER_LEN;
	for (unsigned id = 1; id <= SP_FIELD_ID_MAX; id++) {
		const struct field_desc *d = &field_desc[id];
		const uint8_t *p = NULL;
		uint32_t v = 0, flen;

		if (!(f->fields & SP_BIT(id)))
			continue;
		flen = field_value(f, d, &v, &p);
		*w++ = (uint8_t)id;
		varint_put(w, flen);
		w += varint_size(flen);
		if (d->kind == K_BYTES) {
			if (flen)
				memcpy(w, p, flen);
		} else {
			put_be(w, v, flen);
		}
		w += flen;
	}
	return 0;
}

enum { DS_HEADER = 0, DS_BODY, DS_SKIP, DS_FAILED };

void sp_decoder_init(sp_decoder_t *d, uint32_t max_frame)
{
	memset(d, 0, sizeof(*d));
	d->max_frame = max_frame;
}

int sp_decoder_idle(const sp_decoder_t *d)
{
	return d->state == DS_HEADER && d->hdr_have == 0;
}

void sp_decoder_release(sp_decoder_t *d)
{
	if (!d)
		return;
	free(d->buf);
	d->buf = NULL;
	d->cap = 0;
}

int sp_decoder_feed(sp_decoder_t *d, const uint8_t *in, size_t len, size_t *used, sp_frame_t *f)
{
	size_t pos = 0;
	int r;

	*used = 0;
	if (d->state == DS_FAILED)
		return d->err;

	if (d->state == DS_HEADER) {
		size_t take = SP_HEADER_LEN - d->hdr_have;

		if (take > len)
			take = len;
		memcpy(d->hdr + d->hdr_have, in, take);
		d->hdr_have = (uint8_t)(d->hdr_have + take);
		pos = take;
		*used = pos;
		if (d->hdr_have < SP_HEADER_LEN)
			return 0;
		r = sp_header_decode(d->hdr, SP_HEADER_LEN, d->max_frame, &d->h);
		if (r < 0) {
			memset(f, 0, sizeof(*f));
			f->type = d->hdr[0];
			f->flags = d->hdr[1];
			d->state = DS_FAILED;
			return d->err = r;
		}
		d->body_have = 0;
		if (d->h.type > SP_FRAME_TYPE_MAX || !frame_desc[d->h.type].name) {
			d->state = DS_SKIP;
		} else {
			if (d->h.length > d->cap) {
				uint8_t *nb = malloc(d->h.length);

				if (!nb) {
					d->state = DS_FAILED;
					return d->err = -SP_ERR_NOMEM;
				}
				free(d->buf);
				d->buf = nb;
				d->cap = d->h.length;
			}
			d->state = DS_BODY;
		}
	}

	/* DS_BODY or DS_SKIP: take up to the rest of the body. */
	{
		size_t take = d->h.length - d->body_have;

		if (take > len - pos)
			take = len - pos;
		if (d->state == DS_BODY && take)
			memcpy(d->buf + d->body_have, in + pos, take);
		d->body_have += (uint32_t)take;
		pos += take;
		*used = pos;
		if (d->body_have < d->h.length)
			return 0;
	}
	d->state = DS_HEADER;
	d->hdr_have = 0;
	return sp_body_decode(&d->h, d->buf, f);
}

char *sp_frame_strerror(int err, const sp_frame_t *f, char *dst, size_t dstlen)
{
	unsigned code = (unsigned)(err < 0 ? -err : err);
	const char *what;

	switch (code) {
	case SP_ERR_MALFORMED_FRAME:
		what = "is not a well-formed field sequence";
		break;
	case SP_ERR_FRAME_TOO_LARGE:
		what = "is larger than the negotiated max_frame";
		break;
	case SP_ERR_UNKNOWN_FRAME_TYPE:
		what = "is of a type this version does not know";
		break;
	case SP_ERR_MISSING_FIELD:
		what = "lacks a required field";
		break;
	case SP_ERR_BAD_FIELD:
		what = "has a field with a bad length or value";
		break;
	case SP_ERR_DUPLICATE_FIELD:
		what = "repeats a field";
		break;
	case SP_ERR_UNSUPPORTED_FIELD:
		what = "carries an unknown critical field";
		break;
	case SP_ERR_NOSPACE:
		what = "does not fit the buffer";
		break;
	case SP_ERR_NOMEM:
		what = "could not be buffered (out of memory)";
		break;
	default:
		what = sp_error_name(code);
		break;
	}
	if (!f)
		snprintf(dst, dstlen, "frame %s", what);
	else if (!strcmp(sp_frame_type_name(f->type), "?"))
		snprintf(dst, dstlen, "frame (type 0x%02x) %s", f->type, what);
	else if (f->err_field)
		snprintf(dst, dstlen, "%s frame (type 0x%02x) %s: field %s (0x%02x)",
		         sp_frame_type_name(f->type), f->type, what, sp_field_name(f->err_field),
		         f->err_field);
	else
		snprintf(dst, dstlen, "%s frame (type 0x%02x) %s", sp_frame_type_name(f->type),
		         f->type, what);
	return dst;
}
