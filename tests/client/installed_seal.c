/*
 * installed_seal: a tiny application built against the *installed* libsealpush, the way a user
 * builds one: `cc installed_seal.c $(pkg-config --cflags --libs sealpush)`. It uses only the
 * public headers and exported symbols: two identities made in memory; bob makes his contact
 * card, alice verifies it and seals a message asking for a receipt, bob opens it (replay cache:
 * a second copy is a duplicate) and seals the receipt, alice opens and parses it. Prints what
 * it did as "# " lines and exits 0, or names the first failure and exits 1. Built and run by
 * tests/client/test_installed.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <sealpush.h>
#include <sealpush/sp_card.h>
#include <sealpush/sp_seal.h>
#include <sealpush/sp_seal_replay.h>

#define CHECK(what, e)                                                                             \
	do {                                                                                       \
		int e_ = (e);                                                                      \
		if (e_ != 0) {                                                                     \
			fprintf(stderr, "installed_seal: %s: %s\n", what, sp_seal_strerror(e_));   \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

static struct sp_sealer *identity(void)
{
	EVP_PKEY *sign = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *seal = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	struct sp_sealer *s = NULL;

	if (sign == NULL || seal == NULL || sp_sealer_new(sign, NULL, seal, &s) != 0)
		s = NULL;
	EVP_PKEY_free(sign);
	EVP_PKEY_free(seal);
	return s;
}

int main(void)
{
	static const char text[] = "sealed through the installed libsealpush";
	struct sp_sealer *alice = identity(), *bob = identity();
	struct sp_seal_replay *bob_replay = NULL, *alice_replay = NULL;
	struct sp_card card = {0};
	struct sp_seal_opened got = {0}, again = {0}, rcpt = {0};
	uint8_t id[SP_SEAL_MSG_ID_LEN], rid[SP_SEAL_MSG_ID_LEN], acked[SP_SEAL_MSG_ID_LEN];
	uint8_t *env = NULL, *renv = NULL, status = 0;
	size_t env_len = 0, renv_len = 0;
	char *json = NULL, hex[SP_TOKEN_HEX_LEN + 1];
	uint64_t now = 1700000000000;
	int rc = 1;

	printf("# libsealpush %s\n", sp_client_version());
	if (alice == NULL || bob == NULL || RAND_bytes(id, sizeof(id)) != 1 ||
	    RAND_bytes(rid, sizeof(rid)) != 1) {
		fprintf(stderr, "installed_seal: cannot make the identities\n");
		goto out;
	}
	CHECK("sp_seal_replay_new", sp_seal_replay_new(0, &bob_replay));
	CHECK("sp_seal_replay_new", sp_seal_replay_new(0, &alice_replay));
	CHECK("sp_card_make", sp_card_make(bob, (int64_t)(now / 1000), &json));
	CHECK("sp_card_parse", sp_card_parse(json, strlen(json), &card));
	if (memcmp(card.peer.token, sp_sealer_token(bob), SP_TOKEN_LEN) != 0) {
		fprintf(stderr, "installed_seal: the card names another token\n");
		goto out;
	}
	sp_token_hex(card.peer.token, hex);
	printf("# bob's card verifies (token %.16s...)\n", hex);

	struct sp_seal_msg m = {.msg_id = id,
	                        .sent_at_ms = now,
	                        .ttl = 60,
	                        .flags = SP_SEAL_F_RECEIPT_WANTED,
	                        .payload = (const uint8_t *)text,
	                        .payload_len = sizeof(text) - 1};
	CHECK("sp_seal", sp_seal(alice, &card.peer, &m, &env, &env_len));
	CHECK("sp_seal_open", sp_seal_open(bob, bob_replay, id, env, env_len, now + 5, &got));
	if (got.payload_len != sizeof(text) - 1 || memcmp(got.payload, text, got.payload_len) ||
	    memcmp(got.sender, sp_sealer_token(alice), SP_TOKEN_LEN) != 0) {
		fprintf(stderr, "installed_seal: opened the wrong payload or sender\n");
		goto out;
	}
	printf("# alice -> bob: %zu-byte envelope opens to the text, sender alice\n", env_len);
	CHECK("sp_seal_opened_remember", sp_seal_opened_remember(bob_replay, &got, now + 5));
	if (sp_seal_open(bob, bob_replay, id, env, env_len, now + 6, &again) !=
	    SP_SEAL_ERR_DUPLICATE) {
		fprintf(stderr, "installed_seal: a second copy was not refused as a duplicate\n");
		goto out;
	}
	printf("# the same envelope again: %s\n", sp_seal_strerror(SP_SEAL_ERR_DUPLICATE));
	CHECK("sp_seal_receipt", sp_seal_receipt(bob, &got, SP_SEAL_RECEIPT_RECEIVED, rid, now + 7,
	                                         60, &renv, &renv_len));
	CHECK("sp_seal_open (receipt)",
	      sp_seal_open(alice, alice_replay, rid, renv, renv_len, now + 8, &rcpt));
	CHECK("sp_seal_receipt_parse", sp_seal_receipt_parse(&rcpt, acked, &status));
	if (memcmp(acked, id, sizeof(id)) != 0 || status != SP_SEAL_RECEIPT_RECEIVED) {
		fprintf(stderr, "installed_seal: the receipt acknowledges something else\n");
		goto out;
	}
	printf("# bob's receipt opens at alice and names the message\n");
	rc = 0;
out:
	sp_seal_opened_clear(&got);
	sp_seal_opened_clear(&again);
	sp_seal_opened_clear(&rcpt);
	sp_card_clear(&card);
	free(json);
	free(env);
	free(renv);
	sp_seal_replay_free(bob_replay);
	sp_seal_replay_free(alice_replay);
	sp_sealer_free(alice);
	sp_sealer_free(bob);
	return rc;
}
