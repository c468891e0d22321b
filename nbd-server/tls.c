/* ferry-nbd: TLS sessions with GnuTLS, see tls.h.
 *
 * Versions: TLS 1.2 and 1.3 only (the NBD spec: MUST support 1.2, SHOULD NOT offer older ones
 * by default).  A refused peer is told by a TLS alert, and the log says why in words
 * ("client certificate refused: The certificate is NOT trusted..."). */
#include "nbd-server/tls.h"
#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PRIORITY_X509 "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define PRIORITY_PSK PRIORITY_X509 ":+ECDHE-PSK:+DHE-PSK:+PSK"
/* Small reply pieces are gathered into one record instead of one record each. */
#define STAGE_SIZE 16384

struct tls_config {
  gnutls_certificate_credentials_t x509;
  gnutls_psk_server_credentials_t psk;
  gnutls_priority_t priority;
  bool verify_clients;
  char description[600];
};

struct tls_session {
  gnutls_session_t s;
};

/* "WHAT: gnutls's reason". */
static int
gnutls_fail(int e, int r, const char *what)
{
  return error_set(e, "%s: %s", what, gnutls_strerror(r));
}

/* The first certificate of a PEM file must be valid now: a server whose own certificate has
 * expired would only ever see clients refuse it, so say it at startup. */
static int
check_validity(const char *path)
{
  gnutls_datum_t data = { NULL, 0 };
  gnutls_x509_crt_t crt = NULL;
  int r = gnutls_load_file(path, &data);
  if (r < 0)
    return gnutls_fail(EINVAL, r, path);
  int ret = 0;
  if ((r = gnutls_x509_crt_init(&crt)) < 0
      || (r = gnutls_x509_crt_import(crt, &data, GNUTLS_X509_FMT_PEM)) < 0) {
    ret = gnutls_fail(EINVAL, r, path);
    goto out;
  }
  time_t now = time(NULL);
  time_t not_after = gnutls_x509_crt_get_expiration_time(crt);
  time_t not_before = gnutls_x509_crt_get_activation_time(crt);
  char when[64];
  if (not_after != (time_t)-1 && not_after < now) {
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&not_after));
    ret = error_set(EKEYEXPIRED, "%s: the server certificate expired on %s", path, when);
  } else if (not_before != (time_t)-1 && not_before > now) {
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&not_before));
    ret = error_set(EKEYEXPIRED, "%s: the server certificate is not valid before %s", path, when);
  }
out:
  if (crt)
    gnutls_x509_crt_deinit(crt);
  gnutls_free(data.data);
  return ret;
}

static int
load_x509(struct tls_config *cfg, const char *dir)
{
  char cert[4096], key[4096], ca[4096], crl[4096];
  snprintf(cert, sizeof cert, "%s/server-cert.pem", dir);
  snprintf(key, sizeof key, "%s/server-key.pem", dir);
  snprintf(ca, sizeof ca, "%s/ca-cert.pem", dir);
  snprintf(crl, sizeof crl, "%s/ca-crl.pem", dir);
  if (access(dir, R_OK | X_OK) < 0)
    return error_set_errno(errno, "--tls-certificates %s", dir);
  for (const char *p = cert; p; p = p == cert ? key : NULL)
    if (access(p, R_OK) < 0)
      return error_set_errno(errno, "--tls-certificates: %s", p);
  int r = gnutls_certificate_allocate_credentials(&cfg->x509);
  if (r < 0)
    return gnutls_fail(ENOMEM, r, dir);
  r = gnutls_certificate_set_x509_key_file(cfg->x509, cert, key, GNUTLS_X509_FMT_PEM);
  if (r < 0)
    return error_set(EINVAL, "%s, %s: %s", cert, key, gnutls_strerror(r));
  if ((r = check_validity(cert)) < 0)
    return r;
  if (access(ca, F_OK) == 0) {
    r = gnutls_certificate_set_x509_trust_file(cfg->x509, ca, GNUTLS_X509_FMT_PEM);
    if (r < 0)
      return gnutls_fail(EINVAL, r, ca);
    if (r == 0)
      return error_set(EINVAL, "%s: no CA certificate in the file", ca);
    cfg->verify_clients = true;
    if (access(crl, F_OK) == 0
        && (r = gnutls_certificate_set_x509_crl_file(cfg->x509, crl, GNUTLS_X509_FMT_PEM)) < 0)
      return gnutls_fail(EINVAL, r, crl);
  }
  gnutls_certificate_set_known_dh_params(cfg->x509, GNUTLS_SEC_PARAM_MEDIUM);
  snprintf(cfg->description, sizeof cfg->description, "X.509 certificates in %s (%s)", dir,
           cfg->verify_clients ? "client certificates verified against ca-cert.pem"
                               : "no ca-cert.pem: clients are not authenticated");
  return 0;
}

/* psktool writes "username:hexkey" lines; refuse a file without one usable key now rather
 * than at every client's handshake. */
static int
check_psk_file(const char *path)
{
  FILE *f = fopen(path, "r");
  if (!f)
    return error_set_errno(errno, "--tls-psk %s", path);
  char line[1024];
  unsigned keys = 0, lineno = 0;
  int r = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    line[strcspn(line, "\r\n")] = 0;
    if (!line[0] || line[0] == '#')
      continue;
    char *colon = strchr(line, ':');
    const char *hex = colon ? colon + 1 : "";
    size_t n = strlen(hex);
    if (!colon || colon == line || n == 0 || n % 2 || strspn(hex, "0123456789abcdefABCDEF") != n) {
      r = error_set(EINVAL, "%s: line %u is not USERNAME:HEXKEY (make the file with psktool)", path,
                    lineno);
      break;
    }
    keys++;
  }
  fclose(f);
  if (r == 0 && keys == 0)
    r = error_set(EINVAL, "%s: no keys in the file (make one with psktool -u NAME -p %s)", path,
                  path);
  return r;
}

static int
load_psk(struct tls_config *cfg, const char *path)
{
  int r = check_psk_file(path);
  if (r < 0)
    return r;
  if ((r = gnutls_psk_allocate_server_credentials(&cfg->psk)) < 0)
    return gnutls_fail(ENOMEM, r, path);
  if ((r = gnutls_psk_set_server_credentials_file(cfg->psk, path)) < 0)
    return gnutls_fail(EINVAL, r, path);
  gnutls_psk_set_server_known_dh_params(cfg->psk, GNUTLS_SEC_PARAM_MEDIUM);
  snprintf(cfg->description, sizeof cfg->description, "pre-shared keys from %s", path);
  return 0;
}

int
tls_config_load(const char *certdir, const char *pskfile, struct tls_config **out)
{
  *out = NULL;
  if (!certdir == !pskfile)
    return error_set(EINVAL, "TLS needs exactly one of --tls-certificates and --tls-psk");
  struct tls_config *cfg = calloc(1, sizeof *cfg);
  if (!cfg)
    return error_set(ENOMEM, "out of memory");
  int r = certdir ? load_x509(cfg, certdir) : load_psk(cfg, pskfile);
  if (r == 0) {
    const char *bad = NULL;
    int e = gnutls_priority_init(&cfg->priority, certdir ? PRIORITY_X509 : PRIORITY_PSK, &bad);
    if (e < 0)
      r = error_set(EINVAL, "TLS priority string at '%s': %s", bad ? bad : "?", gnutls_strerror(e));
  }
  if (r < 0) {
    tls_config_free(cfg);
    return r;
  }
  *out = cfg;
  return 0;
}

void
tls_config_free(struct tls_config *cfg)
{
  if (!cfg)
    return;
  if (cfg->priority)
    gnutls_priority_deinit(cfg->priority);
  if (cfg->x509)
    gnutls_certificate_free_credentials(cfg->x509);
  if (cfg->psk)
    gnutls_psk_free_server_credentials(cfg->psk);
  free(cfg);
}

const char *
tls_config_describe(const struct tls_config *cfg)
{
  return cfg->description;
}

/* Why a handshake failed, in words. */
static void
describe_failure(const struct tls_config *cfg, gnutls_session_t s, int r, char *buf, size_t len)
{
  if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
    gnutls_datum_t txt = { NULL, 0 };
    unsigned status = gnutls_session_get_verify_cert_status(s);
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0) == 0) {
      size_t n = strlen((char *)txt.data);
      while (n > 0 && txt.data[n - 1] == ' ')
        txt.data[--n] = 0;
      snprintf(buf, len, "client certificate refused: %s", txt.data);
      gnutls_free(txt.data);
      return;
    }
  }
  if (r == GNUTLS_E_NO_CERTIFICATE_FOUND || r == GNUTLS_E_CERTIFICATE_REQUIRED) {
    snprintf(buf, len, "the client sent no certificate (ca-cert.pem makes one required)");
    return;
  }
  if (r == GNUTLS_E_FATAL_ALERT_RECEIVED || r == GNUTLS_E_WARNING_ALERT_RECEIVED) {
    snprintf(buf, len, "the client refused the session: alert '%s' (%s)",
             gnutls_alert_get_name(gnutls_alert_get(s)),
             cfg->psk ? "does it have our key?" : "does it trust our CA?");
    return;
  }
  if (r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PUSH_ERROR) {
    snprintf(buf, len, "the client closed the connection during the handshake (%s)",
             cfg->psk ? "does it have our key?" : "does it trust our certificate's CA?");
    return;
  }
  if (cfg->psk
      && (r == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER || r == GNUTLS_E_DECRYPTION_FAILED
          || r == GNUTLS_E_USER_ERROR)) {
    const char *user = gnutls_psk_server_get_username(s);
    snprintf(buf, len, "the client's pre-shared key does not match ours%s%s%s (%s)",
             user ? " for user '" : "", user ? user : "", user ? "'" : "", gnutls_strerror(r));
    return;
  }
  snprintf(buf, len, "%s", gnutls_strerror(r));
}

int
tls_session_start(const struct tls_config *cfg, int fd, const char *peer, struct tls_session **out)
{
  *out = NULL;
  struct tls_session *t = calloc(1, sizeof *t);
  if (!t)
    return error_set(ENOMEM, "out of memory");
  int r = gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL);
  if (r < 0) {
    free(t);
    return gnutls_fail(ENOMEM, r, peer);
  }
  if ((r = gnutls_priority_set(t->s, cfg->priority)) < 0
      || (r = cfg->x509 ? gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, cfg->x509)
                        : gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, cfg->psk))
             < 0)
    goto fail;
  if (cfg->verify_clients) {
    gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
    /* The handshake itself fails on an untrusted or expired client certificate. */
    gnutls_session_set_verify_cert(t->s, NULL, 0);
  }
  gnutls_transport_set_int(t->s, fd);
  do
    r = gnutls_handshake(t->s);
  while (r < 0 && !gnutls_error_is_fatal(r));
  if (r < 0)
    goto fail;
  if (log_debug_enabled("nbd")) {
    char *desc = gnutls_session_get_desc(t->s);
    const char *user = cfg->psk ? gnutls_psk_server_get_username(t->s) : NULL;
    debug("nbd", "%s: TLS session %s%s%s", peer, desc ? desc : "", user ? ", PSK user " : "",
          user ? user : "");
    gnutls_free(desc);
  }
  *out = t;
  return 0;
fail:;
  char why[512];
  describe_failure(cfg, t->s, r, why, sizeof why);
  gnutls_deinit(t->s);
  free(t);
  return error_set(EACCES, "%s: TLS handshake failed: %s", peer, why);
}

int
tls_recv(struct tls_session *t, void *buf, size_t len)
{
  char *p = buf;
  while (len > 0) {
    ssize_t n = gnutls_record_recv(t->s, p, len);
    if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
      continue;
    if (n <= 0) /* 0: close_notify; < 0: a broken record, reset, or our own shutdown() */
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

long
tls_recv_some(struct tls_session *t, void *buf, size_t cap)
{
  for (;;) {
    ssize_t n = gnutls_record_recv(t->s, buf, cap);
    if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
      continue;
    return n > 0 ? (long)n : -1;
  }
}

bool
tls_pending(struct tls_session *t)
{
  return gnutls_record_check_pending(t->s) > 0;
}

static int
send_all(struct tls_session *t, const char *p, size_t len)
{
  while (len > 0) {
    ssize_t n = gnutls_record_send(t->s, p, len);
    if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
      continue;
    if (n < 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int
tls_sendv(struct tls_session *t, const struct iovec *iov, int n)
{
  char stage[STAGE_SIZE];
  size_t used = 0;
  for (int i = 0; i < n; i++) {
    const char *p = iov[i].iov_base;
    size_t len = iov[i].iov_len;
    if (used + len <= sizeof stage) {
      memcpy(stage + used, p, len);
      used += len;
      continue;
    }
    if (used && send_all(t, stage, used) < 0)
      return -1;
    used = 0;
    if (len < sizeof stage) {
      memcpy(stage, p, len);
      used = len;
    } else if (send_all(t, p, len) < 0) {
      return -1;
    }
  }
  return used ? send_all(t, stage, used) : 0;
}

void
tls_session_end(struct tls_session *t, int fd)
{
  if (!t)
    return;
  /* close_notify is polite, but a client that stopped reading must not hold us. */
  struct timeval tv = { 1, 0 };
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  gnutls_bye(t->s, GNUTLS_SHUT_WR);
  gnutls_deinit(t->s);
  free(t);
}
