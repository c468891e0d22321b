/* ferry-nbd: TLS (GnuTLS) for NBD_OPT_STARTTLS, as nbdkit and qemu-nbd do it.
 *
 * Credentials are loaded once at startup (tls_config_load) and shared by every connection:
 *   X.509: a directory holding ca-cert.pem (optional), server-cert.pem and server-key.pem
 *          (the layout of nbdkit --tls-certificates, qemu's tls-creds-x509 dir= and libnbd's
 *          tls-certificates=); with ca-cert.pem present every client must present a
 *          certificate that chains to it (and ca-crl.pem, if present, is checked).
 *   PSK:   a psktool(1) file ("username:hexkey" lines).
 * A session wraps a connected socket after the NBD_REP_ACK of NBD_OPT_STARTTLS; record I/O
 * may run in two threads at once, one receiving and one sending (the server's read_lock and
 * write_lock guarantee that). */
#ifndef FERRY_NBD_TLS_H
#define FERRY_NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

struct tls_config;
struct tls_session;

/* Exactly one of certdir and pskfile.  0 or -errno with a message naming the file. */
int tls_config_load(const char *certdir, const char *pskfile, struct tls_config **out);
void tls_config_free(struct tls_config *cfg);
/* "X.509 certificates in DIR (client certificates verified)" etc., for the startup log. */
const char *tls_config_describe(const struct tls_config *cfg);

/* The TLS handshake over fd (blocking; the caller bounds it by shutting the socket down).
 * 0 with *out, or -1 with a message saying why the peer was refused. */
int tls_session_start(const struct tls_config *cfg, int fd, const char *peer,
                      struct tls_session **out);
/* Full-length receive / send.  0, or -1 when the session is finished. */
int tls_recv(struct tls_session *s, void *buf, size_t len);
/* What one TLS record gives, at most cap bytes: the count (> 0), or -1. */
long tls_recv_some(struct tls_session *s, void *buf, size_t cap);
/* Decrypted bytes are buffered: a read returns without waiting for the socket. */
bool tls_pending(struct tls_session *s);
int tls_sendv(struct tls_session *s, const struct iovec *iov, int n);
/* Send close_notify (best effort, bounded by the socket's send timeout) and free. */
void tls_session_end(struct tls_session *s, int fd);

#endif
