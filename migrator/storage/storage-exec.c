/* ferry: the `exec:CMD` storage kind — a site hook run once per action (storage.h).
 * The hook gets the action as one JSON line on stdin and FERRY_ACTION in its environment; it
 * answers with its exit status and, optionally, a JSON object on stdout. */
#include "migrator/storage/storage-impl.h"

#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Quoted hook stderr is cut here: enough for a storage API's error, not a whole trace. */
#define STDERR_QUOTE_MAX 2000

struct buf {
  char *data;
  size_t len, cap;
};

static int
buf_append(struct buf *b, const char *p, size_t n)
{
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
      return -ENOMEM;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static void
trim(struct buf *b)
{
  while (
      b->len
      && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\r'))
    b->data[--b->len] = '\0';
}

extern char **environ;

/* environ plus FERRY_ACTION=action, built before fork (the child may only make
 * async-signal-safe calls).  The strings belong to environ except the last one. */
static char **
hook_environment(const char *action)
{
  size_t n = 0;
  while (environ[n])
    n++;
  char **env = calloc(n + 2, sizeof *env);
  if (!env)
    return NULL;
  size_t j = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "FERRY_ACTION=", 13) != 0)
      env[j++] = environ[i];
  if (asprintf(&env[j], "FERRY_ACTION=%s", action) < 0) {
    free(env);
    return NULL;
  }
  return env;
}

static void
free_environment(char **env)
{
  if (!env)
    return;
  size_t n = 0;
  while (env[n + 1])
    n++;
  free(env[n]);
  free(env);
}

static pid_t
spawn(const char *command, char **env, const sigset_t *mask, int in[2], int out[2], int err[2])
{
  pid_t pid = fork();
  if (pid != 0)
    return pid;
  /* Child: only async-signal-safe calls until exec. */
  signal(SIGPIPE, SIG_DFL);
  sigprocmask(SIG_SETMASK, mask, NULL);
  dup2(in[0], 0);
  dup2(out[1], 1);
  dup2(err[1], 2);
  for (int i = 0; i < 2; i++) {
    close(in[i]);
    close(out[i]);
    close(err[i]);
  }
  execle("/bin/sh", "sh", "-c", command, (char *)NULL, env);
  _exit(127);
}

/* Feed stdin and drain stdout/stderr together so neither side can block the other. */
static int
exchange(int in_fd, const char *req, size_t req_len, int out_fd, int err_fd, struct buf *out,
         struct buf *err)
{
  size_t sent = 0;
  struct pollfd p[3] = { { .fd = in_fd, .events = POLLOUT },
                         { .fd = out_fd, .events = POLLIN },
                         { .fd = err_fd, .events = POLLIN } };
  while (p[0].fd >= 0 || p[1].fd >= 0 || p[2].fd >= 0) {
    if (poll(p, 3, -1) < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (p[0].fd >= 0 && p[0].revents) {
      ssize_t n = write(in_fd, req + sent, req_len - sent);
      if (n > 0)
        sent += (size_t)n;
      /* EPIPE: the hook did not read its stdin; its exit code still decides. */
      if (n < 0 && errno != EAGAIN && errno != EINTR)
        sent = req_len;
      if (sent == req_len) {
        close(in_fd);
        p[0].fd = -1;
      }
    }
    for (int i = 1; i < 3; i++) {
      if (p[i].fd < 0 || !p[i].revents)
        continue;
      char chunk[4096];
      ssize_t n = read(p[i].fd, chunk, sizeof chunk);
      if (n > 0) {
        if (buf_append(i == 1 ? out : err, chunk, (size_t)n) < 0)
          return -ENOMEM;
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(p[i].fd);
        p[i].fd = -1;
      }
    }
  }
  return 0;
}

int
storage_exec_run(const char *command, const json_t *act, json_t **reply)
{
  const char *what = json_string_value(json_object_get(act, "action"));
  if (!what)
    return error_set(EINVAL, "storage hook: action without \"action\"");
  char *line = json_dumps(act, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!line)
    return error_set(ENOMEM, "out of memory");
  size_t line_len = strlen(line);
  char *req = realloc(line, line_len + 2);
  if (!req) {
    free(line);
    return error_set(ENOMEM, "out of memory");
  }
  req[line_len++] = '\n';
  req[line_len] = '\0';
  debug("storage", "exec '%s' <<< %s", command, req);

  int in[2] = { -1, -1 }, outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
  struct buf out = { 0 }, err = { 0 };
  int r = 0;
  char **env = hook_environment(what);
  if (!env) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  if (pipe2(in, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
    r = error_set_errno(errno, "storage hook: pipe");
    goto out;
  }
  /* A hook that exits without reading stdin must not kill us with SIGPIPE: block it in this
   * thread for the exchange and swallow a pending one afterwards. */
  sigset_t pipe_set, old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  pid_t pid = spawn(command, env, &old_set, in, outp, errp);
  if (pid < 0) {
    r = error_set_errno(errno, "storage hook '%s': fork", command);
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    goto out;
  }
  close(in[0]);
  close(outp[1]);
  close(errp[1]);
  in[0] = outp[1] = errp[1] = -1;
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  int xr = exchange(in[1], req, line_len, outp[0], errp[0], &out, &err);
  in[1] = outp[0] = errp[0] = -1; /* closed by exchange (or left to the child's exit) */
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  struct timespec zero = { 0, 0 };
  while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
    ;
  pthread_sigmask(SIG_SETMASK, &old_set, NULL);
  if (xr < 0) {
    r = error_set_errno(-xr, "storage hook '%s': talking to the hook", command);
    goto out;
  }
  trim(&err);
  trim(&out);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    char how[64];
    if (WIFEXITED(status))
      snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
    else
      snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
    if (err.len > STDERR_QUOTE_MAX)
      err.data[STDERR_QUOTE_MAX] = '\0';
    r = error_set(EIO, "storage hook '%s' failed on %s of %s (%s)%s%s", command, what,
                  storage_action_target(act), how, err.len ? ": " : "", err.len ? err.data : "");
    goto out;
  }
  if (err.len)
    log_info("storage hook '%s' (%s of %s): %s", command, what, storage_action_target(act),
             err.data);
  if (reply)
    *reply = NULL;
  if (out.len) {
    json_error_t jerr;
    json_t *doc = json_loads(out.data, 0, &jerr);
    if (!doc || !json_is_object(doc)) {
      json_decref(doc);
      r = error_set(EINVAL, "storage hook '%s': reply to %s of %s is not a JSON object: %s",
                    command, what, storage_action_target(act), out.data);
      goto out;
    }
    if (reply)
      *reply = doc;
    else
      json_decref(doc);
  }
out:
  for (int i = 0; i < 2; i++) {
    if (in[i] >= 0)
      close(in[i]);
    if (outp[i] >= 0)
      close(outp[i]);
    if (errp[i] >= 0)
      close(errp[i]);
  }
  free_environment(env);
  free(out.data);
  free(err.data);
  free(req);
  return r;
}
