/*
 * sp_tlsgroup.c: see sp_tlsgroup.h.
 */
#include <strings.h>

#include <openssl/ssl.h>

#include "sp_tlsgroup.h"

static const char *const labels[SP_TG_COUNT] = {"X25519MLKEM768", "X25519", "P-256", "other"};

const char *sp_tls_group_label(enum sp_tls_group g)
{
	return (unsigned)g < SP_TG_COUNT ? labels[g] : labels[SP_TG_OTHER];
}

const char *sp_tls_group_name(SSL *ssl)
{
	/* SSL_group_to_name takes what SSL_get_negotiated_group returns (a NID, or a provider
	 * group's id with TLSEXT_nid_unknown) on every OpenSSL since 3.0. */
	int nid = SSL_get_negotiated_group(ssl);
	const char *name = nid > 0 ? SSL_group_to_name(ssl, nid) : NULL;

	return name ? name : "unknown";
}

enum sp_tls_group sp_tls_group_of(SSL *ssl)
{
	const char *name = sp_tls_group_name(ssl);

	if (strcasecmp(name, "X25519MLKEM768") == 0)
		return SP_TG_X25519MLKEM768;
	if (strcasecmp(name, "x25519") == 0)
		return SP_TG_X25519;
	if (strcasecmp(name, "secp256r1") == 0 || strcasecmp(name, "P-256") == 0 ||
	    strcasecmp(name, "prime256v1") == 0)
		return SP_TG_P256;
	return SP_TG_OTHER;
}

int sp_tls_set_groups(SSL_CTX *ctx, const char *list, bool server)
{
	if (!list || !list[0])
		list = server ? SP_TLS_GROUPS_SERVER_DEFAULT : SP_TLS_GROUPS_CLIENT_DEFAULT;
	return SSL_CTX_set1_groups_list(ctx, list) == 1 ? 0 : -1;
}
