/*
 * sp_wp_probe: opens one Web Push message with libsealpush's RFC 8291 code, for the
 * end-to-end tests: sp_wp_probe P256DH_PRIVATE P256DH AUTH BODY_HEX (keys base64url, as a
 * subscription's keys are written). Prints the plaintext and exits 0, or "undecryptable: N"
 * and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_b64.h"
#include "sp_wpcrypt.h"

int main(int argc, char **argv)
{
	uint8_t priv[32], pub[65], auth[16], *body, *out;
	size_t n, len, out_len = 0;
	int rc;

	if (argc != 5) {
		fprintf(stderr, "usage: sp_wp_probe PRIV PUB AUTH BODY_HEX\n");
		return 2;
	}
	if (sp_b64url_decode(argv[1], strlen(argv[1]), priv, 32) != 32 ||
	    sp_b64url_decode(argv[2], strlen(argv[2]), pub, 65) != 65 ||
	    sp_b64url_decode(argv[3], strlen(argv[3]), auth, 16) != 16) {
		fprintf(stderr, "sp_wp_probe: bad key\n");
		return 2;
	}
	n = strlen(argv[4]) / 2;
	body = malloc(n + 1);
	out = malloc(n + 1);
	if (!body || !out)
		return 2;
	for (len = 0; len < n; len++) {
		unsigned v;

		if (sscanf(argv[4] + 2 * len, "%2x", &v) != 1)
			return 2;
		body[len] = (uint8_t)v;
	}
	rc = sp_wp_open(priv, pub, auth, body, len, out, n, &out_len);
	if (rc < 0) {
		printf("undecryptable: %d\n", -rc);
		return 1;
	}
	fwrite(out, 1, out_len, stdout);
	putchar('\n');
	free(body);
	free(out);
	return 0;
}
