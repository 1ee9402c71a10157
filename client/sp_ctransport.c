/*
 * sp_ctransport.c: the client side of a sealpush connection below the protocol (see the
 * header for who calls what). TLS runs over two memory BIOs: bytes from recv() are written
 * into the read BIO, what OpenSSL produces is taken from the write BIO into t->raw and sent
 * with send(MSG_NOSIGNAL), so nothing blocks and no SIGPIPE is raised.
 */
#include "sp_ctransport.h"
#include "sp_tlsgroup.h"

#include "sp_buf.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#define RECV_CHUNK  16384
#define FIRST_ALLOC 1024

void sp_ctransport_init(sp_ctransport_t *t, size_t keep)
{
	memset(t, 0, sizeof(*t));
	t->fd = -1;
	t->keep = keep;
}

int sp_ctransport_socket(sp_ctransport_t *t, int family)
{
	int one = 1;

	t->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0)
		return -errno;
	setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

int sp_ctransport_connect(sp_ctransport_t *t, const struct sockaddr *sa, socklen_t len)
{
	if (connect(t->fd, sa, len) < 0 && errno != EINPROGRESS)
		return -errno;
	return 0;
}

int sp_ctransport_connected(sp_ctransport_t *t)
{
	int err = 0;
	socklen_t l = sizeof(err);

	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
		err = errno;
	return -err;
}

int sp_ctransport_tls_begin(sp_ctransport_t *t, SSL_CTX *ctx, const char *name, bool name_is_ip,
                            X509 *cert, EVP_PKEY *key, SSL_SESSION *sess, void *app)
{
	t->ssl = SSL_new(ctx);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		SSL_free(t->ssl);
		t->ssl = NULL;
		t->rbio = t->wbio = NULL;
		return SP_CT_NOMEM;
	}
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	SSL_set_app_data(t->ssl, app);
	if ((cert != NULL && SSL_use_certificate(t->ssl, cert) != 1) ||
	    (key != NULL && SSL_use_PrivateKey(t->ssl, key) != 1)) {
		SSL_free(t->ssl);
		t->ssl = NULL;
		t->rbio = t->wbio = NULL;
		return SP_CT_TLS;
	}
	if (name_is_ip) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name);
	} else {
		SSL_set_tlsext_host_name(t->ssl, name);
		SSL_set1_host(t->ssl, name);
	}
	if (sess != NULL)
		SSL_set_session(t->ssl, sess);
	SSL_set_connect_state(t->ssl);
	return 0;
}

/* Moves what OpenSSL wrote into its BIO to t->raw. */
static int drain_wbio(sp_ctransport_t *t)
{
	size_t pend;

	while ((pend = BIO_ctrl_pending(t->wbio)) > 0) {
		int n;

		if (sp_buf_reserve(&t->raw, &t->raw_cap, t->raw_len + pend, FIRST_ALLOC) < 0)
			return SP_CT_NOMEM;
		n = BIO_read(t->wbio, t->raw + t->raw_len, pend > INT_MAX ? INT_MAX : (int)pend);
		if (n <= 0)
			break;
		t->raw_len += (size_t)n;
	}
	return 0;
}

int sp_ctransport_send(sp_ctransport_t *t)
{
	while (t->raw_off < t->raw_len) {
		ssize_t n = send(t->fd, t->raw + t->raw_off, t->raw_len - t->raw_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (t->wev != NULL)
					event_add(t->wev, NULL);
				return 0;
			}
			t->err = errno;
			return SP_CT_SEND;
		}
		t->raw_off += (size_t)n;
	}
	t->raw_off = t->raw_len = 0;
	if (t->keep && t->raw_cap > t->keep) {
		free(t->raw);
		t->raw = NULL;
		t->raw_cap = 0;
	}
	return 0;
}

void sp_ctransport_write_failed(sp_ctransport_t *t)
{
	t->write_failed = true;
	t->raw_len = t->raw_off = 0;
}

int sp_ctransport_handshake(sp_ctransport_t *t)
{
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	int r;

	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	if (drain_wbio(t) < 0)
		return SP_CT_NOMEM;
	if (!t->write_failed && sp_ctransport_send(t) < 0)
		return SP_CT_SEND;
	if (r != 1) {
		if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_READ && !t->eof)
			return 0;
		return SP_CT_TLS;
	}
	SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
	if (alpn_len != strlen(SP_ALPN) || memcmp(alpn, SP_ALPN, alpn_len) != 0)
		return SP_CT_ALPN;
	t->tls_done = true;
	return 1;
}

int sp_ctransport_recv(sp_ctransport_t *t)
{
	uint8_t buf[RECV_CHUNK];

	for (;;) {
		ssize_t n = recv(t->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0) {
			if (BIO_write(t->rbio, buf, (int)n) != (int)n)
				return SP_CT_NOMEM;
			if ((size_t)n < sizeof(buf))
				return 0;
			continue;
		}
		if (n == 0) {
			t->eof = true;
			BIO_set_mem_eof_return(t->rbio, 0);
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		t->err = errno;
		return SP_CT_RECV;
	}
}

int sp_ctransport_read(sp_ctransport_t *t, uint8_t *dst, size_t cap)
{
	int n, e;

	ERR_clear_error();
	n = SSL_read(t->ssl, dst, cap > INT_MAX ? INT_MAX : (int)cap);
	if (n > 0)
		return n;
	e = SSL_get_error(t->ssl, n);
	if (e == SSL_ERROR_WANT_READ && !t->eof)
		return 0;
	if (e == SSL_ERROR_ZERO_RETURN)
		return SP_CT_CLOSED;
	if (e == SSL_ERROR_WANT_READ || (t->eof && ERR_peek_error() == 0) ||
	    ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		ERR_clear_error();
		return SP_CT_EOF;
	}
	return SP_CT_TLS;
}

int sp_ctransport_put(sp_ctransport_t *t, sp_frame_t *f, size_t *len)
{
	size_t need = 0;
	int r = -SP_ERR_NOSPACE;

	/* Straight into the space there is; grow and encode again only if it does not fit. */
	if (t->pt != NULL)
		r = sp_frame_encode(f, t->pt + t->pt_len, t->pt_cap - t->pt_len, &need);
	else
		r = sp_frame_encode(f, NULL, 0, &need);
	if (r == -SP_ERR_NOSPACE) {
		if (sp_buf_reserve(&t->pt, &t->pt_cap, t->pt_len + need, FIRST_ALLOC) < 0)
			return SP_CT_NOMEM;
		r = sp_frame_encode(f, t->pt + t->pt_len, t->pt_cap - t->pt_len, &need);
	}
	if (r < 0)
		return SP_CT_ENCODE;
	t->pt_len += need;
	if (len != NULL)
		*len = need;
	return 0;
}

int sp_ctransport_flush(sp_ctransport_t *t)
{
	size_t off = 0;
	int r;

	if (t->ssl == NULL || !t->tls_done)
		return 0;
	/* All of it: with SSL_MODE_ENABLE_PARTIAL_WRITE one call may take a record only. */
	while (off < t->pt_len) {
		size_t left = t->pt_len - off;

		ERR_clear_error();
		r = SSL_write(t->ssl, t->pt + off, left > INT_MAX ? INT_MAX : (int)left);
		if (r <= 0)
			return SP_CT_TLS;
		off += (size_t)r;
	}
	if (off > 0) {
		t->pt_len = 0;
		if (t->keep && t->pt_cap > t->keep) {
			free(t->pt);
			t->pt = NULL;
			t->pt_cap = 0;
		}
	}
	if (drain_wbio(t) < 0)
		return SP_CT_NOMEM;
	if (t->write_failed)
		return 0; /* the owner is reading what is left */
	return sp_ctransport_send(t);
}

bool sp_ctransport_resumed(const sp_ctransport_t *t)
{
	return t->ssl != NULL && SSL_session_reused(t->ssl) == 1;
}

int sp_ctransport_group(const sp_ctransport_t *t)
{
	return t->ssl != NULL ? (int)sp_tls_group_of(t->ssl) : SP_TG_OTHER;
}

void sp_ctransport_shutdown(sp_ctransport_t *t)
{
	if (t->ssl == NULL || !t->tls_done || t->eof || t->write_failed || t->fd < 0)
		return;
	ERR_clear_error();
	SSL_shutdown(t->ssl);
	if (drain_wbio(t) == 0)
		(void)sp_ctransport_send(t);
}

void sp_ctransport_close(sp_ctransport_t *t)
{
	if (t->rev != NULL)
		event_free(t->rev);
	if (t->wev != NULL)
		event_free(t->wev);
	t->rev = t->wev = NULL;
	SSL_free(t->ssl);
	t->ssl = NULL;
	t->rbio = t->wbio = NULL;
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	t->pt_len = t->raw_len = t->raw_off = 0;
	t->eof = t->tls_done = t->write_failed = false;
}

void sp_ctransport_release(sp_ctransport_t *t)
{
	free(t->pt);
	free(t->raw);
	t->pt = t->raw = NULL;
	t->pt_len = t->pt_cap = t->raw_len = t->raw_off = t->raw_cap = 0;
}
