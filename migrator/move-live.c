/* ferry: the live move, see move-live.h.
 *
 * state.json phases: "prepared" (clone server started, guest on its image) -> "switching"
 * (written just before stop: a paused guest found by --resume in this phase was paused by
 * ferry) -> "switched" (guest on the clone) -> "converged" -> "pivoted" (guest on DEST) ->
 * removed with the workdir.  --resume trusts QMP over the phase: it looks at which node the
 * device is on and carries on from there. */
#include "migrator/move-live.h"

#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/util.h"
#include "hypervisor/live.h"
#include "hypervisor/qmp.h"
#include "migrator/clone-server.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QMP_CONNECT_TIMEOUT 10.0    /* first contact: a guest that does not answer is an error */
#define QMP_RECONNECT_TIMEOUT 120.0 /* at the pivot: another client may hold the monitor */
#define DEFAULT_RECONNECT_DELAY 300
#define OPEN_TIMEOUT 10
#define MAX_RESTARTS 20

struct job {
  const struct live_move_options *o;
  struct live_move_report *rep;
  double t0;
  /* recorded in state.json */
  char *qmp, *device, *dest, *workdir, *image, *original_node, *format;
  char tag[20], phase[16];
  bool dest_created;
  uint64_t clone_size, region_size, rate;
  int reconnect_delay;
  double switched_epoch;
  /* this run */
  struct live_nodes nodes;
  struct clone_server srv;
  bool srv_ready;
  int lock_fd;
  char *state_path;
};

static void step(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
step(struct job *j, const char *fmt, ...)
{
  if (!j->o || !j->o->out)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(j->o->out, "[%7.3f] ", now_seconds() - j->t0);
  vfprintf(j->o->out, fmt, ap);
  fputc('\n', j->o->out);
  fflush(j->o->out);
  va_end(ap);
}

static double
wall_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
iso_time(double epoch, char *buf, size_t len)
{
  time_t t = (time_t)epoch;
  struct tm tm;
  gmtime_r(&t, &tm);
  char base[32];
  strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf, len, "%s.%03dZ", base, (int)((epoch - (double)t) * 1000));
}

static char *
in_workdir(const struct job *j, const char *name)
{
  char *s = NULL;
  return asprintf(&s, "%s/%s", j->workdir, name) < 0 ? NULL : s;
}

/* --- state.json ------------------------------------------------------------------------ */

static int
save_state(struct job *j, const char *phase)
{
  if (phase != j->phase)
    snprintf(j->phase, sizeof j->phase, "%s", phase);
  json_t *st = json_pack(
      "{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:i, s:f, s:f, s:s, "
      "s:I, s:I, s:I, s:I, s:i}",
      "version", 1, "phase", j->phase, "qmp", j->qmp, "device", j->device, "dest", j->dest, "image",
      j->image, "original_node", j->original_node, "format", j->format, "tag", j->tag,
      "dest_created", j->dest_created, "clone_size", (json_int_t)j->clone_size, "region_size",
      (json_int_t)j->region_size, "rate", (json_int_t)j->rate, "reconnect_delay",
      j->reconnect_delay, "switched_epoch", j->switched_epoch, "paused_seconds",
      j->rep->paused_seconds, "switched_at", j->rep->switched_at, "size", (json_int_t)j->rep->size,
      "bytes_copied", (json_int_t)j->rep->bytes_copied, "bytes_fetched",
      (json_int_t)j->rep->bytes_fetched, "bytes_skipped", (json_int_t)j->rep->bytes_skipped,
      "server_restarts", (int)j->rep->server_restarts);
  if (!st)
    return error_set(ENOMEM, "out of memory");
  char *tmp = NULL;
  int r = 0;
  if (asprintf(&tmp, "%s.tmp", j->state_path) < 0) {
    json_decref(st);
    return error_set(ENOMEM, "out of memory");
  }
  /* Written whole, made durable, renamed: --resume reads the old state or the new one. */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || json_dumpfd(st, fd, JSON_INDENT(2)) < 0 || write(fd, "\n", 1) != 1 || fsync(fd) < 0)
    r = error_set_errno(errno ? errno : EIO, "%s: write", tmp);
  if (fd >= 0)
    close(fd);
  if (r == 0 && rename(tmp, j->state_path) < 0)
    r = error_set_errno(errno, "%s: rename", j->state_path);
  if (r == 0 && fsync_parent_dir(j->state_path) < 0)
    error_clear(); /* not fatal, as before: the state file is written, its name may lag */
  free(tmp);
  json_decref(st);
  return r;
}

static char *
jstr(json_t *o, const char *key)
{
  const char *s = json_string_value(json_object_get(o, key));
  return s ? strdup(s) : NULL;
}

static uint64_t
jnum(json_t *o, const char *key)
{
  json_int_t v = json_integer_value(json_object_get(o, key));
  return v > 0 ? (uint64_t)v : 0;
}

static int
load_state(struct job *j)
{
  json_error_t je;
  json_t *st = json_load_file(j->state_path, 0, &je);
  if (!st)
    return error_set(ENOENT, "%s: %s", j->state_path,
                     access(j->state_path, F_OK) == 0 ? je.text
                                                      : "no live move recorded in this workdir");
  j->qmp = jstr(st, "qmp");
  j->device = jstr(st, "device");
  j->dest = jstr(st, "dest");
  j->image = jstr(st, "image");
  j->original_node = jstr(st, "original_node");
  j->format = jstr(st, "format");
  const char *tag = json_string_value(json_object_get(st, "tag"));
  const char *phase = json_string_value(json_object_get(st, "phase"));
  snprintf(j->tag, sizeof j->tag, "%s", tag ? tag : "");
  snprintf(j->phase, sizeof j->phase, "%s", phase ? phase : "");
  j->dest_created = json_is_true(json_object_get(st, "dest_created"));
  j->clone_size = jnum(st, "clone_size");
  j->region_size = jnum(st, "region_size");
  j->rate = jnum(st, "rate");
  j->reconnect_delay = (int)jnum(st, "reconnect_delay");
  j->switched_epoch = json_number_value(json_object_get(st, "switched_epoch"));
  j->rep->paused_seconds = json_number_value(json_object_get(st, "paused_seconds"));
  const char *at = json_string_value(json_object_get(st, "switched_at"));
  snprintf(j->rep->switched_at, sizeof j->rep->switched_at, "%s", at ? at : "");
  j->rep->size = jnum(st, "size");
  j->rep->bytes_copied = jnum(st, "bytes_copied");
  j->rep->bytes_fetched = jnum(st, "bytes_fetched");
  j->rep->bytes_skipped = jnum(st, "bytes_skipped");
  j->rep->server_restarts = (unsigned)jnum(st, "server_restarts");
  json_decref(st);
  if (!j->qmp || !j->device || !j->dest || !j->image || !j->original_node || !j->format || !*j->tag
      || !*j->phase)
    return error_set(EINVAL, "%s: incomplete live-move state", j->state_path);
  live_nodes_init(&j->nodes, j->tag);
  return 0;
}

/* --- workdir --------------------------------------------------------------------------- */

static int
lock_workdir(struct job *j)
{
  char *lock = in_workdir(j, "lock");
  if (!lock)
    return error_set(ENOMEM, "out of memory");
  j->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  int r = 0;
  if (j->lock_fd < 0)
    r = error_set_errno(errno, "%s", lock);
  else if (flock(j->lock_fd, LOCK_EX | LOCK_NB) < 0) {
    char pid[32] = "?";
    ssize_t n = pread(j->lock_fd, pid, sizeof pid - 1, 0);
    if (n > 0)
      pid[strcspn(pid, "\n")] = '\0';
    r = error_set(EBUSY, "%s is in use by another ferry live-move (pid %s)", j->workdir, pid);
  } else {
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(j->lock_fd, 0) < 0 || pwrite(j->lock_fd, pid, (size_t)n, 0) != n)
      r = error_set_errno(errno, "%s", lock);
  }
  free(lock);
  return r;
}

/* Remove the workdir's files (the move is done, or undone). */
static void
remove_workdir(struct job *j)
{
  const char *names[] = { "state.json", "state.json.tmp", "nbd.map", "nbd.map.marks", "nbd.sock",
                          "nbd.ctl",    "nbd.pid",        "nbd.log", "lock" };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char *p = in_workdir(j, names[i]);
    if (p)
      unlink(p);
    free(p);
  }
  if (rmdir(j->workdir) < 0 && errno != ENOENT)
    log_warning("%s: not removed: %s", j->workdir, strerror(errno));
}

/* --- DEST ------------------------------------------------------------------------------ */

/* Room for a qcow2 image to be fully allocated: data and L2 clusters for the whole virtual
 * size, refcount blocks and table for every cluster (64-bit refcounts, the widest), on top
 * of the file as it is.  An upper bound: DEST is sparse. */
static uint64_t
qcow2_room(uint64_t file_size, uint64_t virtual_size, uint64_t cluster)
{
  if (!cluster)
    cluster = 65536;
  uint64_t clusters = (virtual_size + cluster - 1) / cluster;
  uint64_t l2 = (clusters * 16 + cluster - 1) / cluster; /* extended L2 entries are 16 bytes */
  uint64_t total = clusters + l2 + file_size / cluster + 16;
  uint64_t refblocks = (total * 8 + cluster - 1) / cluster;
  uint64_t reftable = (refblocks * 8 + cluster - 1) / cluster;
  uint64_t room = file_size + (clusters + l2 + 2 * (refblocks + reftable) + 16) * cluster;
  return (room + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
}

static int
prepare_dest(struct job *j, const struct live_disk *d)
{
  struct stat ds, is;
  bool image_is_path = d->image[0] == '/';
  if (stat(j->dest, &ds) == 0) {
    if (image_is_path && stat(d->image, &is) == 0 && is.st_dev == ds.st_dev
        && is.st_ino == ds.st_ino)
      return error_set(EINVAL, "%s is device %s's current image: give another destination", j->dest,
                       j->device);
    int fd = open(j->dest, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return error_set_errno(errno, "%s", j->dest);
    off_t size = lseek(fd, 0, SEEK_END);
    close(fd);
    if (size < 0 || (uint64_t)size < j->clone_size)
      return error_set(ENOSPC, "%s: %lld bytes, smaller than the %llu bytes device %s needs%s",
                       j->dest, (long long)size, (unsigned long long)j->clone_size, j->device,
                       strcmp(d->format_driver, "qcow2") == 0 ? " (its qcow2 image fully allocated)"
                                                              : "");
    j->dest_created = false;
    return 0;
  }
  if (errno != ENOENT)
    return error_set_errno(errno, "%s", j->dest);
  int fd = open(j->dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return error_set_errno(errno, "%s: create", j->dest);
  int r = ftruncate(fd, (off_t)j->clone_size) < 0 ? error_set_errno(errno, "%s: truncate", j->dest)
                                                  : 0;
  close(fd);
  if (r < 0) {
    unlink(j->dest);
    return r;
  }
  j->dest_created = true;
  return 0;
}

/* --- QMP ------------------------------------------------------------------------------- */

/* Connect, waiting while another client holds the monitor (up to timeout seconds); a qemu
 * that is gone is an error at once. */
static int
connect_qmp(struct job *j, double timeout, struct qmp **q)
{
  double deadline = now_seconds() + timeout;
  for (;;) {
    int r = qmp_connect(j->qmp, 5, q);
    if (r == 0 || r != -ETIMEDOUT || now_seconds() > deadline)
      return r;
    step(j, "QMP %s busy (another client): retrying", j->qmp);
  }
}

/* The switch's last check, the guest paused: the clone server must be alive and answer. */
static int
check_server(void *opaque)
{
  struct job *j = opaque;
  const char *f = getenv("FERRY_LIVE_FAULT"); /* testing aid, docs/live-move.md */
  if (f && strcmp(f, "kill-server-before-switch") == 0 && j->srv.pid > 0) {
    kill(j->srv.pid, SIGKILL);
    while (clone_server_alive(&j->srv))
      nanosleep(&(struct timespec){ 0, 1000000L }, NULL);
  }
  if (!clone_server_alive(&j->srv))
    return error_set(EIO, "the clone server %s", j->srv.how);
  if (clone_server_call(&j->srv, "status", NULL, 2) < 0)
    return error_prefix("the clone server does not answer");
  return 0;
}

/* Before the nbd node is detached after a failed switch: a dead server is started again
 * (paused: it holds nothing of value) so that qemu's blockdev-del does not wait for it. */
static int
server_up(void *opaque)
{
  struct job *j = opaque;
  if (clone_server_alive(&j->srv))
    return 0;
  step(j, "clone server %s: starting it for qemu to let go of the export", j->srv.how);
  return clone_server_start(&j->srv, true);
}

static int
server_init(struct job *j)
{
  return clone_server_init(&j->srv, j->o ? j->o->program : NULL, j->workdir, j->image, j->dest,
                           strcmp(j->format, "qcow2") == 0 ? j->clone_size : 0, j->region_size,
                           j->rate);
}

/* Running, or started (paused before the switch, hydrating after it). */
static int
ensure_server(struct job *j, bool paused)
{
  if (clone_server_alive(&j->srv) || clone_server_adopt(&j->srv) == 1)
    return 0;
  int r = clone_server_start(&j->srv, paused);
  if (r == 0)
    step(j, "clone server started (pid %d): %s -> %s, map %s", (int)j->srv.pid, j->image, j->dest,
         j->srv.map);
  return r;
}

/* --- the phases ------------------------------------------------------------------------ */

static uint64_t
status_u64(json_t *st, const char *key)
{
  return jnum(st, key);
}

static void
take_stats(struct job *j, json_t *st)
{
  j->rep->size = status_u64(st, "size");
  j->rep->bytes_copied = status_u64(st, "bytes_copied");
  j->rep->bytes_fetched = status_u64(st, "bytes_fetched");
  j->rep->bytes_skipped = status_u64(st, "bytes_skipped");
}

static int
do_switch(struct job *j, struct qmp *q, struct live_disk *d)
{
  int r = save_state(j, "switching");
  if (r < 0)
    return r;
  struct live_nbd nbd = { .socket = j->srv.sock,
                          .reconnect_delay = j->reconnect_delay,
                          .open_timeout = OPEN_TIMEOUT };
  double paused = 0;
  struct live_hooks hooks = { .before_move = check_server, .export_up = server_up, .opaque = j };
  if ((r = live_switch(q, d, &j->nodes, &nbd, &hooks, &paused)) < 0)
    return r;
  j->switched_epoch = wall_seconds();
  j->rep->paused_seconds = paused;
  iso_time(j->switched_epoch, j->rep->switched_at, sizeof j->rep->switched_at);
  if (j->o && j->o->out) {
    fprintf(j->o->out, "guest paused %.3f s\n", paused);
    fflush(j->o->out);
  }
  step(j, "device %s switched to the clone export %s (%s node %s)", j->device, j->srv.sock,
       d->format_driver, d->format_node);
  if ((r = save_state(j, "switched")) < 0)
    return r;
  if (j->o && j->o->on_switched)
    j->o->on_switched(j->o->opaque, j->image);
  return 0;
}

/* Hydrate to convergence: progress from the control socket; a server that dies is started
 * again on its map (qemu's nbd client holds the guest's I/O meanwhile). */
static int
wait_converged(struct job *j)
{
  bool tty = j->o && j->o->progress && isatty(2);
  struct progress *bar = NULL;
  double last_line = 0, last_ok = now_seconds();
  unsigned failed_resumes = 0;
  int r = 0;
  for (;;) {
    if (!clone_server_alive(&j->srv)) {
      if (j->rep->server_restarts >= MAX_RESTARTS) {
        r = error_set(EIO, "the clone server %s, %u restarts already", j->srv.how,
                      j->rep->server_restarts);
        break;
      }
      step(j, "clone server %s: starting it again on its map", j->srv.how);
      j->rep->server_restarts++;
      if ((r = clone_server_start(&j->srv, false)) < 0)
        break;
      step(j, "clone server serving again (pid %d)", (int)j->srv.pid);
      save_state(j, j->phase);
    }
    json_t *st = NULL;
    if (clone_server_call(&j->srv, "status", &st, 10) < 0) {
      if (now_seconds() - last_ok > 60) {
        r = error_prefix("the clone server has not answered for 60 s");
        break;
      }
      nanosleep(&(struct timespec){ 0, 100000000L }, NULL);
      continue;
    }
    last_ok = now_seconds();
    const char *state = json_string_value(json_object_get(st, "state")) ?: "?";
    uint64_t size = status_u64(st, "size"), rs = status_u64(st, "region_size");
    uint64_t done = min_u64(status_u64(st, "regions_hydrated") * rs, size);
    take_stats(j, st);
    if (!bar)
      bar = progress_new("hydrating", size, tty);
    progress_set(bar, done);
    bool converged = strcmp(state, "converged") == 0;
    double now = now_seconds();
    if (!tty && j->o && j->o->progress && j->o->out && (now - last_line >= 1.0 || converged)) {
      char line[160];
      progress_format(line, sizeof line, "hydrating", done, size,
                      json_number_value(json_object_get(st, "rate")), 30);
      fprintf(j->o->out, "%s\n", line);
      fflush(j->o->out);
      last_line = now;
    }
    if (strcmp(state, "failed") == 0) {
      const char *why = json_string_value(json_object_get(st, "last_error")) ?: "?";
      if (++failed_resumes > 3) {
        r = error_set(EIO, "the clone failed: %s", why);
        json_decref(st);
        break;
      }
      step(j, "the clone failed (%s): resuming it", why);
      clone_server_call(&j->srv, "resume", NULL, 10);
    } else if (strcmp(state, "paused") == 0)
      clone_server_call(&j->srv, "resume", NULL, 10); /* --paused start, or a resume */
    json_decref(st);
    if (converged)
      break;
    nanosleep(&(struct timespec){ 0, 200000000L }, NULL);
  }
  if (bar) {
    progress_finish(bar);
    progress_free(bar);
  }
  return r;
}

/* After a server restart qemu's nbd client reconnects on its own schedule (a backoff of up
 * to seconds): pivoting before it is back would make the reopen wait for the requests it
 * holds, with qemu's big lock taken.  Wait until the server has its client again. */
static int
wait_client(struct job *j)
{
  double deadline = now_seconds() + j->reconnect_delay;
  bool said = false;
  for (;;) {
    json_t *st = NULL;
    if (clone_server_call(&j->srv, "status", &st, 10) == 0) {
      uint64_t clients = status_u64(st, "clients");
      json_decref(st);
      if (clients > 0)
        return 0;
    }
    if (now_seconds() > deadline)
      return error_set(ETIMEDOUT, "qemu did not reconnect to the clone export within %d s",
                       j->reconnect_delay);
    if (!said)
      step(j, "waiting for qemu's nbd client to reconnect to the clone server");
    said = true;
    nanosleep(&(struct timespec){ 0, 50000000L }, NULL);
  }
}

static int
do_pivot(struct job *j, struct qmp *q, struct live_disk *d)
{
  double drain = 0;
  int r = live_pivot(q, d, &j->nodes, j->dest, &drain);
  if (r < 0)
    return r;
  j->rep->pivot_seconds = drain;
  step(j, "device %s pivoted onto %s (I/O drained %.3f s, guest not paused)", j->device, j->dest,
       drain);
  return save_state(j, "pivoted");
}

static int
finish(struct job *j, struct qmp *q)
{
  int r = clone_server_stop(&j->srv);
  if (r < 0)
    return r;
  step(j, "clone server stopped, map committed");
  const char *forbidden[] = { j->image, j->srv.sock };
  if ((r = live_verify(q, j->device, j->dest, forbidden, 2)) < 0)
    return r;
  step(j, "verified through QMP: device %s runs on %s; qemu holds neither %s nor the clone export",
       j->device, j->dest, j->image);
  snprintf(j->rep->final_image, sizeof j->rep->final_image, "%s", j->dest);
  remove_workdir(j);
  return 0;
}

/* From wherever the guest is (QMP's word), to the end. */
static int
carry_on(struct job *j, struct qmp **qp)
{
  struct qmp *q = *qp;
  struct live_disk d;
  int r = live_inspect(q, j->device, &d);
  if (r < 0)
    return r;
  bool on_clone = strcmp(d.protocol_node, j->nodes.nbd) == 0;
  bool on_dest = strcmp(d.protocol_node, j->nodes.dest) == 0;
  if (!on_clone && !on_dest) {
    if (strcmp(d.protocol_node, j->original_node) != 0) {
      r = error_set(EIO, "device %s is on node %s (%s): neither its image nor the clone nor %s",
                    j->device, d.protocol_node, d.image, j->dest);
      goto out;
    }
    /* Not switched yet (or switched back). */
    char state[32];
    if ((r = live_run_state(q, state, sizeof state)) < 0)
      goto out;
    if (strcmp(state, "paused") == 0 && strcmp(j->phase, "switching") == 0) {
      step(j, "the guest is paused by an interrupted switch: resuming it");
      if ((r = qmp_execute(q, "cont", NULL, NULL, 30)) < 0)
        goto out;
    }
    /* Nodes an interrupted switch attached; the server must serve while qemu lets go. */
    if ((r = ensure_server(j, true)) < 0)
      goto out;
    live_detach(q, j->nodes.format);
    live_detach(q, j->nodes.nbd);
    if ((r = do_switch(j, q, &d)) < 0)
      goto out;
    on_clone = true;
  }
  if (on_clone) {
    if (strcmp(j->phase, "switching") == 0 || strcmp(j->phase, "prepared") == 0) {
      /* Killed between the move and the state write: the guest runs on the clone. */
      char state[32];
      if (live_run_state(q, state, sizeof state) == 0 && strcmp(state, "paused") == 0)
        qmp_execute(q, "cont", NULL, NULL, 30);
      if (j->switched_epoch == 0)
        j->switched_epoch = wall_seconds();
      if ((r = save_state(j, "switched")) < 0)
        goto out;
    }
    if (j->original_node[0] != '#' && strcmp(j->original_node, d.protocol_node) != 0)
      live_detach(q, j->original_node); /* the old image, if an interrupted switch left it */
    bool was_running = clone_server_alive(&j->srv) || clone_server_adopt(&j->srv) == 1;
    if ((r = ensure_server(j, false)) < 0)
      goto out;
    if (!was_running) {
      j->rep->server_restarts++; /* it died after the switch: its map carries on */
      save_state(j, j->phase);
    }
    clone_server_call(&j->srv, "resume", NULL, 10);
    step(j, "hydrating %s from %s (guest running on the clone)", j->dest, j->image);
    /* No QMP while hydrating: the monitor stays free for the hypervisor's manager. */
    qmp_close(q);
    *qp = q = NULL;
    if ((r = wait_converged(j)) < 0)
      goto out;
    j->rep->converged_seconds = wall_seconds() - j->switched_epoch;
    char sz[32], cp[32], fe[32], sk[32];
    step(j,
         "converged: %s (copied %s, fetched on demand %s, zero/holes skipped %s) %.2f s after "
         "the switch",
         format_size(sz, sizeof sz, (double)j->rep->size),
         format_size(cp, sizeof cp, (double)j->rep->bytes_copied),
         format_size(fe, sizeof fe, (double)j->rep->bytes_fetched),
         format_size(sk, sizeof sk, (double)j->rep->bytes_skipped), j->rep->converged_seconds);
    if ((r = save_state(j, "converged")) < 0)
      goto out;
    if ((r = wait_client(j)) < 0)
      goto out;
    if ((r = connect_qmp(j, QMP_RECONNECT_TIMEOUT, qp)) < 0)
      goto out;
    q = *qp;
    live_disk_free(&d);
    if ((r = live_inspect(q, j->device, &d)) < 0)
      goto out;
    if (strcmp(d.protocol_node, j->nodes.nbd) != 0) {
      r = error_set(EIO, "device %s moved to node %s (%s) while hydrating: not pivoting", j->device,
                    d.protocol_node, d.image);
      goto out;
    }
    if ((r = do_pivot(j, q, &d)) < 0)
      goto out;
  } else {
    /* On DEST already: the clone export may still be attached; its server must serve
     * while qemu lets go of it (a converged map: it only serves). */
    if ((r = ensure_server(j, false)) < 0 || (r = live_detach(q, j->nodes.nbd)) < 0)
      goto out;
  }
  r = finish(j, q);
out:
  live_disk_free(&d);
  return r;
}

static void
job_free(struct job *j)
{
  clone_server_free(&j->srv);
  if (j->lock_fd >= 0)
    close(j->lock_fd);
  free(j->qmp);
  free(j->device);
  free(j->dest);
  free(j->workdir);
  free(j->image);
  free(j->original_node);
  free(j->format);
  free(j->state_path);
}

static char *
absolute(const char *path)
{
  if (path[0] == '/')
    return strdup(path);
  char cwd[PATH_MAX];
  char *s = NULL;
  if (!getcwd(cwd, sizeof cwd) || asprintf(&s, "%s/%s", cwd, path) < 0)
    return NULL;
  return s;
}

int
live_move(const struct live_move_options *o, struct live_move_report *rep)
{
  memset(rep, 0, sizeof *rep);
  struct job j = { .o = o, .rep = rep, .t0 = now_seconds(), .lock_fd = -1 };
  struct qmp *q = NULL;
  struct live_disk d = { 0 };
  bool workdir_made = false;
  int r;
  j.qmp = strdup(o->qmp);
  j.device = strdup(o->device);
  j.dest = absolute(o->dest);
  j.region_size = o->region_size;
  j.rate = o->rate;
  j.reconnect_delay = o->reconnect_delay > 0 ? o->reconnect_delay : DEFAULT_RECONNECT_DELAY;
  if (o->workdir)
    j.workdir = absolute(o->workdir);
  else if (j.dest && asprintf(&j.workdir, "%s.ferry-live", j.dest) < 0)
    j.workdir = NULL;
  if (!j.qmp || !j.device || !j.dest || !j.workdir
      || asprintf(&j.state_path, "%s/state.json", j.workdir) < 0) {
    j.state_path = NULL;
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  snprintf(rep->workdir, sizeof rep->workdir, "%s", j.workdir);

  if ((r = qmp_connect(j.qmp, QMP_CONNECT_TIMEOUT, &q)) < 0
      || (r = live_inspect(q, j.device, &d)) < 0)
    goto out;
  if (strncmp(d.protocol_node, "ferry-nbd-", 10) == 0) {
    r = error_set(EBUSY,
                  "device %s is already being moved by ferry live-move (its disk is the "
                  "clone export %s, node %s)",
                  j.device, d.image, d.protocol_node);
    goto out;
  }
  char state[32];
  if ((r = live_run_state(q, state, sizeof state)) < 0)
    goto out;
  if (strcmp(state, "running") != 0) {
    r = error_set(EBUSY,
                  "the guest is not running (state %s): ferry live-move pauses and "
                  "resumes a running guest only, and leaves this one as it is",
                  state);
    goto out;
  }
  j.image = strdup(d.image);
  j.original_node = strdup(d.protocol_node);
  j.format = strdup(d.format_driver);
  if (!j.image || !j.original_node || !j.format) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  j.clone_size = strcmp(d.format_driver, "qcow2") == 0
                     ? qcow2_room(d.image_size, d.virtual_size, d.cluster_size)
                     : d.image_size;
  step(&j, "device %s: %s node %s over %s node %s: %s (%llu bytes)", j.device, d.format_driver,
       d.format_node, d.protocol_driver, d.protocol_node, d.image,
       (unsigned long long)d.image_size);

  if (mkdir(j.workdir, 0700) == 0)
    workdir_made = true;
  else if (errno != EEXIST) {
    r = error_set_errno(errno, "%s: mkdir", j.workdir);
    goto out;
  }
  if ((r = lock_workdir(&j)) < 0)
    goto out;
  if (access(j.state_path, F_OK) == 0) {
    r = error_set(EEXIST,
                  "%s holds an unfinished live move: finish it with ferry live-move "
                  "--resume %s",
                  j.workdir, j.workdir);
    goto out;
  }
  workdir_made = true; /* ours now: removed again if the move does not start */
  if ((r = prepare_dest(&j, &d)) < 0)
    goto out;
  snprintf(j.tag, sizeof j.tag, "%x%x", (unsigned)getpid() & 0xfffff,
           (unsigned)time(NULL) & 0xfffff);
  live_nodes_init(&j.nodes, j.tag);
  if ((r = server_init(&j)) < 0 || (r = save_state(&j, "prepared")) < 0
      || (r = ensure_server(&j, true)) < 0 || (r = do_switch(&j, q, &d)) < 0) {
    char *msg = strdup(error_message());
    struct live_disk now = { 0 };
    bool switched = strcmp(j.phase, "switching") == 0 && live_inspect(q, j.device, &now) == 0
                    && strcmp(now.protocol_node, j.nodes.nbd) == 0;
    live_disk_free(&now);
    if (switched) {
      /* On the clone although the switch reported a failure (the guest could not be
       * resumed): the clone server is its disk now. */
      error_set(-r, "%s; the disk is on the clone: ferry live-move --resume %s", msg ? msg : "?",
                j.workdir);
      free(msg);
      workdir_made = false;
      goto out;
    }
    /* The guest runs on its own image: undo everything. */
    clone_server_kill(&j.srv);
    if (j.dest_created)
      unlink(j.dest);
    remove_workdir(&j);
    workdir_made = false;
    error_set(-r, "%s", msg ? msg : "live move failed");
    free(msg);
    goto out;
  }
  workdir_made = false; /* the guest depends on it now */
  live_disk_free(&d);
  r = carry_on(&j, &q);
  if (r < 0)
    error_prefix("device %s", j.device);
  if (r < 0 && access(j.state_path, F_OK) == 0)
    error_prefix("the guest keeps running (on the clone until the move finishes); finish with "
                 "ferry live-move --resume %s",
                 j.workdir);
out:
  rep->total_seconds = now_seconds() - j.t0;
  if (r < 0 && workdir_made)
    remove_workdir(&j); /* ours, and nothing of value in it: the move never started */
  live_disk_free(&d);
  qmp_close(q);
  job_free(&j);
  return r;
}

int
live_move_resume(const char *workdir, const struct live_move_options *o,
                 struct live_move_report *rep)
{
  memset(rep, 0, sizeof *rep);
  struct job j = { .o = o, .rep = rep, .t0 = now_seconds(), .lock_fd = -1 };
  struct qmp *q = NULL;
  int r;
  j.workdir = absolute(workdir);
  if (!j.workdir || asprintf(&j.state_path, "%s/state.json", j.workdir) < 0) {
    j.state_path = NULL;
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  snprintf(rep->workdir, sizeof rep->workdir, "%s", j.workdir);
  if ((r = load_state(&j)) < 0 || (r = lock_workdir(&j)) < 0 || (r = server_init(&j)) < 0)
    goto out;
  step(&j, "resuming the live move of device %s (%s -> %s), phase %s", j.device, j.image, j.dest,
       j.phase);
  if ((r = connect_qmp(&j, QMP_RECONNECT_TIMEOUT, &q)) < 0)
    goto out;
  r = carry_on(&j, &q);
  if (r < 0)
    error_prefix("device %s", j.device);
  if (r < 0 && access(j.state_path, F_OK) == 0)
    error_prefix("run ferry live-move --resume %s again", j.workdir);
out:
  rep->total_seconds = now_seconds() - j.t0;
  qmp_close(q);
  job_free(&j);
  return r;
}
