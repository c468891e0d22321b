/* ferry: NBD URIs for the nbd driver (see nbd-uri.h).
 *
 * The checks refuse what libnbd would refuse with an obscure message, or misread.  The TLS
 * query parameters (tls-certificates=, tls-psk-file=, tls-username=) are taken out of the
 * URI and handed to libnbd through nbd_set_tls_*: libnbd versions differ in which of them
 * their URI parser knows, and a local file named in a URI must be allowed explicitly. */
#include "backends/nbd-uri.h"
#include "common/error.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int
hexval(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decode [s, s+n) into a new string; NULL on a bad escape or no memory. */
static char *
decode(const char *s, size_t n)
{
  char *out = malloc(n + 1), *o = out;
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
        free(out);
        return NULL;
      }
      *o++ = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
      i += 2;
    } else {
      *o++ = s[i];
    }
  }
  *o = 0;
  return out;
}

static int
check_scheme(const char *uri, bool *is_unix, bool *tls)
{
  const char *sep = strstr(uri, "://");
  size_t slen = (size_t)(sep - uri);
  static const struct {
    const char *name;
    bool is_unix, tls;
  } schemes[] = {
    { "nbd", false, false },
    { "nbds", false, true },
    { "nbd+unix", true, false },
    { "nbds+unix", true, true },
  };
  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
    if (strlen(schemes[i].name) == slen && strncmp(uri, schemes[i].name, slen) == 0) {
      *is_unix = schemes[i].is_unix;
      *tls = schemes[i].tls;
      return 0;
    }
  return error_set(EINVAL,
                   "%s: unsupported NBD URI scheme '%.*s' (use nbd://host[:port]/export, "
                   "nbds://..., nbd+unix:///export?socket=PATH or nbds+unix://...)",
                   uri, (int)slen, uri);
}

static int
check_host(const char *uri, const char *auth, size_t alen)
{
  /* user@ is the TLS username (libnbd takes it from there). */
  const char *at = memchr(auth, '@', alen);
  if (at) {
    alen -= (size_t)(at + 1 - auth);
    auth = at + 1;
  }
  if (alen == 0)
    return error_set(EINVAL, "%s: NBD URI lacks a host (nbd://host[:port]/export)", uri);
  if (auth[0] == '[') { /* [ipv6]:port */
    const char *close = memchr(auth, ']', alen);
    if (!close)
      return error_set(EINVAL, "%s: unterminated '[' in NBD URI host", uri);
    if (close + 1 < auth + alen && close[1] != ':')
      return error_set(EINVAL, "%s: junk after ']' in NBD URI host", uri);
  }
  const char *host_end = auth[0] == '[' ? memchr(auth, ']', alen) : auth;
  const char *colon = memchr(host_end, ':', (size_t)(auth + alen - host_end));
  if (!colon)
    return 0;
  const char *port = colon + 1;
  size_t plen = (size_t)(auth + alen - port);
  unsigned long value = 0;
  bool ok = plen > 0 && plen <= 5;
  for (size_t i = 0; ok && i < plen; i++) {
    if (port[i] < '0' || port[i] > '9')
      ok = false;
    else
      value = value * 10 + (unsigned long)(port[i] - '0');
  }
  if (!ok || value == 0 || value > 65535)
    return error_set(EINVAL, "%s: bad port '%.*s' in NBD URI (want 1-65535)", uri, (int)plen, port);
  if (colon == auth)
    return error_set(EINVAL, "%s: NBD URI lacks a host (nbd://host[:port]/export)", uri);
  return 0;
}

/* Take one of our TLS parameters (*taken = false when the pair is not one of them). */
static int
take_tls_param(struct nbd_uri *u, const char *uri, const char *p, size_t n, bool *taken)
{
  static const char *const names[] = { "tls-certificates=", "tls-psk-file=", "tls-username=" };
  char **slots[] = { &u->tls_certificates, &u->tls_psk_file, &u->tls_username };
  *taken = false;
  for (size_t i = 0; i < 3; i++) {
    size_t k = strlen(names[i]);
    if (n < k || strncmp(p, names[i], k) != 0)
      continue;
    *taken = true;
    if (*slots[i])
      return error_set(EINVAL, "%s: %.*s given twice", uri, (int)k - 1, names[i]);
    if (n == k)
      return error_set(EINVAL, "%s: empty %.*s in NBD URI", uri, (int)k - 1, names[i]);
    if (!(*slots[i] = decode(p + k, n - k)))
      return error_set(EINVAL, "%s: bad %%-escape in %.*s", uri, (int)k - 1, names[i]);
    return 0;
  }
  return 0;
}

static int
check_tls_files(const struct nbd_uri *u, const char *uri)
{
  if (!u->tls && (u->tls_certificates || u->tls_psk_file || u->tls_username))
    return error_set(EINVAL, "%s: TLS parameters need an nbds:// or nbds+unix:// URI", uri);
  if (u->tls_certificates && u->tls_psk_file)
    return error_set(EINVAL, "%s: tls-certificates= and tls-psk-file=: give one of them", uri);
  struct stat st;
  if (u->tls_certificates) {
    if (stat(u->tls_certificates, &st) < 0)
      return error_set_errno(errno, "%s: tls-certificates=%s", uri, u->tls_certificates);
    if (!S_ISDIR(st.st_mode))
      return error_set(ENOTDIR,
                       "%s: tls-certificates=%s is not a directory (it holds "
                       "ca-cert.pem [client-cert.pem client-key.pem])",
                       uri, u->tls_certificates);
  }
  if (u->tls_psk_file && access(u->tls_psk_file, R_OK) < 0)
    return error_set_errno(errno, "%s: tls-psk-file=%s", uri, u->tls_psk_file);
  return 0;
}

int
nbd_uri_parse(const char *uri, struct nbd_uri *u)
{
  memset(u, 0, sizeof *u);
  bool is_unix = false;
  int r = check_scheme(uri, &is_unix, &u->tls);
  if (r < 0)
    return r;
  const char *auth = strstr(uri, "://") + 3;
  size_t alen = strcspn(auth, "/?#");
  const char *query = strchr(auth, '?');
  const char *socket = NULL;
  size_t keep_len = query ? (size_t)(query - uri) : strlen(uri);
  /* The URI for libnbd: everything but our TLS parameters. */
  char *rest = calloc(1, strlen(uri) + 2);
  if (!rest)
    return error_set(ENOMEM, "out of memory");
  memcpy(rest, uri, keep_len);
  bool first = true;
  if (query) {
    for (const char *p = query + 1; *p && r == 0;) {
      size_t n = strcspn(p, "&#");
      bool taken;
      if ((r = take_tls_param(u, uri, p, n, &taken)) < 0)
        break;
      if (!taken && n > 0) {
        if (n > 7 && strncmp(p, "socket=", 7) == 0)
          socket = p + 7;
        else if (n == 7 && strncmp(p, "socket=", 7) == 0)
          r = error_set(EINVAL, "%s: empty socket= path in NBD URI", uri);
        strcat(rest, first ? "?" : "&");
        strncat(rest, p, n);
        first = false;
      }
      p += n;
      if (*p == '&')
        p++;
      else if (*p == '#')
        break;
    }
  }
  u->libnbd_uri = rest;
  if (r == 0) {
    if (is_unix) {
      if (alen != 0 && !(memchr(auth, '@', alen) && auth[alen - 1] == '@'))
        r = error_set(
            EINVAL, "%s: nbd+unix URI must not name a host (nbd+unix:///export?socket=PATH)", uri);
      else if (!socket)
        r = error_set(EINVAL, "%s: nbd+unix URI lacks ?socket=PATH", uri);
    } else if (socket) {
      r = error_set(EINVAL, "%s: socket= is only valid with nbd+unix://", uri);
    } else {
      r = check_host(uri, auth, alen);
    }
  }
  if (r == 0)
    r = check_tls_files(u, uri);
  if (r < 0)
    nbd_uri_free(u);
  return r;
}

void
nbd_uri_free(struct nbd_uri *u)
{
  free(u->libnbd_uri);
  free(u->tls_certificates);
  free(u->tls_psk_file);
  free(u->tls_username);
  memset(u, 0, sizeof *u);
}
