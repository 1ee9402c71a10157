/*
 * sb_ident: the client identities the bench connects with, one certificate per connection.
 *
 * Each identity NAME lives in a directory made by sealpush-ca (NAME.crt, NAME.key). Missing
 * ones are issued by running the real tool, "sealpush-ca device DIR NAME" (slow-ish, so files
 * are reused across runs). Called from the main thread before any bench thread starts.
 */
#ifndef SB_IDENT_H
#define SB_IDENT_H

#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

typedef struct sb_ident {
	X509 *cert;
	EVP_PKEY *key;
	uint8_t token[32]; /* SHA-256 of the certificate's SPKI, as the relay derives it */
} sb_ident_t;

/*
 * Finds the sealpush-ca command: explicit (if not NULL), else next to the bench binary (or in
 * ../server/ of a build tree), else "sealpush-ca" from PATH. Returns a static string.
 */
const char *sb_ident_tool(const char *explicit_path);

/*
 * Loads DIR/PREFIX<first>..PREFIX<first+n-1>, minting the missing ones with tool. Fills
 * out[0..n). Returns 0, or -1 after printing why on stderr. *minted counts the new ones.
 */
int sb_ident_load(const char *dir, const char *tool, const char *prefix, unsigned n,
                  sb_ident_t *out, unsigned *minted);

/* Frees what sb_ident_load() loaded. NULL-safe. */
void sb_ident_free(sb_ident_t *ids, unsigned n);

#endif
