/* ferry: the QMP client, see qmp.h.
 *
 * qemu writes one JSON object per line ("\r\n"); we read into a growing buffer and parse a
 * line at a time.  Every wait is bounded by a deadline on the monotonic clock. */
#include "hypervisor/qmp.h"

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_QUEUED_EVENTS 1024
#define MAX_LINE (64u << 20) /* query-named-block-nodes of a big graph is large, not this */

struct qmp {
  int fd;
  char *path;
  char *buf;
  size_t len, cap;
  unsigned long long next_id;
  json_t *events; /* array of queued event messages, oldest first */
  char error_class[64];
  int version;
  pid_t peer;
};

static double
deadline_of(double timeout)
{
  return timeout < 0 ? -1 : now_seconds() + timeout;
}

/* Milliseconds left until deadline for poll(): -1 for none, 0 when passed. */
static int
ms_left(double deadline)
{
  if (deadline < 0)
    return -1;
  double left = deadline - now_seconds();
  return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

/* Read one message (a JSON object on one line).  -ETIMEDOUT, -EPIPE (closed), -EPROTO. */
static int
read_message(struct qmp *q, double deadline, json_t **msg)
{
  for (;;) {
    char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
    if (nl) {
      size_t line = (size_t)(nl - q->buf) + 1;
      json_error_t je;
      json_t *m = NULL;
      bool blank = true;
      for (size_t i = 0; i < line; i++)
        if (q->buf[i] != '\r' && q->buf[i] != '\n' && q->buf[i] != ' ')
          blank = false;
      if (!blank) {
        debug("qmp", "<- %.*s", (int)(line > 500 ? 500 : line - 1), q->buf);
        m = json_loadb(q->buf, line, JSON_DISABLE_EOF_CHECK, &je);
      }
      memmove(q->buf, q->buf + line, q->len - line);
      q->len -= line;
      if (blank)
        continue;
      if (!m || !json_is_object(m)) {
        json_decref(m);
        return error_set(EPROTO, "%s: malformed QMP message: %s", q->path,
                         m ? "not an object" : je.text);
      }
      *msg = m;
      return 0;
    }
    if (q->len + 4096 > q->cap) {
      if (q->cap >= MAX_LINE)
        return error_set(EPROTO, "%s: QMP message longer than %u bytes", q->path, MAX_LINE);
      size_t cap = q->cap ? q->cap * 2 : 65536;
      char *b = realloc(q->buf, cap);
      if (!b)
        return error_set(ENOMEM, "out of memory");
      q->buf = b;
      q->cap = cap;
    }
    struct pollfd p = { .fd = q->fd, .events = POLLIN };
    int n = poll(&p, 1, ms_left(deadline));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return error_set_errno(errno, "%s: poll", q->path);
    if (n == 0)
      return -ETIMEDOUT; /* the caller words the message */
    ssize_t got = read(q->fd, q->buf + q->len, q->cap - q->len);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (got < 0)
      return error_set_errno(errno, "%s: read", q->path);
    if (got == 0)
      return error_set(EPIPE, "%s: qemu closed the QMP connection", q->path);
    q->len += (size_t)got;
  }
}

static void
queue_event(struct qmp *q, json_t *msg)
{
  if (json_array_size(q->events) >= MAX_QUEUED_EVENTS)
    json_array_remove(q->events, 0);
  json_array_append_new(q->events, msg);
}

static int
send_all(struct qmp *q, const char *data, size_t len)
{
  while (len > 0) {
    ssize_t n = send(q->fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return error_set_errno(errno, "%s: send", q->path);
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

static int
errno_of_class(const char *cls)
{
  if (strcmp(cls, "DeviceNotFound") == 0)
    return ENODEV;
  if (strcmp(cls, "CommandNotFound") == 0)
    return ENOSYS;
  return EIO;
}

int
qmp_execute(struct qmp *q, const char *command, json_t *arguments, json_t **ret, double timeout)
{
  q->error_class[0] = '\0';
  if (ret)
    *ret = NULL;
  char id[32];
  snprintf(id, sizeof id, "ferry-%llu", ++q->next_id);
  json_t *req = json_pack("{s:s, s:s}", "execute", command, "id", id);
  if (!req)
    return error_set(ENOMEM, "out of memory");
  if (arguments)
    json_object_set(req, "arguments", arguments);
  char *text = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  if (!text)
    return error_set(ENOMEM, "out of memory");
  debug("qmp", "-> %s", text);
  size_t tlen = strlen(text);
  int r = 0;
  char *line = malloc(tlen + 2);
  if (!line)
    r = error_set(ENOMEM, "out of memory");
  else {
    memcpy(line, text, tlen);
    line[tlen] = '\n';
    r = send_all(q, line, tlen + 1);
  }
  free(line);
  free(text);
  if (r < 0)
    return error_prefix("%s", command);
  double deadline = deadline_of(timeout);
  for (;;) {
    json_t *msg = NULL;
    r = read_message(q, deadline, &msg);
    if (r == -ETIMEDOUT)
      return error_set(ETIMEDOUT, "%s: %s: no reply from qemu within %.1f s", q->path, command,
                       timeout);
    if (r < 0)
      return error_prefix("%s", command);
    if (json_object_get(msg, "event")) {
      queue_event(q, msg);
      continue;
    }
    const char *mid = json_string_value(json_object_get(msg, "id"));
    if (!mid || strcmp(mid, id) != 0) {
      /* The reply to a request that timed out earlier (or a stray greeting): not ours. */
      debug("qmp", "dropping a reply to %s", mid ? mid : "(no id)");
      json_decref(msg);
      continue;
    }
    json_t *err = json_object_get(msg, "error");
    if (err) {
      const char *cls = json_string_value(json_object_get(err, "class")) ?: "GenericError";
      const char *desc = json_string_value(json_object_get(err, "desc")) ?: "(no description)";
      snprintf(q->error_class, sizeof q->error_class, "%s", cls);
      r = error_set(errno_of_class(cls), "%s: %s (%s)", command, desc, cls);
      json_decref(msg);
      return r;
    }
    if (ret) {
      *ret = json_object_get(msg, "return");
      json_incref(*ret);
    }
    json_decref(msg);
    return 0;
  }
}

int
qmp_executef(struct qmp *q, const char *command, json_t **ret, double timeout, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  json_error_t je;
  json_t *args = json_vpack_ex(&je, 0, fmt, ap);
  va_end(ap);
  if (!args)
    return error_set(EINVAL, "%s: building the arguments: %s", command, je.text);
  int r = qmp_execute(q, command, args, ret, timeout);
  json_decref(args);
  return r;
}

const char *
qmp_error_class(const struct qmp *q)
{
  return q->error_class;
}

static bool
event_matches(json_t *msg, const char *name, const char *key, const char *value)
{
  const char *ev = json_string_value(json_object_get(msg, "event"));
  if (!ev || strcmp(ev, name) != 0)
    return false;
  if (!key)
    return true;
  const char *v = json_string_value(json_object_get(json_object_get(msg, "data"), key));
  return v && strcmp(v, value) == 0;
}

int
qmp_wait_event(struct qmp *q, const char *name, const char *key, const char *value, double timeout,
               json_t **event)
{
  if (event)
    *event = NULL;
  for (size_t i = 0; i < json_array_size(q->events); i++) {
    json_t *msg = json_array_get(q->events, i);
    if (event_matches(msg, name, key, value)) {
      if (event)
        *event = json_incref(msg);
      json_array_remove(q->events, i);
      return 0;
    }
  }
  double deadline = deadline_of(timeout);
  for (;;) {
    json_t *msg = NULL;
    int r = read_message(q, deadline, &msg);
    if (r == -ETIMEDOUT)
      return error_set(ETIMEDOUT, "%s: no %s event within %.1f s", q->path, name, timeout);
    if (r < 0)
      return r;
    if (!json_object_get(msg, "event")) {
      json_decref(msg); /* a late reply to a timed-out request */
      continue;
    }
    if (event_matches(msg, name, key, value)) {
      if (event)
        *event = msg;
      else
        json_decref(msg);
      return 0;
    }
    queue_event(q, msg);
  }
}

size_t
qmp_pending_events(const struct qmp *q)
{
  return json_array_size(q->events);
}

void
qmp_drop_events(struct qmp *q)
{
  json_array_clear(q->events);
}

const char *
qmp_socket_path(const struct qmp *q)
{
  return q->path;
}

int
qmp_qemu_version(const struct qmp *q)
{
  return q->version;
}

pid_t
qmp_peer_pid(const struct qmp *q)
{
  return q->peer;
}

static int
handshake(struct qmp *q, double deadline, double timeout)
{
  json_t *greeting = NULL;
  int r = read_message(q, deadline, &greeting);
  if (r == -ETIMEDOUT)
    return error_set(ETIMEDOUT,
                     "%s: no QMP greeting within %.1f s (qemu serves one client per "
                     "QMP socket: is another one connected?)",
                     q->path, timeout);
  if (r < 0)
    return r;
  json_t *v = json_object_get(json_object_get(greeting, "QMP"), "version");
  if (!v) {
    json_decref(greeting);
    return error_set(EPROTO, "%s: not a QMP socket (no QMP greeting)", q->path);
  }
  json_t *qv = json_object_get(v, "qemu");
  q->version = (int)(json_integer_value(json_object_get(qv, "major")) * 10000
                     + json_integer_value(json_object_get(qv, "minor")) * 100
                     + json_integer_value(json_object_get(qv, "micro")));
  json_decref(greeting);
  double left = deadline < 0 ? -1 : deadline - now_seconds();
  return qmp_execute(q, "qmp_capabilities", NULL, NULL, left < 0.1 && left >= 0 ? 0.1 : left);
}

int
qmp_connect(const char *path, double timeout, struct qmp **out)
{
  *out = NULL;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen(path) >= sizeof sa.sun_path)
    return error_set(ENAMETOOLONG, "%s: QMP socket path too long", path);
  strcpy(sa.sun_path, path);
  struct qmp *q = calloc(1, sizeof *q);
  if (q)
    q->fd = -1;
  if (!q || !(q->path = strdup(path)) || !(q->events = json_array())) {
    qmp_close(q);
    return error_set(ENOMEM, "out of memory");
  }
  q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (q->fd < 0) {
    int e = errno;
    qmp_close(q);
    return error_set_errno(e, "%s: socket", path);
  }
  if (connect(q->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    qmp_close(q);
    if (e == ENOENT)
      return error_set(ENOENT, "%s: no such QMP socket", path);
    if (e == ECONNREFUSED)
      return error_set(ECONNREFUSED, "%s: no qemu is listening (connection refused)", path);
    return error_set_errno(e, "%s: connect", path);
  }
  struct ucred cred;
  socklen_t clen = sizeof cred;
  if (getsockopt(q->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
    q->peer = cred.pid;
  int r = handshake(q, deadline_of(timeout), timeout);
  if (r < 0) {
    qmp_close(q);
    return r;
  }
  debug("qmp", "%s: connected to qemu %d (pid %d)", path, q->version, (int)q->peer);
  *out = q;
  return 0;
}

void
qmp_close(struct qmp *q)
{
  if (!q)
    return;
  if (q->fd >= 0)
    close(q->fd);
  json_decref(q->events);
  free(q->buf);
  free(q->path);
  free(q);
}
