/*
 * fuzz-frame-decode.c: fuzz target for the v1 frame decoder.
 *
 * Input: byte 0 picks the decoder's max_frame and byte 1 seeds the chunk sizes of the
 * streaming run; the rest is a byte stream of frames. For every frame it checks that
 *   - the one-shot decoder and the streaming decoder (fed in uneven chunks) agree, frame by
 *     frame, on result, type and fields;
 *   - whatever the decoder accepts, the encoder accepts, and decoding that encoding gives the
 *     same frame again (so decode and encode share one idea of validity).
 * Any disagreement aborts, which libFuzzer and the replay driver report as a crash.
 */
#include "sp_frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAMES 64

static void fail(const char *what)
{
	fprintf(stderr, "fuzz-frame-decode: %s\n", what);
	abort();
}

static int bytes_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
	return n == 0 || (a && b && memcmp(a, b, n) == 0);
}

static int frames_equal(const sp_frame_t *a, const sp_frame_t *b)
{
	return a->type == b->type && a->flags == b->flags && a->fields == b->fields &&
	       bytes_eq(a->msg_id, b->msg_id, a->msg_id ? SP_MSG_ID_LEN : 0) &&
	       bytes_eq(a->token, b->token, a->token ? SP_TOKEN_LEN : 0) &&
	       bytes_eq(a->resume_id, b->resume_id, a->resume_id ? SP_MSG_ID_LEN : 0) &&
	       bytes_eq(a->data, b->data, a->data ? SP_PING_LEN : 0) &&
	       a->n_recipients == b->n_recipients &&
	       bytes_eq(a->recipients, b->recipients, (size_t)a->n_recipients * SP_TOKEN_LEN) &&
	       a->n_msg_ids == b->n_msg_ids &&
	       bytes_eq(a->msg_ids, b->msg_ids, (size_t)a->n_msg_ids * SP_MSG_ID_LEN) &&
	       a->n_results == b->n_results &&
	       bytes_eq(a->results, b->results, (size_t)a->n_results * SP_RESULT_LEN) &&
	       a->blob_len == b->blob_len && bytes_eq(a->blob, b->blob, a->blob_len) &&
	       a->collapse_id_len == b->collapse_id_len &&
	       bytes_eq(a->collapse_id, b->collapse_id, a->collapse_id_len) &&
	       a->reason_len == b->reason_len && bytes_eq(a->reason, b->reason, a->reason_len) &&
	       a->agent_len == b->agent_len && bytes_eq(a->agent, b->agent, a->agent_len) &&
	       a->ttl == b->ttl && a->capabilities == b->capabilities &&
	       a->max_frame == b->max_frame && a->max_blob == b->max_blob &&
	       a->retry_after == b->retry_after && a->version == b->version &&
	       a->keepalive == b->keepalive && a->keepalive_min == b->keepalive_min &&
	       a->keepalive_max == b->keepalive_max && a->window == b->window &&
	       a->send_window == b->send_window && a->max_recipients == b->max_recipients &&
	       a->code == b->code && a->priority == b->priority && a->frame_type == b->frame_type;
}

/* A decoded frame must re-encode, and the encoding must decode to the same frame. */
static void check_reencode(const sp_frame_t *f, uint32_t max_frame)
{
	sp_frame_t copy = *f, again;
	size_t need = 0, used = 0;
	uint8_t *buf;
	int r;

	r = sp_frame_encode(&copy, NULL, 0, &need);
	if (r != -SP_ERR_NOSPACE)
		fail("the encoder refuses a frame the decoder accepted");
	buf = malloc(need);
	if (!buf)
		return;
	if (sp_frame_encode(&copy, buf, need, &used) != 0 || used != need)
		fail("the encoder failed with the size it asked for");
	if (sp_frame_decode(buf, need, max_frame, &again, &used) != 1 || used != need)
		fail("the encoder's output does not decode");
	if (!frames_equal(f, &again))
		fail("decode(encode(frame)) differs from frame");
	free(buf);
}

struct result {
	int r;
	sp_frame_t f;
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t limits[] = {SP_PREHELLO_MAX_FRAME, SP_MIN_MAX_FRAME, 65536,
	                                  SP_MAX_FRAME_V1};
	struct result *oneshot;
	size_t n_oneshot = 0, pos = 0;
	uint32_t max_frame;
	unsigned seed;
	sp_decoder_t d;

	if (size < 2)
		return 0;
	max_frame = limits[data[0] & 3];
	seed = data[1];
	data += 2;
	size -= 2;

	oneshot = calloc(MAX_FRAMES, sizeof(*oneshot));
	if (!oneshot)
		return 0;

	/* One-shot decoding over the contiguous input. */
	while (pos < size && n_oneshot < MAX_FRAMES) {
		struct result *res = &oneshot[n_oneshot];
		size_t used = 0;

		res->r = sp_frame_decode(data + pos, size - pos, max_frame, &res->f, &used);
		if (res->r == 0)
			break;
		n_oneshot++;
		if (res->r == 1)
			check_reencode(&res->f, max_frame);
		if (res->r < 0 && used == 0)
			break; /* FRAME_TOO_LARGE: no resynchronisation */
		if (used == 0 || used > size - pos)
			fail("sp_frame_decode consumed nothing or too much");
		pos += used;
	}

	/* Streaming over the same bytes in uneven chunks must give the same sequence. */
	sp_decoder_init(&d, max_frame);
	pos = 0;
	for (size_t i = 0; i < n_oneshot;) {
		size_t chunk, used = 0;
		sp_frame_t f;
		int r;

		seed = seed * 1103515245u + 12345u;
		chunk = 1 + (seed >> 16) % 97;
		if (chunk > size - pos)
			chunk = size - pos;
		r = sp_decoder_feed(&d, data + pos, chunk, &used, &f);
		if (used > chunk)
			fail("sp_decoder_feed consumed more than it was given");
		pos += used;
		if (r == 0) {
			if (used != chunk)
				fail("sp_decoder_feed asked for more without taking its input");
			if (pos == size)
				fail("the streaming decoder wants more than the one-shot decoder");
			continue;
		}
		if (r != oneshot[i].r || f.type != oneshot[i].f.type)
			fail("streaming and one-shot decoders disagree on a result");
		if (r == 1 && !frames_equal(&f, &oneshot[i].f))
			fail("streaming and one-shot decoders disagree on a frame");
		if (r < 0 && f.err_field != oneshot[i].f.err_field)
			fail("streaming and one-shot decoders disagree on the field at fault");
		i++;
	}
	sp_decoder_release(&d);
	free(oneshot);
	return 0;
}
