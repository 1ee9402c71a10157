/*
 * sp_dir.c: checking the key directory's answers (see sp_dir.h). RFC 9162 verification is
 * common/sp_merkle, user cards common/sp_ucard, device cards sp_card.
 */
#include "sp_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sp_card.h"
#include "sp_merkle.h"

static const char head_label[] = "sealpush/1 tree head"; /* with its NUL: 21 bytes */
static const char entry_label[] = "sealpush/1 log entry";

const char *sp_dir_strerror(int err)
{
	switch (err) {
	case SP_DIR_OK:
		return "ok";
	case SP_DIR_ERR_HEAD:
		return "the tree head is malformed or not signed by the log key";
	case SP_DIR_ERR_FORK:
		return "the tree head does not extend the one seen before: the log was forked";
	case SP_DIR_ERR_INCLUSION:
		return "the entry is not in the signed tree (inclusion proof fails)";
	case SP_DIR_ERR_ENTRY:
		return "the entry is malformed or not for what was looked up";
	case SP_DIR_ERR_USER_SIGNATURE:
		return "the user card is not signed by its user key";
	case SP_DIR_ERR_DEVICE_CARD:
		return "a device card in the user card does not verify";
	case SP_DIR_ERR_MISSING:
		return "the answer lacks a head, entry or proof";
	case SP_DIR_ERR_IO:
		return "the kept head cannot be read or written";
	default:
		return "unknown error";
	}
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

EVP_PKEY *sp_dir_log_key(const char *cert_file, const char *ca_file)
{
	FILE *f = fopen(cert_file, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	EVP_PKEY *k = NULL;

	if (f)
		fclose(f);
	if (x == NULL)
		return NULL;
	if (ca_file != NULL) {
		X509_STORE *st = X509_STORE_new();
		X509_STORE_CTX *cx = X509_STORE_CTX_new();
		int ok = st && cx && X509_STORE_load_file(st, ca_file) == 1 &&
		         X509_STORE_CTX_init(cx, st, x, NULL) == 1 && X509_verify_cert(cx) == 1;

		X509_STORE_CTX_free(cx);
		X509_STORE_free(st);
		if (!ok) {
			X509_free(x);
			return NULL;
		}
	}
	k = X509_get_pubkey(x);
	X509_free(x);
	if (k != NULL && (!EVP_PKEY_is_a(k, "EC") || EVP_PKEY_get_bits(k) != 256)) {
		EVP_PKEY_free(k);
		k = NULL;
	}
	return k;
}

int sp_dir_check_head(const uint8_t *head, size_t len, EVP_PKEY *log_pub,
                      const uint8_t *consistency, size_t consistency_len, sp_dir_head_t *kept,
                      sp_dir_head_t *out)
{
	uint8_t tbs[21 + 48], proof[SP_MERKLE_MAX_PROOF][32];
	unsigned count = 0;
	sp_dir_head_t h;
	size_t sl;
	EVP_MD_CTX *md;
	int ok;

	if (head == NULL || len < 50)
		return SP_DIR_ERR_HEAD;
	sl = (size_t)head[48] << 8 | head[49];
	if (len != 50 + sl || sl == 0)
		return SP_DIR_ERR_HEAD;
	memcpy(tbs, head_label, 21);
	memcpy(tbs + 21, head, 48);
	md = EVP_MD_CTX_new();
	ok = md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, log_pub) == 1 &&
	     EVP_DigestVerify(md, head + 50, sl, tbs, sizeof(tbs)) == 1;
	EVP_MD_CTX_free(md);
	if (!ok)
		return SP_DIR_ERR_HEAD;
	h.size = get_u64(head);
	h.timestamp_ms = get_u64(head + 8);
	memcpy(h.root, head + 16, 32);
	if (h.size == 0)
		return SP_DIR_ERR_HEAD;
	if (kept != NULL && kept->size > 0) {
		if (h.size < kept->size)
			return SP_DIR_ERR_FORK;
		if (consistency != NULL &&
		    sp_merkle_proof_parse(consistency, consistency_len, proof, &count) < 0)
			return SP_DIR_ERR_FORK;
		if (sp_merkle_verify_consistency(kept->size, h.size, kept->root, h.root,
		                                 (const uint8_t *)proof, count) != 0)
			return SP_DIR_ERR_FORK;
	}
	*out = h;
	if (kept != NULL)
		*kept = h;
	return SP_DIR_OK;
}

int sp_dir_check_lookup(const sp_client_dir_answer_t *a, EVP_PKEY *log_pub, const char *handle,
                        const uint8_t *token, sp_dir_head_t *kept, sp_ucard_t *card)
{
	uint8_t proof[SP_MERKLE_MAX_PROOF][32], leaf[32];
	sp_dir_head_t h, k = {0};
	unsigned count = 0;
	size_t hl, cl;
	bool listed = false;
	int r;

	memset(card, 0, sizeof(*card));
	if (a->head == NULL || a->entry == NULL || a->inclusion == NULL || !a->has_index)
		return SP_DIR_ERR_MISSING;
	if (kept != NULL)
		k = *kept;
	r = sp_dir_check_head(a->head, a->head_len, log_pub, a->consistency, a->consistency_len, &k,
	                      &h);
	if (r != SP_DIR_OK)
		return r;
	if (sp_merkle_proof_parse(a->inclusion, a->inclusion_len, proof, &count) < 0 ||
	    sp_merkle_leaf_hash(a->entry, a->entry_len, leaf) < 0 ||
	    sp_merkle_verify_inclusion(a->index, h.size, leaf, (const uint8_t *)proof, count,
	                               h.root) != 0)
		return SP_DIR_ERR_INCLUSION;
	if (a->entry_len < 26 || memcmp(a->entry, entry_label, 21) != 0)
		return SP_DIR_ERR_ENTRY;
	hl = a->entry[21];
	if (a->entry_len < 26 + hl)
		return SP_DIR_ERR_ENTRY;
	cl = (size_t)get_u64((const uint8_t[8]){0, 0, 0, 0, a->entry[22 + hl], a->entry[23 + hl],
	                                        a->entry[24 + hl], a->entry[25 + hl]});
	if (a->entry_len != 26 + hl + cl)
		return SP_DIR_ERR_ENTRY;
	r = sp_ucard_parse((const char *)a->entry + 26 + hl, cl, card);
	if (r == -EKEYREJECTED)
		return SP_DIR_ERR_USER_SIGNATURE;
	if (r < 0)
		return SP_DIR_ERR_ENTRY;
	if (card->handle_len != hl || memcmp(card->handle, a->entry + 22, hl) != 0 ||
	    (handle != NULL && strcmp(handle, card->handle) != 0)) {
		sp_ucard_clear(card);
		return SP_DIR_ERR_ENTRY;
	}
	for (size_t i = 0; i < card->n_devices; i++) {
		struct sp_card dc;

		if (sp_card_parse(card->dev[i].card, card->dev[i].card_len, &dc) != 0 ||
		    memcmp(dc.peer.token, card->dev[i].token, 32) != 0) {
			sp_card_clear(&dc);
			sp_ucard_clear(card);
			return SP_DIR_ERR_DEVICE_CARD;
		}
		sp_card_clear(&dc);
		listed |= token != NULL && memcmp(card->dev[i].token, token, 32) == 0;
	}
	if (token != NULL && !listed) {
		sp_ucard_clear(card);
		return SP_DIR_ERR_ENTRY;
	}
	if (kept != NULL)
		*kept = k;
	return SP_DIR_OK;
}

void sp_dir_fingerprint(const sp_dir_head_t *h, char out[65])
{
	uint8_t b[40], d[32];

	put_u64(b, h->size);
	memcpy(b + 8, h->root, 32);
	SHA256(b, sizeof(b), d);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

int sp_dir_head_load(const char *path, sp_dir_head_t *h)
{
	uint8_t b[49];
	FILE *f = fopen(path, "rb");
	size_t n;

	memset(h, 0, sizeof(*h));
	if (f == NULL)
		return errno == ENOENT ? SP_DIR_OK : SP_DIR_ERR_IO;
	n = fread(b, 1, sizeof(b), f);
	fclose(f);
	if (n != 48)
		return SP_DIR_ERR_IO;
	h->size = get_u64(b);
	h->timestamp_ms = get_u64(b + 8);
	memcpy(h->root, b + 16, 32);
	return SP_DIR_OK;
}

int sp_dir_head_save(const char *path, const sp_dir_head_t *h)
{
	char tmp[4096];
	uint8_t b[48];
	int fd, ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return SP_DIR_ERR_IO;
	put_u64(b, h->size);
	put_u64(b + 8, h->timestamp_ms);
	memcpy(b + 16, h->root, 32);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return SP_DIR_ERR_IO;
	ok = write(fd, b, sizeof(b)) == (ssize_t)sizeof(b) && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return SP_DIR_ERR_IO;
	}
	return SP_DIR_OK;
}
