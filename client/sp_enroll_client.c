/*
 * sp_enroll_client.c: enrollment from the device's side (sealpush.h sp_client_enroll,
 * PROTOCOL.md 16): a new P-256 key, a CSR of it, POST /enroll over server-authenticated TLS
 * (HTTP/1.1, one request, the connection closed after), the certificate chain written beside
 * the key. Blocking, with a timeout on every socket operation; it uses no event loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "sealpush.h"
#include "sp_b64.h"
#include "sp_config.h"
#include "sp_enroll_client.h"
#include "sp_identity.h"

#define RESP_MAX (64 * 1024)
#define CSR_MAX  2048

static void seterr(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int sp_enroll_make_csr(EVP_PKEY *key, uint8_t **der, size_t *len)
{
	X509_REQ *req = X509_REQ_new();
	unsigned char *out = NULL;
	int n = -1;

	*der = NULL;
	if (req && X509_REQ_set_version(req, X509_REQ_VERSION_1) && X509_REQ_set_pubkey(req, key) &&
	    X509_REQ_sign(req, key, EVP_sha256()) > 0)
		n = i2d_X509_REQ(req, &out);
	X509_REQ_free(req);
	ERR_clear_error();
	if (n <= 0)
		return -EIO;
	*der = out;
	*len = (size_t)n;
	return 0;
}

/* Connects to host:port with timeouts of ms on every send and receive. Returns the socket or
 * -1 with err set. */
static int dial(const char *host, uint16_t port, int ms, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	char ps[8];
	int fd = -1, rc;

	snprintf(ps, sizeof(ps), "%u", port);
	rc = getaddrinfo(host, ps, &hints, &res);
	if (rc != 0) {
		seterr(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* connect() too */
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		seterr(err, errlen, "cannot connect to %s:%u: %s", host, port, strerror(errno));
	freeaddrinfo(res);
	return fd;
}

/* Writes data to path, mode, through a temporary file; with excl, fails with -EEXIST if path
 * exists. Returns 0 or a negative errno. */
static int write_file(const char *path, const void *data, size_t len, mode_t mode, bool excl)
{
	char tmp[4096];
	int fd, r = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.enroll-tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode) < 0 || write(fd, data, len) != (ssize_t)len || fsync(fd) < 0)
		r = errno ? -errno : -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && (excl ? link(tmp, path) : rename(tmp, path)) < 0)
		r = -errno;
	unlink(tmp);
	return r;
}

/* One HTTP/1.1 POST of body to path; the whole answer into *resp (malloc'ed, NUL-terminated)
 * and its status. Returns 0 or a negative errno with err set. */
static int https_post(const char *server, const char *ca_file, const char *path, const char *body,
                      int ms, int *status, char **resp, size_t *resp_len, char *err, size_t errlen)
{
	static const unsigned char alpn[] = "\x08http/1.1";
	char host[256], head[512];
	unsigned char ip[16];
	uint16_t port;
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	char *buf = NULL, *p;
	size_t got = 0;
	int fd = -1, r = -EIO, n;
	bool is_ip;

	*resp = NULL;
	if (sp_parse_hostport(server, host, sizeof(host), &port) < 0) {
		seterr(err, errlen, "--server: \"%s\" is not HOST:PORT", server);
		return -EINVAL;
	}
	is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    SSL_CTX_load_verify_file(ctx, ca_file) != 1) {
		seterr(err, errlen, "the CA file %s holds no PEM certificate", ca_file);
		r = -ENOENT;
		goto out;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
	fd = dial(host, port, ms, err, errlen);
	if (fd < 0) {
		r = -ECONNREFUSED;
		goto out;
	}
	ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_fd(ssl, fd))
		goto tls_fail;
	if (is_ip) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	} else {
		SSL_set_tlsext_host_name(ssl, host);
		SSL_set1_host(ssl, host);
	}
	if (SSL_connect(ssl) != 1)
		goto tls_fail;
	n = snprintf(head, sizeof(head),
	             "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
	             "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	             path, host, strlen(body));
	if (SSL_write(ssl, head, n) != n ||
	    SSL_write(ssl, body, (int)strlen(body)) != (int)strlen(body)) {
		seterr(err, errlen, "sending the request to %s failed", server);
		r = -ECONNRESET;
		goto out;
	}
	buf = malloc(RESP_MAX + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	while (got < RESP_MAX && (n = SSL_read(ssl, buf + got, (int)(RESP_MAX - got))) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	if (got < 12 || strncmp(buf, "HTTP/1.1 ", 9) != 0 || !(p = strstr(buf, "\r\n\r\n"))) {
		seterr(err, errlen, "no HTTP answer from %s", server);
		r = -EPROTO;
		goto out;
	}
	*status = atoi(buf + 9);
	p += 4;
	*resp_len = got - (size_t)(p - buf);
	memmove(buf, p, *resp_len + 1);
	*resp = buf;
	buf = NULL;
	r = 0;
	goto out;
tls_fail : {
	unsigned long e = ERR_peek_last_error();
	long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

	seterr(err, errlen, "TLS with %s failed: %s", server,
	       v != X509_V_OK ? X509_verify_cert_error_string(v)
	       : e            ? ERR_reason_error_string(e)
	                      : "handshake failed");
	r = -EPROTO;
}
out:
	ERR_clear_error();
	free(buf);
	if (ssl) {
		SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	if (fd >= 0)
		close(fd);
	SSL_CTX_free(ctx);
	return r;
}

int sp_client_enroll(const char *server, const char *ca_file, const char *code,
                     const char *cert_file, const char *key_file, double timeout_s,
                     sp_client_enrolled_t *out, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	uint8_t *der = NULL;
	size_t dlen = 0, rlen = 0;
	char b64[SP_B64URL_LEN(CSR_MAX) + 1], *body = NULL, *resp = NULL;
	BIO *kb = NULL;
	json_t *j = NULL;
	const char *pem, *tok, *na, *ser;
	char *kdata;
	long klen;
	int status = 0, r, ms = timeout_s > 0 ? (int)(timeout_s * 1000) : 30000;
	struct stat st;

	memset(out, 0, sizeof(*out));
	if (!server || !ca_file || !code || !cert_file || !key_file) {
		seterr(err, errlen, "server, ca_file, code, cert_file and key_file are required");
		return -EINVAL;
	}
	if (stat(key_file, &st) == 0 || stat(cert_file, &st) == 0) {
		seterr(err, errlen, "%s or %s exists already; enrollment makes a new identity",
		       key_file, cert_file);
		return -EEXIST;
	}
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key || sp_enroll_make_csr(key, &der, &dlen) < 0 || dlen > CSR_MAX) {
		seterr(err, errlen, "making the key and its CSR failed");
		r = -EIO;
		goto out;
	}
	sp_b64url_encode(der, dlen, b64);
	j = json_pack("{s:s, s:s}", "code", code, "csr", b64);
	body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	j = NULL;
	if (!body) {
		r = -ENOMEM;
		goto out;
	}
	r = https_post(server, ca_file, "/enroll", body, ms, &status, &resp, &rlen, err, errlen);
	if (r < 0)
		goto out;
	if (status != 201) {
		while (rlen > 0 && (resp[rlen - 1] == '\n' || resp[rlen - 1] == '\r'))
			resp[--rlen] = '\0';
		seterr(err, errlen, "the relay refused the enrollment (%d): %.200s", status, resp);
		r = status == 429 || status == 503 ? -EAGAIN : -EACCES;
		goto out;
	}
	j = json_loadb(resp, rlen, 0, NULL);
	pem = json_string_value(json_object_get(j, "certificate"));
	tok = json_string_value(json_object_get(j, "token"));
	na = json_string_value(json_object_get(j, "not_after"));
	ser = json_string_value(json_object_get(j, "serial"));
	if (!pem || !tok || strlen(tok) != SEALPUSH_TOKEN_HEX || !na || !ser) {
		seterr(err, errlen, "a malformed enrollment answer");
		r = -EPROTO;
		goto out;
	}
	{
		/* The certificate must be of our key: the token proves it. */
		uint8_t mine[SP_TOKEN_LEN];
		char hex[SP_TOKEN_HEX_LEN + 1];

		if (sp_token_from_pkey(key, mine) < 0) {
			r = -EIO;
			goto out;
		}
		sp_token_hex(mine, hex);
		if (strcmp(hex, tok) != 0) {
			seterr(err, errlen, "the relay answered a certificate for another key");
			r = -EPROTO;
			goto out;
		}
		snprintf(out->token_hex, sizeof(out->token_hex), "%s", hex);
	}
	snprintf(out->not_after, sizeof(out->not_after), "%s", na);
	snprintf(out->serial, sizeof(out->serial), "%s", ser);
	kb = BIO_new(BIO_s_secmem());
	if (!kb || !PEM_write_bio_PKCS8PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
	    (klen = BIO_get_mem_data(kb, &kdata)) <= 0) {
		r = -EIO;
		goto out;
	}
	r = write_file(key_file, kdata, (size_t)klen, 0600, true);
	if (r == 0) {
		r = write_file(cert_file, pem, strlen(pem), 0644, true);
		if (r < 0)
			unlink(key_file);
	}
	if (r < 0)
		seterr(err, errlen, "writing %s / %s: %s", key_file, cert_file, strerror(-r));
out:
	ERR_clear_error();
	BIO_free(kb);
	json_decref(j);
	free(resp);
	free(body);
	OPENSSL_free(der);
	EVP_PKEY_free(key);
	return r;
}
