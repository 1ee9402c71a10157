/* sp_enrollcode.c: enrollment codes (sp_enrollcode.h); OpenSSL's RAND and SHA-256. */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

#include "sp_b64.h"
#include "sp_enrollcode.h"

int sp_enroll_code_new(char out[SP_ENROLL_CODE_LEN + 1])
{
	uint8_t raw[SP_ENROLL_CODE_BYTES];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	if (sp_b64url_encode(raw, sizeof(raw), out) != SP_ENROLL_CODE_LEN)
		return -EIO;
	out[SP_ENROLL_CODE_LEN] = '\0';
	return 0;
}

int sp_enroll_code_valid(const char *s, size_t len)
{
	if (len != SP_ENROLL_CODE_LEN)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

int sp_enroll_code_key(const char *s, size_t len, char out[SP_ENROLL_KEY_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t md[32];
	unsigned int mdlen = 0;
	size_t off = sizeof(SP_ENROLL_KEY_PREFIX) - 1;

	if (EVP_Digest(s, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != sizeof(md))
		return -EIO;
	memcpy(out, SP_ENROLL_KEY_PREFIX, off);
	for (size_t i = 0; i < sizeof(md); i++) {
		out[off + 2 * i] = hex[md[i] >> 4];
		out[off + 2 * i + 1] = hex[md[i] & 15];
	}
	out[SP_ENROLL_KEY_LEN] = '\0';
	return 0;
}

int sp_enroll_label_valid(const char *label, size_t len)
{
	if (len > SP_ENROLL_LABEL_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)label[i];

		if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
			return 0;
	}
	return 1;
}
