/* ferry: the control socket's server (see control.h; the client side: control-client.c).
 *
 * The server is one background thread around poll(): a listening unix socket, a wake-up
 * pipe (stop), and non-blocking client connections, each with an input buffer of at most
 * one request line and an output queue.  Nothing a client sends can block another client:
 * a pending "wait" is a flag on its connection, answered when a periodic status check sees
 * the clone converged or failed.
 */
#include "common/control.h"
#include "common/control-internal.h"

#include "backends/clone.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum {
  MAX_CONNS = 128,
  /* Stop reading a client's requests while this much of its output is unsent. */
  OUT_HIGH = 256 * 1024,
  /* How often pending waits look at the clone's state. */
  WAIT_POLL_MS = 100,
};

struct conn {
  int fd;
  char *in; /* CONTROL_MAX_LINE + 1 bytes: one line and its newline */
  size_t in_len;
  bool discarding; /* inside an over-long line: drop bytes up to the next newline */
  bool read_eof;   /* the client shut down its sending side */
  char *out;
  size_t out_len, out_off, out_cap;
  /* A "wait" in progress: its id (or NULL) and deadline (< 0: none). */
  bool waiting;
  json_t *wait_id;
  double wait_deadline, wait_timeout;
  bool dead;
};

struct control_server {
  char *path;
  char *program;
  struct clone *clone;
  unsigned long long size;
  struct control_hooks hooks;
  int listen_fd;
  dev_t sock_dev;
  ino_t sock_ino;
  int wake[2];
  atomic_bool stopping;
  pthread_t thread;
  struct conn *conns[MAX_CONNS];
  unsigned nconns;
};

/* ---------------------------------------------------------------- status */

static json_t *
status_json(struct control_server *s)
{
  unsigned clients = s->hooks.clients ? s->hooks.clients(s->hooks.opaque) : 0;
  json_t *o;
  if (!s->clone) {
    o = json_pack("{s:s, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:n, s:f}", "state", "direct",
                  "size", (json_int_t)s->size, "region_size", 0, "regions_total", 0,
                  "regions_hydrated", 0, "bytes_copied", 0, "bytes_fetched", 0, "bytes_skipped", 0,
                  "rate_limit", 0, "rate", 0.0, "eta", "percent", 100.0);
    if (o)
      json_object_set_new(o, "last_error", json_string(""));
  } else {
    struct clone_status st;
    memset(&st, 0, sizeof st);
    clone_get_status(s->clone, &st);
    st.last_error[sizeof st.last_error - 1] = 0;
    double percent = st.regions_total ? 100.0 * st.regions_hydrated / st.regions_total : 100.0;
    o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:o, s:f, s:s}", "state",
                  clone_state_name(st.state), "size", (json_int_t)st.size, "region_size",
                  (json_int_t)st.region_size, "regions_total", (json_int_t)st.regions_total,
                  "regions_hydrated", (json_int_t)st.regions_hydrated, "bytes_copied",
                  (json_int_t)st.bytes_copied, "bytes_fetched", (json_int_t)st.bytes_fetched,
                  "bytes_skipped", (json_int_t)st.bytes_skipped, "rate_limit",
                  (json_int_t)st.rate_limit, "rate", isfinite(st.rate) ? st.rate : 0.0, "eta",
                  st.eta >= 0 && isfinite(st.eta) ? json_real(st.eta) : json_null(), "percent",
                  percent, "last_error", st.last_error);
    if (o)
      json_object_set_new(o, "held", json_boolean(st.held));
  }
  if (!o)
    return NULL;
  json_object_set_new(o, "clients", json_integer(clients));
  json_object_set_new(o, "control_clients", json_integer(s->nconns));
  json_object_set_new(o, "program", json_string(s->program));
  json_object_set_new(o, "pid", json_integer(getpid()));
  return o;
}

/* ---------------------------------------------------------------- output */

static void
queue_bytes(struct conn *c, const char *p, size_t n)
{
  if (c->dead)
    return;
  if (c->out_off == c->out_len)
    c->out_off = c->out_len = 0;
  if (c->out_len + n > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + n)
      cap *= 2;
    char *b = realloc(c->out, cap);
    if (!b) {
      c->dead = true; /* out of memory: drop this client, not the server */
      return;
    }
    c->out = b;
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, p, n);
  c->out_len += n;
}

/* Queue REPLY (stolen) as one line, with the request's id when it had one. */
static void
send_reply(struct conn *c, json_t *reply, json_t *id)
{
  if (!reply) {
    c->dead = true;
    return;
  }
  if (id)
    json_object_set(reply, "id", id);
  char *text = json_dumps(reply, JSON_COMPACT);
  json_decref(reply);
  if (!text) {
    c->dead = true;
    return;
  }
  queue_bytes(c, text, strlen(text));
  queue_bytes(c, "\n", 1);
  free(text);
}

static void send_error(struct conn *c, json_t *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
send_error(struct conn *c, json_t *id, const char *fmt, ...)
{
  char *msg = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&msg, fmt, ap) < 0)
    msg = NULL;
  va_end(ap);
  send_reply(c, json_pack("{s:b, s:s}", "ok", 0, "error", msg ? msg : "out of memory"), id);
  free(msg);
}

static void
send_status(struct control_server *s, struct conn *c, json_t *id)
{
  json_t *st = status_json(s);
  if (!st) {
    send_error(c, id, "status: out of memory");
    return;
  }
  send_reply(c, json_pack("{s:b, s:o}", "ok", 1, "status", st), id);
}

static void
flush_output(struct conn *c)
{
  while (!c->dead && c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        c->dead = true;
      return;
    }
    c->out_off += n;
  }
}

/* ---------------------------------------------------------------- requests */

/* "rate": a number of bytes/s or a size string; 0 = unlimited. */
static int
parse_rate_field(json_t *v, uint64_t *out)
{
  if (json_is_string(v)) {
    if (parse_size("rate", json_string_value(v), out) < 0)
      return -1;
    return 0;
  }
  if (!json_is_number(v))
    return error_set(EINVAL, "field \"rate\" must be a number of bytes/s or a size string "
                             "like \"50M\"");
  double d = json_number_value(v);
  if (!(d >= 0))
    return error_set(EINVAL, "rate %g is negative", d);
  if (!(d < 9.2e18))
    return error_set(ERANGE, "rate %g is too large", d);
  *out = (uint64_t)d;
  return 0;
}

static bool
needs_clone(struct control_server *s, struct conn *c, json_t *id, const char *cmd)
{
  if (s->clone)
    return true;
  send_error(c, id, "%s: %s serves a plain volume (state \"direct\"): there is no hydrator", cmd,
             s->program);
  return false;
}

static void
handle_request(struct control_server *s, struct conn *c, const char *line, size_t len)
{
  if (memchr(line, 0, len)) {
    send_error(c, NULL, "invalid JSON: the request contains a NUL byte");
    return;
  }
  json_error_t jerr;
  json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
  if (!req) {
    send_error(c, NULL, "invalid JSON at column %d: %s", jerr.column, jerr.text);
    return;
  }
  json_t *id = NULL;
  if (!json_is_object(req)) {
    send_error(c, NULL, "request must be a JSON object, like {\"command\":\"status\"}");
    goto out;
  }
  id = json_object_get(req, "id");
  json_t *cmdv = json_object_get(req, "command");
  if (!cmdv) {
    send_error(c, id, "missing field \"command\"");
    goto out;
  }
  if (!json_is_string(cmdv)) {
    send_error(c, id, "field \"command\" must be a string");
    goto out;
  }
  const char *cmd = json_string_value(cmdv);
  debug("control", "%s: request \"%s\"", s->path, cmd);
  if (strcmp(cmd, "status") == 0) {
    send_status(s, c, id);
  } else if (strcmp(cmd, "pause") == 0) {
    if (needs_clone(s, c, id, cmd)) {
      clone_pause(s->clone);
      send_status(s, c, id);
    }
  } else if (strcmp(cmd, "resume") == 0) {
    if (needs_clone(s, c, id, cmd)) {
      if (clone_is_held(s->clone))
        send_error(c, id,
                   "resume: the clone is held (its source may still change): "
                   "`ferry release` ends the hold and starts the copy");
      else {
        clone_resume(s->clone);
        send_status(s, c, id);
      }
    }
  } else if (strcmp(cmd, "release") == 0) {
    if (needs_clone(s, c, id, cmd)) {
      clone_release(s->clone);
      if (s->hooks.released)
        s->hooks.released(s->hooks.opaque);
      send_status(s, c, id);
    }
  } else if (strcmp(cmd, "set-rate") == 0) {
    json_t *rv = json_object_get(req, "rate");
    uint64_t rate;
    if (!rv)
      send_error(c, id, "set-rate: missing field \"rate\" (bytes/s, or a size like \"50M\")");
    else if (parse_rate_field(rv, &rate) < 0)
      send_error(c, id, "set-rate: %s", error_message());
    else if (needs_clone(s, c, id, cmd)) {
      clone_set_rate(s->clone, rate);
      send_status(s, c, id);
    }
  } else if (strcmp(cmd, "wait") == 0) {
    json_t *tv = json_object_get(req, "timeout");
    double timeout = -1;
    if (tv && !json_is_null(tv)) {
      if (!json_is_number(tv) || !(json_number_value(tv) >= 0)) {
        send_error(c, id, "wait: field \"timeout\" must be a number of seconds >= 0");
        goto out;
      }
      timeout = json_number_value(tv);
    }
    if (!s->clone) {
      send_status(s, c, id); /* a plain volume has nothing to wait for */
      goto out;
    }
    c->waiting = true;
    c->wait_id = id ? json_incref(id) : NULL;
    c->wait_timeout = timeout;
    c->wait_deadline = timeout >= 0 ? now_seconds() + timeout : -1;
  } else {
    send_error(c, id,
               "unknown command \"%s\" (expected status, pause, resume, release, set-rate, "
               "wait)",
               cmd);
  }
out:
  json_decref(req);
}

/* Answer C's pending wait if the clone is done (or its deadline passed). */
static void
check_wait(struct control_server *s, struct conn *c, double now)
{
  struct clone_status st;
  memset(&st, 0, sizeof st);
  clone_get_status(s->clone, &st);
  st.last_error[sizeof st.last_error - 1] = 0;
  json_t *reply = NULL;
  if (st.state == CLONE_CONVERGED) {
    reply = json_pack("{s:b}", "ok", 1);
  } else if (st.state == CLONE_FAILED) {
    char msg[sizeof st.last_error + 32];
    snprintf(msg, sizeof msg, "clone failed: %s",
             st.last_error[0] ? st.last_error : "unknown error");
    reply = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
  } else if (c->wait_deadline >= 0 && now >= c->wait_deadline) {
    char msg[128];
    snprintf(msg, sizeof msg, "wait: not converged after %g s (state \"%s\")", c->wait_timeout,
             clone_state_name(st.state));
    reply = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
  } else {
    return;
  }
  if (reply)
    json_object_set_new(reply, "status", status_json(s));
  json_t *id = c->wait_id;
  c->waiting = false;
  c->wait_id = NULL;
  send_reply(c, reply, id);
  json_decref(id);
}

/* Handle the complete lines in C's input buffer, in order, while it may send. */
static void
process_input(struct control_server *s, struct conn *c)
{
  size_t start = 0;
  while (!c->dead && !c->waiting && c->out_len - c->out_off < OUT_HIGH) {
    char *nl = memchr(c->in + start, '\n', c->in_len - start);
    if (!nl)
      break;
    size_t len = nl - (c->in + start);
    const char *line = c->in + start;
    if (len && line[len - 1] == '\r')
      len--;
    /* Blank lines are ignored, so `nc` users may press return. */
    bool blank = true;
    for (size_t i = 0; i < len && blank; i++)
      blank = line[i] == ' ' || line[i] == '\t';
    if (!blank)
      handle_request(s, c, line, len);
    start = nl + 1 - c->in;
  }
  memmove(c->in, c->in + start, c->in_len - start);
  c->in_len -= start;
  if (c->in_len > CONTROL_MAX_LINE && !memchr(c->in, '\n', c->in_len)) {
    /* No newline within the limit: answer once, then drop the rest of the line. */
    send_error(c, NULL, "request line longer than %d bytes: dropped", CONTROL_MAX_LINE);
    c->discarding = true;
    c->in_len = 0;
  }
}

static void
read_input(struct control_server *s, struct conn *c)
{
  size_t room = CONTROL_MAX_LINE + 1 - c->in_len;
  if (room == 0)
    return;
  ssize_t n = recv(c->fd, c->in + c->in_len, room, 0);
  if (n < 0) {
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
      c->dead = true;
    return;
  }
  if (n == 0) {
    c->read_eof = true;
    return;
  }
  if (c->discarding) {
    /* Still inside an over-long line: keep only what follows its newline. */
    char *nl = memchr(c->in + c->in_len, '\n', n);
    if (!nl)
      return;
    size_t keep = (c->in + c->in_len + n) - (nl + 1);
    memmove(c->in, nl + 1, keep);
    c->in_len = keep;
    c->discarding = false;
  } else {
    c->in_len += n;
  }
  process_input(s, c);
}

/* ---------------------------------------------------------------- connections */

static void
conn_free(struct conn *c)
{
  if (!c)
    return;
  if (c->fd >= 0)
    close(c->fd);
  json_decref(c->wait_id);
  free(c->in);
  free(c->out);
  free(c);
}

static void
accept_clients(struct control_server *s)
{
  for (;;) {
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        debug("control", "%s: accept: %s", s->path, strerror(errno));
      return;
    }
    if (s->nconns == MAX_CONNS) {
      static const char busy[] = "{\"ok\":false,\"error\":\"too many control connections\"}\n";
      ssize_t n = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)n;
      close(fd);
      continue;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c || !(c->in = malloc(CONTROL_MAX_LINE + 1))) {
      free(c);
      close(fd);
      continue;
    }
    c->fd = fd;
    s->conns[s->nconns++] = c;
    debug("control", "%s: client connected (%u)", s->path, s->nconns);
  }
}

static void *
serve(void *arg)
{
  struct control_server *s = arg;
  struct pollfd pfd[MAX_CONNS + 2];
  while (!atomic_load(&s->stopping)) {
    bool any_waiting = false;
    pfd[0] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
    pfd[1] = (struct pollfd){ .fd = s->listen_fd, .events = POLLIN };
    for (unsigned i = 0; i < s->nconns; i++) {
      struct conn *c = s->conns[i];
      short ev = 0;
      if (!c->read_eof && c->in_len <= CONTROL_MAX_LINE && c->out_len - c->out_off < OUT_HIGH)
        ev |= POLLIN;
      if (c->out_off < c->out_len)
        ev |= POLLOUT;
      pfd[i + 2] = (struct pollfd){ .fd = c->fd, .events = ev };
      any_waiting |= c->waiting;
    }
    int r = poll(pfd, s->nconns + 2, any_waiting ? WAIT_POLL_MS : -1);
    if (r < 0 && errno != EINTR) {
      log_error("%s: poll: %s", s->path, strerror(errno));
      break;
    }
    if (r > 0 && (pfd[0].revents & POLLIN)) {
      char b[64];
      ssize_t n = read(s->wake[0], b, sizeof b);
      (void)n;
    }
    unsigned n = s->nconns;
    double now = now_seconds();
    for (unsigned i = 0; i < n; i++) {
      struct conn *c = s->conns[i];
      short rev = r > 0 ? pfd[i + 2].revents : 0;
      if (rev & POLLIN)
        read_input(s, c);
      else if (rev & (POLLHUP | POLLERR | POLLNVAL))
        c->dead = true;
      if (c->waiting && !c->dead)
        check_wait(s, c, now);
      process_input(s, c); /* lines held back by a wait or by unsent output */
      flush_output(c);
    }
    if (r > 0 && (pfd[1].revents & POLLIN))
      accept_clients(s);
    /* Drop finished connections: dead, or shut down with nothing left to answer. */
    unsigned j = 0;
    for (unsigned i = 0; i < s->nconns; i++) {
      struct conn *c = s->conns[i];
      bool done = c->dead
                  || (c->read_eof && !c->waiting && c->out_off == c->out_len
                      && !memchr(c->in, '\n', c->in_len));
      if (done) {
        debug("control", "%s: client gone", s->path);
        conn_free(c);
      } else {
        s->conns[j++] = c;
      }
    }
    s->nconns = j;
  }
  error_clear(); /* this thread's message would leak when it exits */
  return NULL;
}

/* ---------------------------------------------------------------- start / stop */

/* PATH exists: refuse a live server or a non-socket, remove a stale socket file. */
static int
remove_stale(const char *path, const struct sockaddr_un *sa)
{
  struct stat sb;
  if (lstat(path, &sb) < 0)
    return errno == ENOENT ? 0 : error_set_errno(errno, "%s", path);
  if (!S_ISSOCK(sb.st_mode))
    return error_set(EEXIST, "%s: exists and is not a socket (not replacing it)", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error_set_errno(errno, "%s: socket", path);
  int r = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
  int e = errno;
  close(fd);
  if (r == 0)
    return error_set(EADDRINUSE,
                     "%s: control socket in use by a running ferry process (stop it or choose "
                     "another path)",
                     path);
  if (e != ECONNREFUSED)
    return error_set_errno(e, "%s: checking the existing control socket", path);
  debug("control", "%s: replacing a stale socket file", path);
  if (unlink(path) < 0 && errno != ENOENT)
    return error_set_errno(errno, "%s: removing the stale socket file", path);
  return 0;
}

int
control_server_start(const char *path, const char *program, struct clone *clone,
                     unsigned long long size, const struct control_hooks *hooks,
                     struct control_server **out)
{
  if (!path || !*path)
    return error_set(EINVAL, "control socket: empty path");
  struct sockaddr_un sa;
  int r = control_socket_address(path, &sa);
  if (r < 0)
    return r;
  struct control_server *s = calloc(1, sizeof *s);
  if (!s)
    return error_set(ENOMEM, "%s: out of memory", path);
  s->listen_fd = s->wake[0] = s->wake[1] = -1;
  s->path = strdup(path);
  s->program = strdup(program ? program : "ferry");
  s->clone = clone;
  s->size = size;
  if (hooks)
    s->hooks = *hooks;
  if (!s->path || !s->program) {
    r = error_set(ENOMEM, "%s: out of memory", path);
    goto fail;
  }
  if ((r = remove_stale(path, &sa)) < 0)
    goto fail;
  s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->listen_fd < 0) {
    r = error_set_errno(errno, "%s: socket", path);
    goto fail;
  }
  if (bind(s->listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    r = errno == EADDRINUSE
            ? error_set(EADDRINUSE, "%s: control socket in use (another process bound it)", path)
            : error_set_errno(errno, "%s: bind", path);
    goto fail;
  }
  /* Owner only: the socket can pause a migration.  Set before listen(), so nobody can
   * connect while the mode still follows the umask. */
  struct stat sb;
  if (chmod(path, 0600) < 0 || stat(path, &sb) < 0) {
    r = error_set_errno(errno, "%s: chmod 0600", path);
    unlink(path);
    goto fail;
  }
  s->sock_dev = sb.st_dev;
  s->sock_ino = sb.st_ino;
  if (listen(s->listen_fd, 64) < 0 || pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
    r = error_set_errno(errno, "%s: listen", path);
    unlink(path);
    goto fail;
  }
  /* Signals belong to the program's main thread, never to this one. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(&s->thread, NULL, serve, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e) {
    r = error_set_errno(e, "%s: starting the control thread", path);
    unlink(path);
    goto fail;
  }
  debug("control", "%s: serving (%s)", path, clone ? "clone" : "direct");
  *out = s;
  return 0;
fail:
  if (s->listen_fd >= 0)
    close(s->listen_fd);
  if (s->wake[0] >= 0)
    close(s->wake[0]);
  if (s->wake[1] >= 0)
    close(s->wake[1]);
  free(s->path);
  free(s->program);
  free(s);
  return r;
}

void
control_server_stop(struct control_server *s)
{
  if (!s)
    return;
  atomic_store(&s->stopping, true);
  ssize_t n = write(s->wake[1], "x", 1);
  (void)n;
  pthread_join(s->thread, NULL);
  for (unsigned i = 0; i < s->nconns; i++) {
    struct conn *c = s->conns[i];
    /* A program may stop right after convergence (ferry hydrate does): give waiters the
     * final state if there is one, else tell them why they get no answer (best effort). */
    if (c->waiting && !c->dead)
      check_wait(s, c, now_seconds());
    if (c->waiting)
      send_error(c, c->wait_id, "%s is shutting down", s->program);
    flush_output(c);
    conn_free(c);
  }
  /* Unlink only our own socket: a later server may have replaced it. */
  struct stat sb;
  if (stat(s->path, &sb) == 0 && sb.st_dev == s->sock_dev && sb.st_ino == s->sock_ino)
    unlink(s->path);
  close(s->listen_fd);
  close(s->wake[0]);
  close(s->wake[1]);
  free(s->path);
  free(s->program);
  free(s);
}
