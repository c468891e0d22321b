/* ferry-fuse: a volume (or a hydrating clone) as MOUNTPOINT/disk, optionally loop-attached.
 *
 * Threads:  main (setup, then waits for a signal and runs the shutdown), the FUSE session
 * thread (devloop.c and its workers, which answer every request), the mount
 * watcher (only with --loop), and whatever the volume, clone and control server start.
 * SIGINT/SIGTERM/SIGHUP/SIGUSR1 are blocked everywhere and taken by main with sigwait, so
 * a signal never lands on a worker in the middle of a request.
 *
 * Why the low-level libfuse API: the filesystem is a fixed handful of inodes, so path
 * lookup and the high-level API's inode table buy nothing; and we need the session in our
 * own hands to stop it in a deliberate order (see shutdown()) rather than from libfuse's
 * signal handlers.
 *
 * --supervise (supervise.c): the process that mounted keeps the FUSE device and forks the
 * server described above, restarting it when it dies.  --publish PATH (publish.c): PATH is
 * the clone until convergence, then the destination file; the server then exits once the
 * disk is no longer open.
 */
#include "backends/clone.h"
#include "backends/volume.h"
#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "frontend/daemon.h"
#include "frontend/options.h"
#include "fuse-mount/devloop.h"
#include "fuse-mount/fs.h"
#include "fuse-mount/loop.h"
#include "fuse-mount/mount.h"
#include "fuse-mount/partitions.h"
#include "fuse-mount/publish.h"
#include "fuse-mount/supervise.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* The settings of one run, parsed from the command line before anything is done. */
struct options {
  struct frontend_options f; /* --source --map ... --control --pidfile --foreground */
  const char *volume, *mountpoint, *publish;
  bool readonly, direct_io, loop, allow_other, supervise;
  unsigned threads;
};

struct server {
  struct options *o;
  char mountpoint[PATH_MAX]; /* absolute */
  char disk_path[PATH_MAX + 8];
  struct volume *vol;
  struct clone *clone;
  struct fs *fs;
  struct fuse_session *se;
  dev_t mount_dev; /* st_dev of the mounted filesystem: identifies it in mountinfo */
  struct control_server *control;
  struct loop_device loop;
  bool loop_attached;
  pthread_t main_thread, session_thread, watch_thread, converge_thread;
  bool session_started, watch_started, converge_started;
  int watch_stop[2];
  atomic_bool session_ended, mount_gone, stopping;
  struct handoff *handoff; /* --supervise: the device and INIT from the supervisor */
  struct publish publish;  /* --publish */
  atomic_bool published;   /* --publish: the destination is at PATH now */
};

static void
usage(FILE *f)
{
  fprintf(f, "Usage: ferry-fuse [OPTIONS] VOLUME MOUNTPOINT\n"
             "       ferry-fuse [OPTIONS] --source SRC --map MAP [CLONE OPTIONS] DEST MOUNTPOINT\n"
             "\n"
             "Serve a volume (path, file://, nbd://, nbd+unix://, http(s)://) as MOUNTPOINT/disk,\n"
             "and each partition of an MBR or GPT table as MOUNTPOINT/disk-pN.  The second form\n"
             "serves a lazy clone of SRC into DEST, hydrating in the background.\n"
             "\n"
             "Mount:\n");
  frontend_help_line(f, "-r, --read-only", "serve read-only (implied by a read-only volume)");
  frontend_help_line(f, "    --direct-io", "bypass the kernel page cache (default)");
  frontend_help_line(f, "    --no-direct-io", "let the kernel cache the disk's pages");
  frontend_help_line(f, "    --loop", "attach a loop device to MOUNTPOINT/disk,\nprint /dev/loopN");
  frontend_help_line(f, "    --allow-other", "let other users access the mount");
  frontend_help_line(f, "    --threads N", "at most N FUSE worker threads (default 16)");
  frontend_help_line(f, "    --publish PATH",
                     "make PATH the clone (a symlink to the disk or\nloop device), at convergence "
                     "the destination\nfile; exit once the disk is no longer open");
  frontend_help_line(f, "    --supervise",
                     "keep the mount when the server dies and start\nit again on its map");
  frontend_options_help(f, FRONTEND_VOLUME);
  fprintf(f, "Clone:\n");
  frontend_options_help(f, FRONTEND_CLONE);
  fprintf(f, "Process:\n");
  frontend_options_help(f, FRONTEND_SERVE | FRONTEND_DAEMON | FRONTEND_COMMON);
  fprintf(f, "\n"
             "Without --foreground ferry-fuse returns once the mount is ready.  It unmounts\n"
             "cleanly (flush, detach its loop device) on SIGINT, SIGTERM or fusermount3 -u\n"
             "(with --loop: fusermount3 -u -z).  See ferry-fuse(1).\n");
}

enum {
  OPT_DIRECT = 256,
  OPT_NO_DIRECT,
  OPT_LOOP,
  OPT_ALLOW_OTHER,
  OPT_THREADS,
  OPT_PUBLISH,
  OPT_SUPERVISE
};

/* ferry-fuse's own flags; the clone and process flags come from frontend/options.c. */
static const struct option long_options[] = {
  { "read-only", no_argument, NULL, 'r' },
  { "direct-io", no_argument, NULL, OPT_DIRECT },
  { "no-direct-io", no_argument, NULL, OPT_NO_DIRECT },
  { "loop", no_argument, NULL, OPT_LOOP },
  { "allow-other", no_argument, NULL, OPT_ALLOW_OTHER },
  { "threads", required_argument, NULL, OPT_THREADS },
  { "publish", required_argument, NULL, OPT_PUBLISH },
  { "supervise", no_argument, NULL, OPT_SUPERVISE },
  { NULL, 0, NULL, 0 },
};

static int
take_option(void *opaque, int code, const char *arg)
{
  struct options *o = opaque;
  uint64_t n;
  switch (code) {
  case 'r':
    o->readonly = true;
    return 0;
  case OPT_DIRECT:
    o->direct_io = true;
    return 0;
  case OPT_NO_DIRECT:
    o->direct_io = false;
    return 0;
  case OPT_LOOP:
    o->loop = true;
    return 0;
  case OPT_ALLOW_OTHER:
    o->allow_other = true;
    return 0;
  case OPT_PUBLISH:
    o->publish = arg;
    return 0;
  case OPT_SUPERVISE:
    o->supervise = true;
    return 0;
  case OPT_THREADS:
    if (parse_uint("--threads", arg, 1, 256, &n) < 0)
      return -1;
    o->threads = (unsigned)n;
    return 0;
  }
  return error_set(EINVAL, "option code %d is not understood", code);
}

/* ferry-fuse's words for a flag getopt_long could not take (tests and scripts know them). */
static void
fuse_getopt_error(int c, char **argv)
{
  if (c == '?' && optopt > 0 && optopt < 128)
    error_set(EINVAL, "option '-%c' is unknown or lacks its value", optopt);
  else
    error_set(EINVAL, "option '%s' is unknown or lacks its value", argv[optind - 1]);
}

static const struct frontend_program program = {
  .name = "ferry-fuse",
  .groups = FRONTEND_CLONE | FRONTEND_SERVE | FRONTEND_DAEMON | FRONTEND_VOLUME,
  .stop_at_operand = true,
  .shortopts = "r",
  .longopts = long_options,
  .take = take_option,
  .usage = usage,
  .getopt_error = fuse_getopt_error,
};

/* -1 to go on, else the exit code. */
static int
parse_args(int argc, char **argv, struct options *o)
{
  memset(o, 0, sizeof *o);
  o->direct_io = true;
  o->threads = 16;
  frontend_options_init(&o->f);
  int rc = frontend_parse(&program, argc, argv, &o->f, o);
  if (rc != FRONTEND_CONTINUE)
    return rc;
  if (argc - optind < 2)
    error_set(EINVAL, argc - optind == 0 ? "missing VOLUME and MOUNTPOINT" : "missing MOUNTPOINT");
  else if (argc - optind > 2)
    error_set(EINVAL, "unexpected argument '%s'", argv[optind + 2]);
  else if (o->f.source && o->readonly)
    error_set(EINVAL, "--read-only cannot serve a clone (its destination is written)");
  else if (o->publish && !o->f.source)
    error_set(EINVAL, "--publish needs a clone (--source and --map): PATH becomes its "
                      "destination file at convergence");
  else {
    o->volume = argv[optind];
    o->mountpoint = argv[optind + 1];
    return -1;
  }
  return frontend_usage_error(&program);
}

/* A mount over a non-empty directory would hide its files: refuse it, as fuse2 did. */
static int
check_mountpoint(const char *path, char *abs)
{
  struct stat st;
  if (stat(path, &st) < 0)
    return error_set_errno(errno, "mountpoint %s", path);
  if (!S_ISDIR(st.st_mode))
    return error_set(ENOTDIR, "mountpoint %s: not a directory", path);
  DIR *d = opendir(path);
  if (!d)
    return error_set_errno(errno, "mountpoint %s", path);
  struct dirent *e;
  int r = 0;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      r = error_set(ENOTEMPTY, "mountpoint %s: not empty (it holds '%s')", path, e->d_name);
      break;
    }
  closedir(d);
  if (r == 0 && !realpath(path, abs))
    r = error_set_errno(errno, "mountpoint %s", path);
  return r;
}

static int
read_volume(void *opaque, void *buf, size_t len, uint64_t off)
{
  struct volume *v = opaque;
  uint64_t align = v->min_block > 1 ? v->min_block : 1;
  uint64_t start = off / align * align, end = (off + len + align - 1) / align * align;
  if (start == off && end == off + len)
    return volume_pread(v, buf, len, off);
  char *b = malloc(end - start);
  if (!b)
    return error_set(ENOMEM, "out of memory");
  int r = volume_pread(v, b, end - start, start);
  if (r == 0)
    memcpy(buf, b + (off - start), len);
  free(b);
  return r;
}

static int
open_volume(struct server *s)
{
  struct options *o = s->o;
  int r;
  if (o->f.source) {
    struct clone_options co;
    frontend_clone_options(&o->f, &co);
    /* A server started again after its predecessor ended the hold (--supervise). */
    if (co.hold && s->handoff && atomic_load(s->handoff->released)) {
      debug("fuse", "the hold was released by an earlier server");
      co.hold = false;
    }
    if ((r = clone_open(o->f.source, o->f.map, o->volume, &co, &s->clone)) < 0)
      return r;
    s->vol = clone_volume(s->clone);
    return 0;
  }
  struct volume_options vo;
  volume_options_init(&vo);
  vo.readonly = o->readonly;
  vo.connections = o->f.connections;
  r = volume_open(o->volume, &vo, &s->vol);
  if (r == -EROFS && !o->readonly) { /* e.g. http://: serve it read-only */
    vo.readonly = true;
    r = volume_open(o->volume, &vo, &s->vol);
  }
  if (r < 0)
    return r;
  if (!volume_can(s->vol, VOLUME_CAN_WRITE) && !o->readonly) {
    debug("fuse", "%s is read-only: serving it read-only", o->volume);
    o->readonly = true;
  }
  return 0;
}

static void *
session_main(void *arg)
{
  struct server *s = arg;
  int r = devloop_run(s->se, s->o->threads, s->handoff != NULL);
  debug("fuse", "session loop ended (%d)", r);
  atomic_store(&s->session_ended, true);
  pthread_kill(s->main_thread, SIGUSR1);
  return NULL;
}

/* With a loop device attached, `fusermount3 -u` is refused (the device holds the disk open)
 * and `fusermount3 -u -z` detaches the mount without the kernel telling us: the filesystem
 * lives on as long as the loop device holds it.  So watch the mount table and shut down when
 * our mount leaves it. */
static void *
watch_main(void *arg)
{
  struct server *s = arg;
  int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    log_warning("/proc/self/mountinfo: %s: a lazy unmount will not be noticed", strerror(errno));
    return NULL;
  }
  struct pollfd p[2] = { { fd, POLLPRI, 0 }, { s->watch_stop[0], POLLIN, 0 } };
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (p[1].revents)
      break;
    if ((p[0].revents & (POLLPRI | POLLERR)) && !mount_present(s->mount_dev)) {
      debug("fuse", "%s left the mount table", s->mountpoint);
      atomic_store(&s->mount_gone, true);
      pthread_kill(s->main_thread, SIGUSR1);
      break;
    }
  }
  close(fd);
  return NULL;
}

/* The mount options; the supervisor mounts with the same ones its servers use. */
static void
mount_options(const struct options *o, char *opts, size_t size)
{
  snprintf(opts, size, "fsname=ferry,subtype=ferry,default_permissions,max_read=%u%s%s", 1u << 20,
           o->readonly ? ",ro" : "", o->allow_other ? ",allow_other" : "");
}

static int
start_session(struct server *s)
{
  char opts[256];
  mount_options(s->o, opts, sizeof opts);
  char *argv[] = { "ferry-fuse", "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  s->se = fuse_session_new(&args, &fs_ops, sizeof fs_ops, s->fs);
  fuse_opt_free_args(&args);
  if (!s->se)
    return error_set(EINVAL, "cannot create the FUSE session");
  if (s->handoff) {
    if (handoff_attach(s->handoff, s->se) < 0)
      return -1;
  } else if (fuse_session_mount(s->se, s->mountpoint) != 0)
    return error_set(EIO, "%s: mount failed (see the message above)", s->mountpoint);
  /* The mount table, not stat(): a stat of the mountpoint would be a FUSE request, and under
   * valgrind (which does not release its lock around stat) the session could never answer. */
  if (mount_find_dev(s->mountpoint, &s->mount_dev) < 0)
    return -1;
  if ((errno = pthread_create(&s->session_thread, NULL, session_main, s)) != 0)
    return error_set_errno(errno, "cannot start the FUSE session thread");
  s->session_started = true;
  return 0;
}

/* Wait for SIGUSR1 with session_ended set; a second SIGINT/SIGTERM gives up waiting. */
static bool
wait_session_end(struct server *s, const sigset_t *set)
{
  while (!atomic_load(&s->session_ended)) {
    int sig;
    if (sigwait(set, &sig) == 0 && sig != SIGUSR1) {
      log_error("signal %d while waiting for %s to be released: exiting now", sig, s->mountpoint);
      return false;
    }
  }
  pthread_join(s->session_thread, NULL);
  s->session_started = false;
  return true;
}

static void
sleep_seconds(double seconds)
{
  struct timespec ts = { (time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9) };
  nanosleep(&ts, NULL);
}

/* --publish: wait for convergence, then the destination over PATH and the source closed;
 * main takes it from there (loop device, exit once unused). */
static void *
converge_main(void *arg)
{
  struct server *s = arg;
  while (!atomic_load(&s->stopping)) {
    int r = clone_wait(s->clone, 0.5);
    if (r == -ETIMEDOUT)
      continue;
    if (r < 0) { /* failed: it may be resumed */
      sleep_seconds(0.5);
      continue;
    }
    if (publish_finish(&s->publish) < 0) {
      log_error("%s (retrying in 5 s)", error_message());
      sleep_seconds(5);
      continue;
    }
    if (clone_release_source(s->clone) < 0)
      log_warning("%s", error_message());
    atomic_store(&s->published, true);
    pthread_kill(s->main_thread, SIGUSR1);
    break;
  }
  error_clear();
  return NULL;
}

static unsigned
open_files(void *opaque)
{
  struct server *s = opaque;
  return fs_open_files(s->fs);
}

/* --hold ended (control thread): servers started after this one start released. */
static void
on_released(void *opaque)
{
  struct server *s = opaque;
  atomic_store(s->handoff->released, true);
}

/* A release of the last open file (a session thread): main decides whether to exit. */
static void
on_idle(void *opaque)
{
  struct server *s = opaque;
  if (atomic_load(&s->published))
    pthread_kill(s->main_thread, SIGUSR1);
}

/* The shutdown order, deliberately:
 *  0. stop the convergence watcher (--publish);
 *  1. stop the mount watcher;
 *  2. detach the loop device FIRST, from this (main) thread, while the FUSE workers still
 *     run: the kernel drains the device's in-flight I/O and closes MOUNTPOINT/disk, and both
 *     are FUSE requests.  Detaching from a worker, or after the session stopped, deadlocks;
 *  3. flush the volume: everything acknowledged so far becomes durable;
 *  4. unmount, which ends the session (its workers get ENODEV) and join it: no request can
 *     be running after this point;
 *  5. flush again (writes that raced with step 3), stop the control socket, close the volume
 *     (a clone stops its hydrator and commits its map).
 * A second SIGINT/SIGTERM while waiting for users of a busy mount exits at once.
 * Returns the exit code. */
static int
shutdown_server(struct server *s, const sigset_t *set, int rc)
{
  atomic_store(&s->stopping, true);
  if (s->converge_started) {
    pthread_join(s->converge_thread, NULL);
    s->converge_started = false;
  }
  if (s->watch_started) {
    if (write(s->watch_stop[1], "x", 1) < 0)
      log_warning("cannot stop the mount watcher: %s", strerror(errno));
    pthread_join(s->watch_thread, NULL);
    s->watch_started = false;
  }
  if (s->loop_attached) {
    bool busy;
    if (loop_detach(&s->loop, &busy) < 0) {
      log_error("%s", error_message());
      rc = EXIT_FAIL;
    } else if (busy)
      log_warning("%s is still in use: it detaches when its last user closes it; serving "
                  "%s until then",
                  s->loop.path, s->disk_path);
    s->loop_attached = false;
  }
  if (s->vol && volume_flush(s->vol) < 0) {
    log_error("%s", error_message());
    rc = EXIT_FAIL;
  }
  if (s->session_started) {
    if (!atomic_load(&s->session_ended))
      mount_unmount(s->mountpoint, s->mount_dev);
    if (!wait_session_end(s, set)) {
      /* Forced: keep what was acknowledged, leave the kernel to tear down the rest. */
      if (s->vol)
        volume_flush(s->vol);
      _exit(EXIT_FAIL);
    }
  }
  if (s->se) {
    fuse_session_unmount(s->se); /* the connection is gone: this only closes /dev/fuse */
    fuse_session_destroy(s->se);
    s->se = NULL;
  }
  if (s->vol && volume_flush(s->vol) < 0) {
    log_error("%s", error_message());
    rc = EXIT_FAIL;
  }
  if (s->control) {
    control_server_stop(s->control);
    s->control = NULL;
  }
  if (s->clone) {
    if (clone_close(s->clone) < 0) {
      log_error("%s", error_message());
      rc = EXIT_FAIL;
    }
  } else if (s->vol)
    volume_close(s->vol);
  s->clone = NULL;
  s->vol = NULL;
  return rc;
}

/* --loop: a loop device over MOUNTPOINT/disk, printed on stdout; a restarted server
 * (--supervise) keeps the one its predecessor attached when someone still holds it. */
static int
attach_loop(struct server *s)
{
  int r = s->handoff && s->handoff->start > 0 ? loop_adopt(s->disk_path, s->o->readonly, &s->loop)
                                              : -ENOENT;
  if (r == -ENOENT)
    r = loop_attach(s->disk_path, s->o->readonly, &s->loop);
  if (r < 0)
    return r;
  s->loop_attached = true;
  printf("%s\n", s->loop.path);
  fflush(stdout);
  if (pipe2(s->watch_stop, O_CLOEXEC) < 0
      || (errno = pthread_create(&s->watch_thread, NULL, watch_main, s)) != 0)
    return error_set_errno(errno, "cannot start the mount watcher");
  s->watch_started = true;
  return 0;
}

/* Ready to serve: the pidfile and the parent (daemon.c), or the supervisor. */
static int
announce_ready(struct server *s, struct daemon *d)
{
  if (!s->handoff)
    return daemon_ready(d);
  struct daemon child = { .ready_fd = -1 };
  if (!s->o->f.foreground && s->handoff->start == 0) {
    child.ready_fd = s->handoff->ready_fd; /* daemon_ready detaches stdio, then says "R" */
    s->handoff->ready_fd = -1;
    return daemon_ready(&child);
  }
  if (write(s->handoff->ready_fd, "R", 1) < 0)
    return error_set_errno(errno, "cannot notify the supervisor");
  close(s->handoff->ready_fd);
  s->handoff->ready_fd = -1;
  return 0;
}

/* After SIGUSR1: what main's wait loop does next.  true: shut down. */
static bool
main_event(struct server *s)
{
  if (atomic_load(&s->session_ended)) {
    debug("fuse", "%s was unmounted", s->mountpoint);
    return true;
  }
  if (atomic_load(&s->mount_gone)) {
    debug("fuse", "%s was detached lazily", s->mountpoint);
    return true;
  }
  if (!atomic_load(&s->published))
    return false;
  if (s->loop_attached) {
    /* Opens of PATH get the file now: the device goes with its last user (autoclear). */
    bool busy;
    if (loop_detach(&s->loop, &busy) < 0)
      log_warning("%s", error_message());
    s->loop_attached = false;
  }
  unsigned open_files = fs_open_files(s->fs);
  debug("fuse", "%s published; %u file(s) open", s->publish.path, open_files);
  return open_files == 0;
}

static int
run(struct server *s, const sigset_t *set, struct daemon *d)
{
  struct options *o = s->o;
  int r;
  if (o->publish && publish_prepare(&s->publish, o->publish, &o->volume) < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }
  if ((r = open_volume(s)) < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }

  struct partition_table parts;
  if (partitions_read(read_volume, s->vol, s->vol->size, &parts) < 0)
    log_warning("%s: partition table ignored: %s; serving the whole disk only", o->volume,
                error_message());
  else if (parts.warning[0])
    log_warning("%s: %s", o->volume, parts.warning);
  if (parts.scheme != PARTITIONS_NONE)
    debug("fuse", "%s: %s partition table, %zu partition(s)", o->volume,
          partitions_scheme_name(parts.scheme), parts.n);
  struct fs_config fc = {
    .readonly = o->readonly,
    .direct_io = o->direct_io,
    .open_files = s->handoff ? s->handoff->open_files : NULL,
    .on_init = s->handoff ? handoff_init_done : NULL,
    .on_idle = on_idle,
    .opaque = s,
  };
  s->fs = fs_create(s->vol, &parts, &fc);
  partitions_free(&parts);
  if (!s->fs) {
    log_error("out of memory");
    return EXIT_FAIL;
  }
  if (o->f.control) {
    struct control_hooks hooks = {
      .clients = open_files,
      .released = s->handoff ? on_released : NULL,
      .opaque = s,
    };
    if (control_server_start(o->f.control, "ferry-fuse", s->clone, s->vol->size, &hooks,
                             &s->control)
        < 0) {
      log_error("%s", error_message());
      return EXIT_FAIL;
    }
  }
  if (start_session(s) < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }
  snprintf(s->disk_path, sizeof s->disk_path, "%s/disk", s->mountpoint);
  /* From main, while the session thread serves the FUSE requests this generates. */
  if (o->loop && attach_loop(s) < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }
  if (o->publish) {
    if (s->publish.already)
      atomic_store(&s->published, true);
    else if (publish_link(&s->publish, o->loop ? s->loop.path : s->disk_path) < 0) {
      log_error("%s", error_message());
      return EXIT_FAIL;
    }
    if ((errno = pthread_create(&s->converge_thread, NULL, converge_main, s)) != 0) {
      log_error("cannot start the convergence watcher: %s", strerror(errno));
      return EXIT_FAIL;
    }
    s->converge_started = true;
  }
  debug("fuse", "serving %s (%" PRIu64 " bytes) at %s%s", o->volume, s->vol->size, s->mountpoint,
        o->readonly ? " read-only" : "");
  /* Mounted (and the loop device attached, PATH published): pidfile, and the parent may
   * exit. */
  if (announce_ready(s, d) < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }
  if (main_event(s))
    return EXIT_OK;
  for (;;) {
    int sig;
    if (sigwait(set, &sig) != 0)
      continue;
    if (sig != SIGUSR1) {
      debug("fuse", "signal %d: shutting down", sig);
      break;
    }
    if (main_event(s))
      break;
  }
  return EXIT_OK;
}

/* One server: run, then the shutdown order above.  Also each server --supervise starts. */
static int
serve(struct server *s, const sigset_t *set, struct daemon *d)
{
  s->main_thread = pthread_self();
  int rc = run(s, set, d);
  rc = shutdown_server(s, set, rc);
  fs_destroy(s->fs);
  s->fs = NULL;
  if (s->watch_stop[0] >= 0) {
    close(s->watch_stop[0]);
    close(s->watch_stop[1]);
  }
  return rc;
}

struct supervised {
  struct server *s;
  const sigset_t *set;
};

static int
serve_supervised(void *opaque, struct handoff *h)
{
  struct supervised *sv = opaque;
  sv->s->handoff = h;
  if (h->start > 0)
    log_info("server %u of %s starting on its map", h->start, sv->s->mountpoint);
  struct daemon none = { .ready_fd = -1 };
  return serve(sv->s, sv->set, &none);
}

int
main(int argc, char **argv)
{
  log_init("ferry-fuse");
  struct options o;
  int r = parse_args(argc, argv, &o);
  if (r >= 0)
    return r;

  static struct server server;
  struct server *s = &server;
  s->o = &o;
  s->loop.fd = -1;
  s->watch_stop[0] = s->watch_stop[1] = -1;
  if (check_mountpoint(o.mountpoint, s->mountpoint) < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }
  /* Relative paths stay valid: we never chdir (the clone reopens its map by name). */
  struct daemon d;
  if (daemon_start(&d, o.f.foreground, o.f.pidfile) < 0) {
    log_error("%s", error_message());
    return EXIT_FAIL;
  }

  /* Before any thread exists, so that every thread inherits the mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  int rc;
  if (o.supervise) {
    char opts[256];
    mount_options(&o, opts, sizeof opts);
    struct supervised sv = { s, &set };
    rc = supervise_run(s->mountpoint, opts, &d, &set, serve_supervised, &sv);
  } else
    rc = serve(s, &set, &d);
  daemon_finish(&d);
  debug("fuse", "exit %d", rc);
  return rc;
}
