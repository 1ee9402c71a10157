/* sp_enroll_client.h: what libsealpush's renewal (sp_client.c) shares with enrollment
 * (sp_enroll_client.c). Internal. */
#ifndef SP_ENROLL_CLIENT_H
#define SP_ENROLL_CLIENT_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

/* A CSR (PKCS #10, DER) of key, signed by it: version 1, empty subject, no attributes (the
 * relay decides the rest, PROTOCOL.md 16.2). *der is OPENSSL_malloc'ed. Returns 0 or -EIO. */
int sp_enroll_make_csr(EVP_PKEY *key, uint8_t **der, size_t *len);

#endif
