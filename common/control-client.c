/* ferry: the control socket's client side (see control.h): one request, one reply line,
 * with a deadline; or a request left pending ("wait") while the caller does other work. */
#include "common/control.h"
#include "common/control-internal.h"

#include "common/error.h"
#include "common/util.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* The address of the socket at PATH (shared with the server). */
int
control_socket_address(const char *path, struct sockaddr_un *sa)
{
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (!path || !*path)
    return error_set(EINVAL, "control socket: empty path");
  if (strlen(path) >= sizeof sa->sun_path)
    return error_set(ENAMETOOLONG, "%s: control socket path longer than %zu bytes", path,
                     sizeof sa->sun_path - 1);
  strcpy(sa->sun_path, path);
  return 0;
}

/* Milliseconds left before DEADLINE (< 0: for ever), for poll(). */
static int
ms_left(double deadline)
{
  if (deadline < 0)
    return -1;
  double left = deadline - now_seconds();
  return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

static int
client_connect(const char *path)
{
  struct sockaddr_un sa;
  int r = control_socket_address(path, &sa);
  if (r < 0)
    return r;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error_set_errno(errno, "%s: socket", path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
    return fd;
  int e = errno;
  close(fd);
  struct stat sb;
  if (e == ENOENT)
    return error_set(ENOENT, "%s: no such control socket", path);
  if ((e == ENOTSOCK || e == ECONNREFUSED) && stat(path, &sb) == 0 && !S_ISSOCK(sb.st_mode))
    return error_set(ENOTSOCK, "%s: not a control socket (not a socket file)", path);
  if (e == ECONNREFUSED)
    return error_set(ECONNREFUSED, "%s: no ferry process is listening (connection refused)", path);
  return error_set_errno(e, "%s: connect", path);
}

struct control_call {
  char *path;
  int fd;
  char *buf;
  size_t len, cap;
};

void
control_call_free(struct control_call *call)
{
  if (!call)
    return;
  if (call->fd >= 0)
    close(call->fd);
  free(call->path);
  free(call->buf);
  free(call);
}

int
control_call_start(const char *path, json_t *req, struct control_call **out)
{
  *out = NULL;
  struct control_call *call = calloc(1, sizeof *call);
  if (!call || !(call->path = strdup(path))) {
    free(call);
    return error_set(ENOMEM, "%s: out of memory", path);
  }
  char *text = NULL;
  int r;
  call->fd = client_connect(path);
  if (call->fd < 0) {
    r = call->fd;
    goto fail;
  }
  text = json_dumps(req, JSON_COMPACT);
  if (!text) {
    r = error_set(EINVAL, "%s: request cannot be encoded as JSON", path);
    goto fail;
  }
  size_t tlen = strlen(text);
  text[tlen++] = '\n'; /* replaces the NUL: the line is sent by length */
  /* A request line is small and the server reads continuously: a blocking send is fine. */
  for (size_t off = 0; off < tlen;) {
    ssize_t n = send(call->fd, text + off, tlen - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      r = error_set_errno(errno, "%s: sending the request", path);
      goto fail;
    }
    off += n;
  }
  free(text);
  *out = call;
  return 0;
fail:
  free(text);
  control_call_free(call);
  return r;
}

int
control_call_finish(struct control_call *call, json_t **reply, double timeout)
{
  double deadline = timeout >= 0 ? now_seconds() + timeout : -1;
  const char *path = call->path;
  *reply = NULL;
  for (;;) {
    char *nl = call->len ? memchr(call->buf, '\n', call->len) : NULL;
    if (nl) {
      json_error_t jerr;
      *reply = json_loadb(call->buf, nl - call->buf, 0, &jerr);
      if (!*reply)
        return error_set(EPROTO, "%s: invalid reply: %s", path, jerr.text);
      if (!json_is_object(*reply)) {
        json_decref(*reply);
        *reply = NULL;
        return error_set(EPROTO, "%s: invalid reply: not a JSON object", path);
      }
      return 0;
    }
    struct pollfd p = { .fd = call->fd, .events = POLLIN };
    int pr = poll(&p, 1, ms_left(deadline));
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr < 0)
      return error_set_errno(errno, "%s: poll", path);
    if (pr == 0)
      return error_set(ETIMEDOUT, "%s: no reply within %g s", path, timeout);
    if (call->len == call->cap) {
      if (call->cap >= 16 * CONTROL_MAX_LINE)
        return error_set(EPROTO, "%s: reply line too long", path);
      size_t cap = call->cap ? call->cap * 2 : 4096;
      char *b = realloc(call->buf, cap);
      if (!b)
        return error_set(ENOMEM, "%s: out of memory", path);
      call->buf = b;
      call->cap = cap;
    }
    ssize_t n = recv(call->fd, call->buf + call->len, call->cap - call->len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return error_set_errno(errno, "%s: reading the reply", path);
    if (n == 0)
      return error_set(ECONNRESET, "%s: the server closed the connection without replying", path);
    call->len += n;
  }
}

int
control_client_request(const char *path, json_t *req, json_t **reply, double timeout)
{
  struct control_call *call;
  *reply = NULL;
  int r = control_call_start(path, req, &call);
  if (r < 0)
    return r;
  r = control_call_finish(call, reply, timeout);
  control_call_free(call);
  return r;
}

int
control_client_call(const char *path, const char *command, json_t *extra, json_t **status,
                    double timeout)
{
  if (status)
    *status = NULL;
  json_t *req = extra ? json_deep_copy(extra) : json_object();
  if (!req || !json_is_object(req)) {
    json_decref(req);
    return error_set(EINVAL, "%s: %s: request fields must be a JSON object", path, command);
  }
  json_object_set_new(req, "command", json_string(command));
  json_t *reply;
  int r = control_client_request(path, req, &reply, timeout);
  json_decref(req);
  if (r < 0)
    return r;
  json_t *st = json_object_get(reply, "status");
  if (status && json_is_object(st))
    *status = json_incref(st);
  if (!json_is_true(json_object_get(reply, "ok"))) {
    const char *msg = json_string_value(json_object_get(reply, "error"));
    r = error_set(EIO, "%s: %s", path, msg ? msg : "request refused (no error message)");
  }
  json_decref(reply);
  return r;
}
