/* ferry: the http driver — a read-only volume over http:// or https:// through libcurl.
 *
 * Certificates are verified (CA bundle from $CURL_CA_BUNDLE when set, like curl(1)).
 * Size from HEAD (Content-Length), or from the Content-Range of a `Range: bytes=0-0` GET when
 * HEAD gives none.  Reads are ranged GETs.  A pool of curl easy handles (one kept-alive
 * connection each) serves concurrent callers: a read takes a handle, waits if all are busy.
 *
 * Every response is checked: 206 with a Content-Range that is exactly the range asked, the
 * total size unchanged since open, and exactly the bytes asked.  A server that ignores Range
 * (200 with the whole body) is refused, never read from offset 0 by mistake.  Connection
 * errors, timeouts, truncated bodies and 5xx are retried with exponential backoff; 4xx and
 * the protocol violations above are not (retrying cannot help).
 *
 * A server that comes back: once the volume is open, a request whose connection failed
 * (refused, reset, timed out: curl then connects anew on the next attempt) keeps being
 * retried beyond `retries` for up to volume_options.reconnect_wait seconds (default 60),
 * within the calling thread's volume_wait_bounds.
 */
#include "backends/volume.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DEFAULT_CONNECTIONS 4
#define MAX_CONNECTIONS 64
#define DEFAULT_RETRIES 5
#define DEFAULT_TIMEOUT 30.0
#define FIRST_BACKOFF 0.1 /* seconds; doubles per attempt */
#define MAX_BACKOFF 5.0
#define DEFAULT_RECONNECT_WAIT 60.0

struct handle {
  CURL *curl;
  char errbuf[CURL_ERROR_SIZE];
};

struct http_volume {
  struct volume v;
  char *url; /* as given, with any password: v.name has it masked */
  unsigned retries;
  long timeout_ms;
  double reconnect_wait;
  bool opened; /* the reconnection window applies once the volume has worked */
  /* Health for status: a connection failure not yet followed by a success (under lock). */
  bool down;
  double down_since;
  char down_reason[256];
  pthread_mutex_t lock;
  pthread_cond_t available;
  struct handle *handles;
  unsigned nhandles;
  struct handle **free_list; /* stack of idle handles */
  unsigned nfree;
};

/* What one response said, filled by the header and body callbacks. */
struct response {
  long code;
  char reason[64];
  bool have_range;
  bool range_unsatisfied; /* "bytes * /TOTAL" */
  uint64_t range_start, range_end, range_total;
  char *buf; /* NULL: discard the body (HEAD, probe of an unknown size) */
  size_t want, got;
  bool overflow;      /* more bytes than asked: aborted */
  bool ignored_range; /* 200 to a ranged request: aborted */
  bool ranged;
};

/* Result of one attempt: RETRY_CONN is a failed connection (retried for reconnect_wait). */
enum outcome { DONE, RETRY, RETRY_CONN, FAIL };

static bool
http_matches(const char *uri)
{
  return strncasecmp(uri, "http://", 7) == 0 || strncasecmp(uri, "https://", 8) == 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void
init_curl(void)
{
  curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* "http://user:secret@host/x" -> "http://user:***@host/x" for messages. */
static char *
mask_password(const char *url)
{
  const char *auth = strstr(url, "://");
  char *copy = strdup(url);
  if (!copy || !auth)
    return copy;
  auth += 3;
  size_t alen = strcspn(auth, "/?#");
  const char *at = memchr(auth, '@', alen);
  const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
  if (!colon)
    return copy;
  char *masked = NULL;
  if (asprintf(&masked, "%.*s***%s", (int)(colon + 1 - url), url, at) < 0)
    return copy;
  free(copy);
  return masked;
}

/* For HTTP/2, whose status line has no reason phrase. */
static const char *
default_reason(long code)
{
  static const struct {
    long code;
    const char *reason;
  } reasons[] = {
    { 400, "Bad Request" },
    { 401, "Unauthorized" },
    { 403, "Forbidden" },
    { 404, "Not Found" },
    { 405, "Method Not Allowed" },
    { 408, "Request Timeout" },
    { 410, "Gone" },
    { 416, "Range Not Satisfiable" },
    { 429, "Too Many Requests" },
    { 500, "Internal Server Error" },
    { 501, "Not Implemented" },
    { 502, "Bad Gateway" },
    { 503, "Service Unavailable" },
    { 504, "Gateway Timeout" },
  };
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
    if (reasons[i].code == code)
      return reasons[i].reason;
  return "";
}

static bool
parse_u64(const char **p, uint64_t *out)
{
  const char *s = *p;
  uint64_t v = 0;
  if (*s < '0' || *s > '9')
    return false;
  while (*s >= '0' && *s <= '9') {
    if (v > (UINT64_MAX - 9) / 10)
      return false;
    v = v * 10 + (uint64_t)(*s++ - '0');
  }
  *p = s;
  *out = v;
  return true;
}

/* "Content-Range: bytes START-END/TOTAL" or "bytes * /TOTAL" (416). */
static void
parse_content_range(struct response *r, const char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  if (strncasecmp(s, "bytes ", 6) != 0)
    return;
  s += 6;
  while (*s == ' ')
    s++;
  if (*s == '*') {
    s++;
    if (*s == '/' && (s++, parse_u64(&s, &r->range_total)))
      r->range_unsatisfied = true;
    return;
  }
  if (parse_u64(&s, &r->range_start) && *s++ == '-' && parse_u64(&s, &r->range_end) && *s++ == '/'
      && parse_u64(&s, &r->range_total) && r->range_end >= r->range_start)
    r->have_range = true;
}

static size_t
header_cb(char *data, size_t size, size_t n, void *opaque)
{
  struct response *r = opaque;
  size_t len = size * n;
  char line[512];
  size_t k = len < sizeof line - 1 ? len : sizeof line - 1;
  memcpy(line, data, k);
  line[k] = '\0';
  line[strcspn(line, "\r\n")] = '\0';
  if (strncmp(line, "HTTP/", 5) == 0) {
    /* A new status line (after a redirect or 100 Continue): forget the previous headers. */
    r->have_range = r->range_unsatisfied = false;
    r->reason[0] = '\0';
    const char *sp = strchr(line, ' ');
    if (sp) {
      r->code = strtol(sp + 1, NULL, 10);
      const char *sp2 = strchr(sp + 1, ' ');
      if (sp2)
        snprintf(r->reason, sizeof r->reason, "%s", sp2 + 1);
    }
  } else if (strncasecmp(line, "Content-Range:", 14) == 0) {
    parse_content_range(r, line + 14);
  }
  return len;
}

static size_t
body_cb(char *data, size_t size, size_t n, void *opaque)
{
  struct response *r = opaque;
  size_t len = size * n;
  if (r->code < 200 || r->code >= 300)
    return len; /* an error page: ignored */
  if (r->ranged && r->code == 200) {
    r->ignored_range = true;
    return 0; /* abort: do not download a whole image we did not ask for */
  }
  if (r->got + len > r->want) {
    r->overflow = true;
    return 0;
  }
  if (r->buf)
    memcpy(r->buf + r->got, data, len);
  r->got += len;
  return len;
}

static enum outcome
transient_curl_error(CURLcode rc)
{
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR:
    return RETRY_CONN;
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return RETRY;
  default:
    return FAIL;
  }
}

static struct handle *
take_handle(struct http_volume *hv)
{
  pthread_mutex_lock(&hv->lock);
  while (hv->nfree == 0) {
    wait_hook_run();
    pthread_cond_wait(&hv->available, &hv->lock);
  }
  struct handle *h = hv->free_list[--hv->nfree];
  pthread_mutex_unlock(&hv->lock);
  return h;
}

static void
give_handle(struct http_volume *hv, struct handle *h)
{
  pthread_mutex_lock(&hv->lock);
  hv->free_list[hv->nfree++] = h;
  pthread_cond_signal(&hv->available);
  pthread_mutex_unlock(&hv->lock);
}

/* One attempt.  *why gets the reason for RETRY/FAIL (and errno in *err). */
static enum outcome
attempt(struct http_volume *hv, struct handle *h, bool head, uint64_t off, size_t len, void *buf,
        struct response *r, char *why, size_t whylen, int *err)
{
  CURL *c = h->curl;
  char range[64];
  memset(r, 0, sizeof *r);
  r->buf = buf;
  r->want = len;
  r->ranged = !head;
  h->errbuf[0] = '\0';
  curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  if (head) {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_RANGE, NULL);
  } else {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, off, off + len - 1);
    curl_easy_setopt(c, CURLOPT_RANGE, range);
  }
  wait_hook_run(); /* a network round trip: this thread will sleep */
  CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code)
    r->code = code;
  const char *reason = r->reason[0] ? r->reason : default_reason(r->code);

  *err = EIO;
  if (r->ignored_range || (rc == CURLE_OK && !head && r->code == 200)) {
    *err = ENOTSUP;
    snprintf(why, whylen, "server does not support Range requests (HTTP 200 to a ranged GET)");
    return FAIL;
  }
  if (r->overflow) {
    *err = EPROTO;
    snprintf(why, whylen, "server sent more than the %zu bytes asked", len);
    return FAIL;
  }
  if (rc != CURLE_OK) {
    snprintf(why, whylen, "%s", h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
    if (rc == CURLE_OPERATION_TIMEDOUT)
      *err = ETIMEDOUT;
    return transient_curl_error(rc);
  }
  if (r->code >= 500 || r->code == 408 || r->code == 429) {
    snprintf(why, whylen, "HTTP %ld %s", r->code, reason);
    return RETRY;
  }
  if (r->code < 200 || r->code >= 300) {
    *err = r->code == 404 || r->code == 410   ? ENOENT
           : r->code == 401 || r->code == 403 ? EACCES
                                              : EIO;
    snprintf(why, whylen, "HTTP %ld %s", r->code, reason);
    return FAIL;
  }
  if (head)
    return DONE;
  if (r->code != 206 || !r->have_range) {
    *err = ENOTSUP;
    snprintf(why, whylen,
             "server does not support Range requests (HTTP %ld without a "
             "Content-Range)",
             r->code);
    return FAIL;
  }
  if (r->range_start != off || r->range_end != off + len - 1) {
    *err = EPROTO;
    snprintf(why, whylen,
             "server answered bytes %" PRIu64 "-%" PRIu64 " to a request for %" PRIu64 "-%" PRIu64,
             r->range_start, r->range_end, off, off + len - 1);
    return FAIL;
  }
  /* hv->v.size is 0 only while the size is still being learned (open). */
  if (hv->v.size && r->range_total != hv->v.size) {
    *err = ESTALE;
    snprintf(why, whylen, "size changed from %" PRIu64 " to %" PRIu64 " bytes since open",
             hv->v.size, r->range_total);
    return FAIL;
  }
  if (r->got != len) {
    snprintf(why, whylen, "short body: %zu of %zu bytes", r->got, len);
    return RETRY;
  }
  return DONE;
}

static void
set_down(struct http_volume *hv, bool down, const char *why)
{
  pthread_mutex_lock(&hv->lock);
  if (down && !hv->down)
    hv->down_since = now_seconds();
  if (down)
    snprintf(hv->down_reason, sizeof hv->down_reason, "%s", why);
  hv->down = down;
  pthread_mutex_unlock(&hv->lock);
}

static int
http_health(struct volume *v, char *reason, size_t len)
{
  struct http_volume *hv = (struct http_volume *)v;
  pthread_mutex_lock(&hv->lock);
  int r = hv->down;
  if (r)
    snprintf(reason, len, "connection failed %.0f s ago: %s; retrying",
             now_seconds() - hv->down_since, hv->down_reason);
  pthread_mutex_unlock(&hv->lock);
  return r;
}

/* Attempt, and retry transient failures with exponential backoff.  The message names the
 * URL, what was asked, why it failed and how often we tried. */
static int
request(struct http_volume *hv, bool head, uint64_t off, size_t len, void *buf, struct response *r)
{
  struct handle *h = take_handle(hv);
  char why[256];
  int err = EIO;
  double backoff = FIRST_BACKOFF, t0 = now_seconds();
  struct volume_wait_bounds b = volume_wait_bounds();
  double window_end = hv->opened ? t0 + hv->reconnect_wait : t0;
  if (b.deadline > 0 && b.deadline < window_end)
    window_end = b.deadline;
  /* A caller's deadline also bounds one attempt (curl's own timeouts are per stall). */
  long total_ms = b.deadline > 0 ? (long)((b.deadline - t0) * 1000) + 1 : 0;
  curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, total_ms > 0 ? total_ms : 0L);
  unsigned tries = 0;
  enum outcome o;
  for (;;) {
    tries++;
    o = attempt(hv, h, head, off, len, buf, r, why, sizeof why, &err);
    if (hv->opened && (o == DONE || o == RETRY_CONN))
      set_down(hv, o == RETRY_CONN, why);
    if (o != RETRY && o != RETRY_CONN)
      break;
    double now = now_seconds();
    bool more = tries <= hv->retries || (o == RETRY_CONN && now + backoff < window_end);
    if (b.deadline > 0 && now + backoff >= b.deadline)
      more = false;
    if (!more || (b.cancel && *b.cancel))
      break;
    debug("http", "%s: %s, retrying in %.1f s (attempt %u)", hv->v.name, why, backoff, tries + 1);
    struct timespec ts = { (time_t)backoff, (long)((backoff - (double)(time_t)backoff) * 1e9) };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
      ;
    backoff = backoff * 2 > MAX_BACKOFF ? MAX_BACKOFF : backoff * 2;
    if (total_ms > 0) {
      long left = (long)((b.deadline - now_seconds()) * 1000) + 1;
      curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, left > 1 ? left : 1L);
    }
  }
  if (total_ms > 0)
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, 0L);
  give_handle(hv, h);
  if (o == DONE)
    return 0;
  /* Opening says "URL: HTTP 404 Not Found"; a read says which bytes it wanted. */
  char what[96] = "";
  if (!head)
    snprintf(what, sizeof what, "read %zu bytes at offset %" PRIu64 ": ", len, off);
  if (o == RETRY_CONN && now_seconds() - t0 >= 1.0)
    return error_set(err, "%s: %s%s (gave up after %u attempts in %.0f s)", hv->v.name, what, why,
                     tries, now_seconds() - t0);
  if (o == RETRY || o == RETRY_CONN)
    return error_set(err, "%s: %s%s (gave up after %u attempts)", hv->v.name, what, why, tries);
  return error_set(err, "%s: %s%s", hv->v.name, what, why);
}

static int
http_pread(struct volume *v, void *buf, size_t len, uint64_t off)
{
  struct response r;
  if (len == 0)
    return 0;
  return request((struct http_volume *)v, false, off, len, buf, &r);
}

static void
http_close(struct volume *v)
{
  struct http_volume *hv = (struct http_volume *)v;
  for (unsigned i = 0; i < hv->nhandles; i++)
    curl_easy_cleanup(hv->handles[i].curl);
  free(hv->handles);
  free(hv->free_list);
  pthread_mutex_destroy(&hv->lock);
  pthread_cond_destroy(&hv->available);
  free(hv->url);
  free(v->name);
  free(hv);
}

static const struct volume_ops http_ops = {
  .driver = "http",
  .pread = http_pread,
  .close = http_close,
  .health = http_health,
};

static int
setup_handle(struct http_volume *hv, struct handle *h)
{
  CURL *c = h->curl = curl_easy_init();
  if (!c)
    return error_set(ENOMEM, "%s: cannot create a curl handle", hv->v.name);
  /* NOSIGNAL: we are threaded; timeouts must not use SIGALRM.  The timeout bounds the
   * connection and any stall (no byte for that long), not the whole request: a 32 MiB
   * range over a slow link may take long and still be healthy. */
  long stall_seconds = hv->timeout_ms < 1000 ? 1 : (hv->timeout_ms + 999) / 1000;
  if (curl_easy_setopt(c, CURLOPT_URL, hv->url) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, stall_seconds) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, hv->timeout_ms) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_USERAGENT, "ferry/0.1") != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb) != CURLE_OK
      || curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb) != CURLE_OK)
    return error_set(EINVAL, "%s: cannot set up curl", hv->v.name);
  /* Like curl(1): a private CA (self-signed test servers, internal PKI) without code. */
  const char *ca = getenv("CURL_CA_BUNDLE");
  if (ca && *ca && curl_easy_setopt(c, CURLOPT_CAINFO, ca) != CURLE_OK)
    return error_set(EINVAL, "%s: cannot use CA bundle %s", hv->v.name, ca);
  return 0;
}

/* Learn the size: HEAD, else (no Content-Length, or HEAD refused) a one-byte ranged GET.
 * Then check that ranges work: a server that ignores them is refused now, at open. */
static int
learn_size(struct http_volume *hv)
{
  struct response r;
  int rc = request(hv, true, 0, 0, NULL, &r);
  curl_off_t length = -1;
  if (rc == 0) {
    struct handle *h = take_handle(hv);
    curl_easy_getinfo(h->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    give_handle(hv, h);
  } else if (r.code != 405 && r.code != 501) {
    return rc; /* 404, 403, connection refused...: the GET would say the same */
  }
  error_clear();
  /* One byte asked; an empty image answers 416 "bytes * /0". */
  char byte;
  rc = request(hv, false, 0, 1, &byte, &r);
  if (rc < 0 && r.code == 416 && r.range_unsatisfied && r.range_total == 0 && length <= 0) {
    error_clear();
    return 0;
  }
  if (rc < 0)
    return rc;
  if (length >= 0 && (uint64_t)length != r.range_total)
    return error_set(EPROTO, "%s: HEAD says %" PRIu64 " bytes but Content-Range says %" PRIu64,
                     hv->v.name, (uint64_t)length, r.range_total);
  hv->v.size = r.range_total;
  return 0;
}

static int
http_open(const char *uri, const struct volume_options *o, struct volume **out)
{
  *out = NULL;
  pthread_once(&curl_once, init_curl);
  if (curl_init_result != CURLE_OK)
    return error_set(EIO, "%s: cannot initialise libcurl: %s", uri,
                     curl_easy_strerror(curl_init_result));
  const char *host = strstr(uri, "://") + 3;
  if (*host == '\0' || *host == '/' || *host == '?' || *host == '#')
    return error_set(EINVAL, "%s: HTTP URL lacks a host", uri);

  struct http_volume *hv = calloc(1, sizeof *hv);
  if (!hv)
    return error_set(ENOMEM, "%s: out of memory", uri);
  pthread_mutex_init(&hv->lock, NULL);
  pthread_cond_init(&hv->available, NULL);
  hv->v.ops = &http_ops;
  int r;
  unsigned n = o->connections ? o->connections : DEFAULT_CONNECTIONS;
  if (n > MAX_CONNECTIONS)
    n = MAX_CONNECTIONS;
  hv->url = strdup(uri);
  hv->v.name = mask_password(uri);
  hv->handles = calloc(n, sizeof *hv->handles);
  hv->free_list = calloc(n, sizeof *hv->free_list);
  if (!hv->url || !hv->v.name || !hv->handles || !hv->free_list) {
    r = error_set(ENOMEM, "%s: out of memory", uri);
    goto fail;
  }
  hv->retries = o->retries ? o->retries : DEFAULT_RETRIES;
  hv->reconnect_wait = o->reconnect_wait > 0 ? o->reconnect_wait : DEFAULT_RECONNECT_WAIT;
  hv->timeout_ms = (long)((o->timeout > 0 ? o->timeout : DEFAULT_TIMEOUT) * 1000);
  for (unsigned i = 0; i < n; i++) {
    hv->nhandles = i + 1;
    if ((r = setup_handle(hv, &hv->handles[i])) < 0)
      goto fail;
    hv->free_list[hv->nfree++] = &hv->handles[i];
  }
  if ((r = learn_size(hv)) < 0)
    goto fail;

  hv->opened = true;
  char *name = hv->v.name;
  hv->v.name = NULL;
  hv->v.max_request = 32u << 20;
  hv->v.caps = VOLUME_MULTI_CONN; /* read-only: nothing to flush */
  r = volume_init(&hv->v, &http_ops, name, hv->v.size);
  free(name);
  if (r < 0)
    goto fail;
  debug("http", "%s: %" PRIu64 " bytes, %u connections, %u retries, timeout %ld ms", hv->v.name,
        hv->v.size, n, hv->retries, hv->timeout_ms);
  *out = &hv->v;
  return 0;
fail:
  http_close(&hv->v);
  return r;
}

const struct volume_driver http_driver = {
  .name = "http",
  .matches = http_matches,
  .open = http_open,
};
