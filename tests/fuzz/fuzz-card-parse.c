/*
 * fuzz-card-parse.c: fuzz target for contact cards (client/sp_card, PROTOCOL.md 13.8 and 13.11)
 * and the lines of the cards-seen file (sp_card_seen_line).
 *
 * The input is a card's JSON text, parsed and verified from an exact-size heap copy. Invariants
 * (any broken one aborts): a refusal is a known code and leaves the card cleared; an accepted
 * card has a version of 1 to 3, an epoch exactly when it is of version 3 (and its peer carries
 * it), 1 to SP_CARD_SEAL_MAX suites, a token that is SHA-256 of its SPKI, a peer that
 * sp_card_pick() gives again, is not older than itself, and verifies again to the same result.
 * Each line of the input is also read as a cards-seen line; one that parses prints back as
 * itself (the format is canonical).
 */
#include "sp_card.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static __attribute__((noreturn)) void fail(const char *what)
{
	fprintf(stderr, "fuzz-card-parse: %s\n", what);
	abort();
}

static void check_card(const char *json, size_t len)
{
	static const struct sp_card zero;
	struct sp_card c, again;
	struct sp_seal_peer p;
	uint8_t digest[32];
	int r = sp_card_parse(json, len, &c);

	if (r != 0) {
		if (!(r <= SP_SEAL_ERR_MALFORMED && r >= SP_SEAL_ERR_CARD_STALE) && r != -ENOMEM)
			fail("unknown error code");
		if (r == SP_SEAL_ERR_CRYPTO)
			fail("OpenSSL failed on an input (should be a refusal by name)");
		if (memcmp(&c, &zero, sizeof(c)) != 0)
			fail("a refused card was not cleared");
		return;
	}
	if (c.version < 1 || c.version > SP_CARD_VERSION || c.nseal < 1 ||
	    c.nseal > SP_CARD_SEAL_MAX || (c.version == SP_CARD_VERSION_V1 && c.nseal != 1))
		fail("version or suite count out of range");
	if ((c.version == SP_CARD_VERSION) != (c.epoch != 0) || c.peer.epoch != c.epoch)
		fail("an epoch without version 3, or a version 3 card without one");
	if (!EVP_Digest(c.spki, c.spki_len, digest, NULL, EVP_sha256(), NULL) ||
	    memcmp(digest, c.peer.token, 32) != 0)
		fail("token is not SHA-256 of the SPKI");
	if (sp_card_pick(&c, NULL, 0, &p) != 0 || memcmp(&p, &c.peer, sizeof(p)) != 0)
		fail("sp_card_pick does not give the card's peer");
	if (!sp_seal_suite_implemented(c.peer.suite))
		fail("the card parsed with a suite this build cannot seal to");
	if (sp_card_supersedes(&c, &c) != 0)
		fail("a card is older than itself");
	if (sp_card_parse(json, len, &again) != 0 || again.epoch != c.epoch ||
	    again.issued_at != c.issued_at || memcmp(&again.peer, &c.peer, sizeof(c.peer)) != 0)
		fail("a card verified twice gave two results");
	sp_card_clear(&again);
	sp_card_clear(&c);
}

static void check_seen_line(const char *line, size_t len)
{
	uint8_t token[32];
	uint32_t epoch;
	int64_t at;
	char hex[65], back[128];
	int n;

	if (sp_card_seen_line(line, len, token, &epoch, &at) != 0)
		return;
	sp_token_hex(token, hex);
	n = snprintf(back, sizeof(back), "%s %" PRIu32 " %" PRId64, hex, epoch, at);
	/* Hex digits may come in either case; the numbers must be canonical. */
	if (n < 0 || (size_t)n != len || strncasecmp(back, line, len) != 0)
		fail("a seen line that parses does not print back as itself");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy;
	size_t start = 0;

	if (size > SP_CARD_MAX_JSON + 1)
		return 0;
	copy = calloc(1, size != 0 ? size : 1);
	if (copy == NULL)
		fail("out of memory");
	if (size != 0)
		memcpy(copy, data, size);
	check_card(copy, size);
	for (size_t i = 0; i <= size; i++)
		if (i == size || copy[i] == '\n') {
			check_seen_line(copy + start, i - start);
			start = i + 1;
		}
	free(copy);
	return 0;
}
