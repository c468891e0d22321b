/* ferry: the near-live move, see move.h.
 *
 * Per disk the workdir holds disk-N.map (the clone's region map), disk-N.sock (the NBD export),
 * disk-N.ctl (the control socket), disk-N.pid and disk-N.log (the server's stderr).  Through
 * --ssh the server runs on the host with disk-N.remote.{sock,ctl,pid} and ssh forwards both
 * sockets to the local names, so the rest of the move is the same. */
#include "migrator/move.h"

#include "backends/verify.h"
#include "backends/volume.h"
#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/util.h"
#include "migrator/locate.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT 30.0 /* seconds for a server to start listening */
#define STOP_TIMEOUT 120.0 /* seconds for a server to commit its map and exit */

struct server {
  int64_t disk_id;
  pid_t pid;
  char *sock, *ctl, *pidfile, *map, *log, *mountpoint;
  char *remote_pidfile;
  char *uri; /* the export as this host reaches it */
  uint64_t size;
};

struct run {
  const struct move_options *o;
  double t0;
  struct server *servers;
  size_t n;
};

static void
step(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
step(struct run *r, const char *fmt, ...)
{
  if (!r->o->out)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(r->o->out, "[%7.3f] ", now_seconds() - r->t0);
  vfprintf(r->o->out, fmt, ap);
  fputc('\n', r->o->out);
  fflush(r->o->out);
  va_end(ap);
}

static char *
workfile(const struct move_options *o, int64_t disk, const char *suffix)
{
  char *s = NULL;
  if (asprintf(&s, "%s/disk-%lld%s", o->workdir, (long long)disk, suffix) < 0)
    return NULL;
  return s;
}

static bool
use_fuse(const struct move_options *o)
{
  return o->frontend && strcmp(o->frontend, "fuse") == 0;
}

/* --- TLS TCP endpoints ------------------------------------------------------------------ */

/* "%XX" for what would end a URI query value. */
static char *
uri_escape(const char *s)
{
  char *out = malloc(3 * strlen(s) + 1), *o = out;
  if (!out)
    return NULL;
  for (; *s; s++) {
    if (strchr("%&#?+ ", *s))
      o += sprintf(o, "%%%02X", (unsigned char)*s);
    else
      *o++ = *s;
  }
  *o = 0;
  return out;
}

/* Disk d's listen address ("HOST:PORT+id") and the URI this host connects to. */
static int
tls_endpoint(const struct move_options *o, const struct move_disk *d, char **listen, char **uri)
{
  *listen = *uri = NULL;
  const char *colon = strrchr(o->tls_listen, ':');
  char *end = NULL;
  long port = colon ? strtol(colon + 1, &end, 10) : 0;
  if (!colon || !end || *end || port < 1 || port + d->disk_id > 65535)
    return error_set(EINVAL, "--tls-listen %s: expected HOST:PORT (disk N uses PORT + N)",
                     o->tls_listen);
  int hlen = (int)(colon - o->tls_listen);
  const char *host = o->tls_listen;
  int chlen = hlen;
  const char *chost = host;
  if ((hlen == 7 && strncmp(host, "0.0.0.0", 7) == 0)
      || (hlen == 4 && strncmp(host, "[::]", 4) == 0) || hlen == 0) {
    /* Every address there: reach it by the ssh host's name ("user@host" -> "host"). */
    chost = o->ssh_host ? o->ssh_host : "localhost";
    const char *at = strchr(chost, '@');
    if (at)
      chost = at + 1;
    chlen = (int)strlen(chost);
  }
  char *dir = uri_escape(o->tls_certificates);
  int r = 0;
  if (!dir || asprintf(listen, "%.*s:%lld", hlen, host, (long long)(port + d->disk_id)) < 0
      || asprintf(uri, "nbds://%.*s:%lld/?tls-certificates=%s", chlen, chost,
                  (long long)(port + d->disk_id), dir)
             < 0)
    r = error_set(ENOMEM, "out of memory");
  free(dir);
  return r;
}

/* --- command lines --------------------------------------------------------------------- */

struct argv_builder {
  char **v;
  size_t n;
  bool failed;
};

static void
add(struct argv_builder *b, const char *arg)
{
  char **v = realloc(b->v, (b->n + 2) * sizeof *v);
  char *copy = arg ? strdup(arg) : NULL;
  if (!v || !copy) {
    free(copy);
    if (v)
      b->v = v;
    b->failed = true;
    return;
  }
  b->v = v;
  b->v[b->n++] = copy;
  b->v[b->n] = NULL;
}

static void
add_owned(struct argv_builder *b, char *arg)
{
  if (!arg)
    b->failed = true;
  else
    add(b, arg);
  free(arg);
}

void
move_argv_free(char **argv)
{
  for (size_t i = 0; argv && argv[i]; i++)
    free(argv[i]);
  free(argv);
}

static bool
needs_quoting(const char *s)
{
  if (!*s)
    return true;
  for (; *s; s++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-=:,+@%", *s))
      return true;
  return false;
}

char *
move_argv_string(char *const *argv)
{
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  if (!f)
    return NULL;
  for (size_t i = 0; argv[i]; i++) {
    if (i)
      fputc(' ', f);
    if (!needs_quoting(argv[i])) {
      fputs(argv[i], f);
      continue;
    }
    fputc('\'', f);
    for (const char *p = argv[i]; *p; p++) {
      if (*p == '\'')
        fputs("'\\''", f);
      else
        fputc(*p, f);
    }
    fputc('\'', f);
  }
  fclose(f);
  return out;
}

int
move_server_argv(const struct move_options *o, const char *program, const struct move_disk *d,
                 char ***argv)
{
  bool remote = o->ssh_host != NULL;
  const char *kind = remote ? ".remote" : "";
  char *sfx_sock, *sfx_ctl, *sfx_pid;
  if (asprintf(&sfx_sock, "%s.sock", kind) < 0)
    return error_set(ENOMEM, "out of memory");
  if (asprintf(&sfx_ctl, "%s.ctl", kind) < 0) {
    free(sfx_sock);
    return error_set(ENOMEM, "out of memory");
  }
  if (asprintf(&sfx_pid, "%s.pid", kind) < 0) {
    free(sfx_sock);
    free(sfx_ctl);
    return error_set(ENOMEM, "out of memory");
  }
  struct argv_builder server = { 0 };
  add(&server, program);
  add(&server, "--foreground");
  bool tls = o->tls_listen && !use_fuse(o);
  if (tls) {
    char *listen, *uri;
    if (tls_endpoint(o, d, &listen, &uri) < 0) {
      free(sfx_sock);
      free(sfx_ctl);
      free(sfx_pid);
      return -1;
    }
    free(uri);
    add(&server, "--listen");
    add_owned(&server, listen);
    add(&server, "--tls-certificates");
    add(&server, o->tls_certificates);
  } else if (!use_fuse(o)) {
    add(&server, "--socket");
    add_owned(&server, workfile(o, d->disk_id, sfx_sock));
  } else
    add(&server, "--loop");
  add(&server, "--control");
  add_owned(&server, workfile(o, d->disk_id, sfx_ctl));
  add(&server, "--pidfile");
  add_owned(&server, workfile(o, d->disk_id, sfx_pid));
  if (o->rate) {
    char rate[32];
    snprintf(rate, sizeof rate, "%llu", (unsigned long long)o->rate);
    add(&server, "--rate");
    add(&server, rate);
  }
  if (o->new_map)
    add(&server, "--new-map");
  add(&server, "--source");
  add(&server, d->source);
  add(&server, "--map");
  add_owned(&server, workfile(o, d->disk_id, ".map"));
  add(&server, d->dest);
  if (use_fuse(o))
    add_owned(&server, workfile(o, d->disk_id, ".mnt"));
  free(sfx_sock);
  free(sfx_ctl);
  free(sfx_pid);
  if (server.failed) {
    move_argv_free(server.v);
    return error_set(ENOMEM, "out of memory");
  }
  if (!remote) {
    *argv = server.v;
    return 0;
  }
  /* ssh HOST -- 'quoted command', forwarding the remote sockets to the local names. */
  struct argv_builder ssh = { 0 };
  const char *ssh_prog = getenv("FERRY_SSH");
  add(&ssh, ssh_prog && *ssh_prog ? ssh_prog : "ssh");
  add(&ssh, "-o");
  add(&ssh, "BatchMode=yes");
  add(&ssh, "-o");
  add(&ssh, "ExitOnForwardFailure=yes");
  const char *socks[] = { use_fuse(o) || tls ? NULL : ".sock", ".ctl" };
  for (size_t i = 0; i < 2; i++) {
    if (!socks[i])
      continue;
    char *local = workfile(o, d->disk_id, socks[i]), *rsfx = NULL, *remote_path = NULL, *fwd = NULL;
    if (asprintf(&rsfx, ".remote%s", socks[i]) >= 0)
      remote_path = workfile(o, d->disk_id, rsfx);
    if (local && remote_path && asprintf(&fwd, "%s:%s", local, remote_path) >= 0) {
      add(&ssh, "-L");
      add_owned(&ssh, fwd);
    } else
      ssh.failed = true;
    free(local);
    free(rsfx);
    free(remote_path);
  }
  add(&ssh, o->ssh_host);
  add(&ssh, "--");
  add_owned(&ssh, move_argv_string(server.v));
  move_argv_free(server.v);
  if (ssh.failed) {
    move_argv_free(ssh.v);
    return error_set(ENOMEM, "out of memory");
  }
  *argv = ssh.v;
  return 0;
}

/* --- servers ---------------------------------------------------------------------------- */

static char *
log_tail(const char *path)
{
  char buf[2048];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return strdup("(no output)");
  off_t size = lseek(fd, 0, SEEK_END);
  off_t off = size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1 : 0;
  ssize_t n = pread(fd, buf, sizeof buf - 1, off);
  close(fd);
  if (n <= 0)
    return strdup("(no output)");
  buf[n] = '\0';
  while (n > 0 && buf[n - 1] == '\n')
    buf[--n] = '\0';
  return strdup(buf);
}

static int
spawn(char **argv, const char *log_path, bool die_with_parent, pid_t *pid)
{
  int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0)
    return error_set_errno(errno, "%s: create", log_path);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t p = fork();
  if (p == 0) {
    /* A new process group: a ^C on the terminal must not kill the server before it commits
     * its map; ferry stops it with SIGTERM. */
    setpgid(0, 0);
    if (die_with_parent)
      prctl(PR_SET_PDEATHSIG, SIGTERM);
    dup2(devnull, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execvp(argv[0], argv);
    dprintf(2, "%s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int e = errno;
  close(fd);
  if (devnull >= 0)
    close(devnull);
  if (p < 0)
    return error_set_errno(e, "%s: fork", argv[0]);
  *pid = p;
  return 0;
}

/* Has the child exited?  Reaps it and describes the status. */
static bool
exited(pid_t pid, char *how, size_t len)
{
  int status;
  if (waitpid(pid, &status, WNOHANG) != pid)
    return false;
  if (WIFEXITED(status))
    snprintf(how, len, "exited with status %d", WEXITSTATUS(status));
  else
    snprintf(how, len, "killed by signal %d", WTERMSIG(status));
  return true;
}

static void
sleep_ms(long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

/* Ready = the control socket answers a status (the pidfile alone would not prove the export
 * listens when the server runs over ssh). */
static int
wait_ready(struct server *s, const char *program)
{
  double deadline = now_seconds() + READY_TIMEOUT;
  char how[64];
  for (;;) {
    if (exited(s->pid, how, sizeof how)) {
      s->pid = 0;
      char *tail = log_tail(s->log);
      int r = error_set(EIO, "disk %lld: %s %s before serving: %s", (long long)s->disk_id,
                        program, how, tail ? tail : "");
      free(tail);
      return r;
    }
    json_t *st = NULL;
    if (access(s->ctl, F_OK) == 0 && control_client_call(s->ctl, "status", NULL, &st, 5) == 0) {
      json_int_t size = json_integer_value(json_object_get(st, "size"));
      s->size = size > 0 ? (uint64_t)size : 0;
      json_decref(st);
      if (!s->mountpoint && !s->uri && access(s->sock, F_OK) != 0)
        goto again;
      return 0;
    }
  again:
    if (now_seconds() > deadline)
      return error_set(ETIMEDOUT, "disk %lld: %s did not answer on %s within %.0f s",
                       (long long)s->disk_id, program, s->ctl, READY_TIMEOUT);
    sleep_ms(20);
  }
}

/* Stop gracefully: SIGTERM makes the server flush the destination and commit the map. */
static int
stop_server(const struct move_options *o, struct server *s, const char *program)
{
  if (s->pid <= 0)
    return 0;
  if (o->ssh_host) {
    /* The ssh client exits when the remote server does: ask the remote side to stop it. */
    char *cmd = NULL;
    if (asprintf(&cmd, "kill -TERM \"$(cat '%s')\"", s->remote_pidfile) >= 0) {
      const char *ssh = getenv("FERRY_SSH");
      char *argv[] = { (char *)(ssh && *ssh ? ssh : "ssh"), (char *)"-o", (char *)"BatchMode=yes",
                       (char *)o->ssh_host, (char *)"--", cmd, NULL };
      pid_t k;
      char *klog = workfile(o, s->disk_id, ".stop.log");
      if (klog && spawn(argv, klog, false, &k) == 0)
        waitpid(k, NULL, 0);
      free(klog);
    }
    free(cmd);
  } else
    kill(s->pid, SIGTERM);
  double deadline = now_seconds() + STOP_TIMEOUT;
  char how[64];
  while (!exited(s->pid, how, sizeof how)) {
    if (now_seconds() > deadline)
      return error_set(ETIMEDOUT, "disk %lld: %s (pid %d) did not exit within %.0f s of SIGTERM",
                       (long long)s->disk_id, program, (int)s->pid, STOP_TIMEOUT);
    sleep_ms(20);
  }
  s->pid = 0;
  if (strcmp(how, "exited with status 0") != 0) {
    char *tail = log_tail(s->log);
    int r = error_set(EIO, "disk %lld: %s %s while stopping (map may not be committed): %s",
                      (long long)s->disk_id, program, how, tail ? tail : "");
    free(tail);
    return r;
  }
  return 0;
}

static void
kill_server(struct server *s)
{
  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
  }
}

static void
free_server(struct server *s)
{
  free(s->sock);
  free(s->ctl);
  free(s->pidfile);
  free(s->map);
  free(s->log);
  free(s->mountpoint);
  free(s->remote_pidfile);
  free(s->uri);
}

static int
start_server(struct run *r, const char *program, const struct move_disk *d, struct server *s)
{
  const struct move_options *o = r->o;
  s->disk_id = d->disk_id;
  s->sock = workfile(o, d->disk_id, ".sock");
  s->ctl = workfile(o, d->disk_id, ".ctl");
  s->pidfile = workfile(o, d->disk_id, ".pid");
  s->map = workfile(o, d->disk_id, ".map");
  s->log = workfile(o, d->disk_id, ".log");
  s->remote_pidfile = workfile(o, d->disk_id, ".remote.pid");
  if (use_fuse(o)) {
    s->mountpoint = workfile(o, d->disk_id, ".mnt");
    if (s->mountpoint && mkdir(s->mountpoint, 0700) < 0 && errno != EEXIST)
      return error_set_errno(errno, "%s: mkdir", s->mountpoint);
  }
  if (!s->sock || !s->ctl || !s->pidfile || !s->map || !s->log || !s->remote_pidfile)
    return error_set(ENOMEM, "out of memory");
  if (o->tls_listen && !use_fuse(o)) {
    char *listen;
    if (tls_endpoint(o, d, &listen, &s->uri) < 0)
      return -1;
    free(listen);
  }
  char **argv = NULL;
  int rc = move_server_argv(o, program, d, &argv);
  if (rc < 0)
    return rc;
  char *line = move_argv_string(argv);
  debug("move", "disk %lld: %s", (long long)d->disk_id, line ? line : "?");
  rc = spawn(argv, s->log, o->die_with_parent, &s->pid);
  move_argv_free(argv);
  if (rc == 0)
    rc = wait_ready(s, program);
  if (rc == 0)
    step(r, "disk %lld: destination clone serving (pid %d): %s", (long long)d->disk_id,
         (int)s->pid, line ? line : "");
  free(line);
  return rc;
}

/* The first read served on the destination: what a booting VM does first. */
static int
first_read(struct server *s)
{
  char buf[4096];
  if (s->mountpoint) {
    char *disk = NULL;
    if (asprintf(&disk, "%s/disk", s->mountpoint) < 0)
      return error_set(ENOMEM, "out of memory");
    int fd = open(disk, O_RDONLY | O_CLOEXEC);
    int rc = fd < 0 || pread(fd, buf, sizeof buf, 0) < 0
                 ? error_set_errno(errno, "%s: first read", disk)
                 : 0;
    if (fd >= 0)
      close(fd);
    free(disk);
    return rc;
  }
  char *uri = NULL;
  if (s->uri ? !(uri = strdup(s->uri)) : asprintf(&uri, "nbd+unix:///?socket=%s", s->sock) < 0)
    return error_set(ENOMEM, "out of memory");
  struct volume_options vo;
  volume_options_init(&vo);
  vo.readonly = true;
  vo.connections = 1;
  struct volume *v = NULL;
  int rc = volume_open(uri, &vo, &v);
  if (rc == 0) {
    rc = volume_pread(v, buf, min_u64(sizeof buf, v->size), 0);
    volume_close(v);
  }
  free(uri);
  return rc < 0 ? error_prefix("disk %lld: first read on the destination", (long long)s->disk_id)
                : 0;
}

/* --- convergence ------------------------------------------------------------------------ */

static uint64_t
jget(const json_t *o, const char *key)
{
  json_int_t v = json_integer_value(json_object_get(o, key));
  return v > 0 ? (uint64_t)v : 0;
}

/* Poll every server's status until all have converged, drawing the progress (bytes of
 * regions hydrated, summed over disks); a failed clone stops the wait with its reason. */
static int
wait_converged(struct run *r, struct move_report *rep)
{
  const struct move_options *o = r->o;
  uint64_t total = 0;
  for (size_t i = 0; i < r->n; i++)
    total += r->servers[i].size;
  bool tty = o->progress && isatty(2);
  struct progress *bar = progress_new("hydrating", total, tty);
  double last_line = 0, started = now_seconds(), prev_t = started, shown_rate = 0;
  uint64_t prev_done = 0;
  int rc = 0;
  for (;;) {
    uint64_t done = 0, copied = 0, fetched = 0, skipped = 0;
    size_t converged = 0;
    for (size_t i = 0; i < r->n && rc == 0; i++) {
      json_t *st = NULL;
      rc = control_client_call(r->servers[i].ctl, "status", NULL, &st, 10);
      if (rc < 0)
        break;
      const char *state = json_string_value(json_object_get(st, "state")) ?: "?";
      uint64_t hyd = jget(st, "regions_hydrated"), rs = jget(st, "region_size");
      done += min_u64(hyd * rs, r->servers[i].size);
      copied += jget(st, "bytes_copied");
      fetched += jget(st, "bytes_fetched");
      skipped += jget(st, "bytes_skipped");
      if (strcmp(state, "converged") == 0 || strcmp(state, "direct") == 0)
        converged++;
      else if (strcmp(state, "failed") == 0)
        rc = error_set(EIO, "disk %lld: the clone failed: %s", (long long)r->servers[i].disk_id,
                       json_string_value(json_object_get(st, "last_error")) ?: "unknown reason");
      json_decref(st);
    }
    if (rc < 0)
      break;
    progress_set(bar, done);
    /* The servers' rate covers only the hydrator's copies; count regions done (copies, skipped
     * holes, on-demand fetches) per second instead, smoothed over the last second or so. */
    double t = now_seconds();
    if (t - prev_t >= 0.5) {
      double inst = (double)(done - min_u64(prev_done, done)) / (t - prev_t);
      shown_rate = shown_rate > 0 ? 0.5 * shown_rate + 0.5 * inst : inst;
      prev_t = t;
      prev_done = done;
    }
    rep->bytes_copied = copied;
    rep->bytes_fetched = fetched;
    rep->bytes_skipped = skipped;
    double now = now_seconds();
    if (!tty && o->progress && o->out && (now - last_line >= 1.0 || converged == r->n)) {
      char line[160];
      progress_format(line, sizeof line, "hydrating", done, total, shown_rate, 30);
      fprintf(o->out, "%s\n", line);
      fflush(o->out);
      last_line = now;
    }
    if (converged == r->n)
      break;
    sleep_ms(100);
  }
  progress_finish(bar);
  progress_free(bar);
  if (rc < 0)
    return rc;
  /* The server's own word that the map is complete and committed. */
  for (size_t i = 0; i < r->n; i++) {
    rc = control_client_call(r->servers[i].ctl, "wait", NULL, NULL, -1);
    if (rc < 0)
      return error_prefix("disk %lld: wait", (long long)r->servers[i].disk_id);
  }
  rep->hydrate_seconds = now_seconds() - started;
  return 0;
}

/* --- the final check ---------------------------------------------------------------------- */

/* The guest has not run since it was stopped, so the converged destination must hold exactly
 * the source's bytes: compare them (ferry verify) before the source is renamed away. */
static int
verify_disk(struct run *r, const struct move_disk *d)
{
  struct volume_options vo;
  volume_options_init(&vo);
  vo.readonly = true;
  struct volume *a = NULL, *b = NULL;
  struct verify_result res = { 0 };
  int rc = volume_open(d->source, &vo, &a);
  if (rc == 0)
    rc = volume_open(d->dest, &vo, &b);
  if (rc == 0)
    rc = verify_compare(a, b, NULL, &res);
  if (rc < 0)
    rc = error_prefix("disk %lld: verifying the destination", (long long)d->disk_id);
  else if (!res.equal)
    rc = error_set(EIO,
                   "disk %lld: the destination %s differs from the source %s: %llu byte%s in "
                   "%llu range%s, the first at offset %llu",
                   (long long)d->disk_id, d->dest, d->source,
                   (unsigned long long)res.bytes_differing, res.bytes_differing == 1 ? "" : "s",
                   (unsigned long long)res.total_ranges, res.total_ranges == 1 ? "" : "s",
                   (unsigned long long)(res.n_ranges ? res.ranges[0].offset : 0));
  else
    step(r, "verified: disk %lld destination identical to the source (%s, %.2f s)",
         (long long)d->disk_id, res.b.digest, res.seconds);
  verify_result_free(&res);
  volume_close(b);
  volume_close(a);
  return rc;
}

/* --- the move ----------------------------------------------------------------------------- */

int
move_run(struct storage *st, const struct move_disk *disks, size_t n_disks,
         const struct move_options *o, const struct move_hooks *h, struct move_report *rep)
{
  struct run r = { .o = o, .t0 = now_seconds() };
  memset(rep, 0, sizeof *rep);
  const char *prog_name = use_fuse(o) ? "ferry-fuse" : "ferry-nbd";
  char *program = NULL;
  int rc;
  bool switched = false, resumed = false;
  if (o->program)
    program = strdup(o->program);
  else if (o->ssh_host)
    program = strdup(prog_name); /* on the remote host: found in its $PATH */
  else if ((rc = locate_program(prog_name, use_fuse(o) ? "fuse-mount" : "nbd-server",
                                use_fuse(o) ? "FERRY_FUSE" : "FERRY_NBD", &program)) < 0)
    return rc;
  r.servers = calloc(n_disks ? n_disks : 1, sizeof *r.servers);
  if (!program || !r.servers) {
    free(program);
    free(r.servers);
    return error_set(ENOMEM, "out of memory");
  }

  /* The destination is created while the VM still runs: it is not part of the downtime. */
  if ((rc = storage_prepare(st)) < 0)
    goto fail;
  if (storage_get_kind(st) != STORAGE_NONE)
    step(&r, "storage: destination volumes ready");

  bool was_running = false;
  if (h->stop_vm && (rc = h->stop_vm(h->opaque, &was_running)) < 0)
    goto fail;
  double t_stop = now_seconds();
  step(&r, "VM %s", was_running ? "stopped" : "already stopped (undeployed/powered off)");

  for (size_t i = 0; i < n_disks; i++) {
    if ((rc = start_server(&r, program, &disks[i], &r.servers[i])) < 0) {
      r.n = i + 1;
      goto fail;
    }
    r.n = i + 1;
    rep->size += r.servers[i].size;
  }
  if (h->switch_disks && (rc = h->switch_disks(h->opaque)) < 0)
    goto fail;
  switched = true;
  step(&r, "catalog: VM's disks switched to the destination");
  if (!o->skip_resume && h->resume_vm) {
    if ((rc = h->resume_vm(h->opaque)) < 0)
      goto fail;
    resumed = true;
    step(&r, "VM resumed");
  } else if (o->skip_resume)
    step(&r, "VM resume skipped (--skip-resume)");
  else
    step(&r, "VM left stopped: %s", h->no_resume_reason ? h->no_resume_reason : "no way to resume");
  for (size_t i = 0; i < r.n; i++)
    if ((rc = first_read(&r.servers[i])) < 0)
      goto fail;
  rep->downtime = now_seconds() - t_stop;
  step(&r, "first read served on the destination");
  if (o->out)
    fprintf(o->out, "downtime: %.3f s (VM stopped -> first read served on the destination)\n",
            rep->downtime);

  if ((rc = wait_converged(&r, rep)) < 0)
    goto fail;
  char sz[32], cp[32], fe[32], sk[32];
  format_size(sz, sizeof sz, (double)rep->size);
  format_size(cp, sizeof cp, (double)rep->bytes_copied);
  format_size(fe, sizeof fe, (double)rep->bytes_fetched);
  format_size(sk, sizeof sk, (double)rep->bytes_skipped);
  step(&r, "converged: %s (copied %s, fetched on demand %s, zero/holes skipped %s) in %.2f s", sz,
       cp, fe, sk, rep->hydrate_seconds);
  for (size_t i = 0; i < r.n; i++)
    if ((rc = stop_server(o, &r.servers[i], prog_name)) < 0)
      goto fail;
  step(&r, "%s stopped, map committed", prog_name);
  if (resumed)
    step(&r, "destination not compared with the source: the VM has run on it since");
  else if (o->ssh_host)
    step(&r,
         "destination not compared with the source here: it is on %s (compare `ferry verify "
         "--digest` of both)",
         o->ssh_host);
  else
    for (size_t i = 0; i < n_disks; i++)
      if ((rc = verify_disk(&r, &disks[i])) < 0)
        goto fail;
  if ((rc = storage_finalize(st)) < 0)
    goto fail;
  if (storage_get_kind(st) != STORAGE_NONE)
    step(&r, "storage: source renamed and tagged");
  rep->total_seconds = now_seconds() - r.t0;
  goto out;

fail:
  for (size_t i = 0; i < r.n; i++)
    if (!resumed)
      kill_server(&r.servers[i]);
  /* Before the VM ran on the destination, nothing of value is there: put storage back.
   * After, the destination holds the VM's writes: leave everything for an operator. */
  if (!switched) {
    char *msg = strdup(error_message());
    if (storage_abort(st) < 0)
      log_warning("%s", error_message());
    error_set(-rc, "%s", msg ? msg : "move failed");
    free(msg);
  } else if (!resumed)
    error_prefix("the catalog is already switched (roll it back with ferry migrate --rollback)");
  else
    error_prefix("the VM runs on the destination clone (left running, resumable; see the "
                 "control socket in %s)",
                 o->workdir);
out:
  for (size_t i = 0; i < n_disks; i++)
    free_server(&r.servers[i]);
  free(r.servers);
  free(program);
  return rc;
}
