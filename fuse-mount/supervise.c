/* ferry-fuse --supervise, see supervise.h.
 *
 * Processes: the supervisor (the daemon; --pidfile names it) holds the FUSE device and the
 * captured FUSE_INIT, and forks a server; the server is the whole of ferry-fuse (clone,
 * session threads, control socket).  The supervisor has no threads: it waits on a signalfd
 * (SIGCHLD and the stop signals) and, before the first server is ready, on its readiness
 * pipe.
 */
#include "fuse-mount/supervise.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "fuse-mount/mount.h"

#include <errno.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* Linux 6.9 include/uapi/linux/fuse.h; Debian 12's headers (6.1) lack it. */
#define NOTIFY_RESEND 7
/* The kernel refuses reads of /dev/fuse into buffers smaller than 8 KiB; INIT is ~100 bytes. */
#define INIT_BUFFER (64u << 10)
/* A server that dies after it served is started again at once, but not more than
 * MAX_CRASHES times within CRASH_WINDOW seconds.  One that fails before it serves (its source
 * is unreachable: an ssh tunnel being made again) is tried again after 0.25 s, 0.5 s, ... up to
 * 8 s apart, for GIVE_UP seconds.  Meanwhile the kernel holds the requests: users wait.  Then
 * the supervisor gives up and unmounts: users get errors. */
#define MAX_CRASHES 10
#define CRASH_WINDOW 60.0
#define GIVE_UP 120.0

/* ---- the server's end: the session over the handed-off descriptor ---- */

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct handoff *h;
  bool init_given, init_done;
} chan = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, false, false };

/* The first read is the captured INIT; every other one waits until libfuse has processed
 * it.  Without that wait a second session thread could take a request the kernel already
 * queued (after a restart it has plenty) before libfuse saw INIT, and answer it EIO. */
static ssize_t
chan_read(int fd, void *buf, size_t len, void *userdata)
{
  (void)userdata;
  pthread_mutex_lock(&chan.lock);
  if (!chan.init_given) {
    chan.init_given = true;
    pthread_mutex_unlock(&chan.lock);
    if (len < chan.h->init_len) {
      errno = EINVAL;
      return -1;
    }
    memcpy(buf, chan.h->init, chan.h->init_len);
    return (ssize_t)chan.h->init_len;
  }
  while (!chan.init_done)
    pthread_cond_wait(&chan.cond, &chan.lock);
  pthread_mutex_unlock(&chan.lock);
  return read(fd, buf, len);
}

static ssize_t
chan_writev(int fd, struct iovec *iov, int count, void *userdata)
{
  (void)userdata;
  return writev(fd, iov, count);
}

int
handoff_attach(struct handoff *h, struct fuse_session *se)
{
  static const struct fuse_custom_io io = { .read = chan_read, .writev = chan_writev };
  chan.h = h;
  /* libfuse closes the descriptor it is given: give it a copy, ours stays with h. */
  int fd = dup(h->fd);
  if (fd < 0)
    return error_set_errno(errno, "dup of the FUSE device");
  int r = fuse_session_custom_io(se, &io, fd);
  if (r < 0) {
    close(fd);
    return error_set(-r, "cannot run the FUSE session over the supervisor's device");
  }
  return 0;
}

void
handoff_init_done(void)
{
  /* The requests the dead server had read and not answered: queue them again, before the
   * other session threads read (what they took would be queued again too). */
  if (chan.h && chan.h->start > 0) {
    struct fuse_out_header oh = { .len = sizeof oh, .error = NOTIFY_RESEND, .unique = 0 };
    if (write(chan.h->fd, &oh, sizeof oh) == (ssize_t)sizeof oh)
      log_info("restarted server: the kernel resends the requests the previous server had "
               "taken");
    else
      log_warning("the kernel cannot resend the requests the killed server had taken (%s; "
                  "FUSE_NOTIFY_RESEND needs Linux 6.9): their callers wait for ever",
                  strerror(errno));
  }
  pthread_mutex_lock(&chan.lock);
  chan.init_done = true;
  pthread_cond_broadcast(&chan.cond);
  pthread_mutex_unlock(&chan.lock);
}

/* ---- the supervisor ---- */

struct supervisor {
  const char *mountpoint;
  dev_t dev;
  struct fuse_session *se;
  void *init;
  size_t init_len;
  struct shared {
    atomic_uint open_files;
    atomic_bool released;
  } * shared;   /* what every server of the mount shares (MAP_SHARED) */
  int sfd;      /* signalfd */
  pid_t child;  /* the server, or -1 */
  int ready_rd; /* its readiness pipe, until it said "R" */
  bool serving; /* it said "R" */
  double crashes[MAX_CRASHES];
  unsigned ncrashes;
  double failing_since; /* first of the current run of start failures, or 0 */
  double retry_at;      /* when to start the next server (0: none pending) */
  double delay;         /* the next start failure's pause */
};

static int
mount_and_capture(struct supervisor *v, const char *opts)
{
  char *argv[] = { "ferry-fuse", "-o", (char *)opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  static const struct fuse_lowlevel_ops no_ops; /* this session never serves */
  v->se = fuse_session_new(&args, &no_ops, sizeof no_ops, NULL);
  fuse_opt_free_args(&args);
  if (!v->se)
    return error_set(EINVAL, "cannot create the FUSE session");
  if (fuse_session_mount(v->se, v->mountpoint) != 0)
    return error_set(EIO, "%s: mount failed (see the message above)", v->mountpoint);
  if (mount_find_dev(v->mountpoint, &v->dev) < 0)
    return -1;
  /* The kernel queues FUSE_INIT as the mount completes: the first request on the device. */
  v->init = malloc(INIT_BUFFER);
  if (!v->init)
    return error_set(ENOMEM, "out of memory");
  ssize_t n;
  while ((n = read(fuse_session_fd(v->se), v->init, INIT_BUFFER)) < 0 && errno == EINTR)
    ;
  const struct fuse_in_header *in = v->init;
  if (n < (ssize_t)sizeof *in || in->opcode != FUSE_INIT || in->len != (uint32_t)n)
    return error_set(EPROTO, "%s: the first FUSE request is not INIT (%s)", v->mountpoint,
                     n < 0 ? strerror(errno) : "unexpected request");
  v->init_len = (size_t)n;
  v->shared
      = mmap(NULL, sizeof *v->shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (v->shared == MAP_FAILED) {
    v->shared = NULL;
    return error_set_errno(errno, "mmap");
  }
  atomic_init(&v->shared->open_files, 0);
  atomic_init(&v->shared->released, false);
  return 0;
}

/* Fork a server with a readiness pipe ("R" once it serves). */
static int
start_server(struct supervisor *v, unsigned start, supervise_serve_fn serve, void *opaque)
{
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return error_set_errno(errno, "pipe");
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(p[0]);
    close(p[1]);
    return error_set_errno(e, "fork");
  }
  if (pid == 0) {
    close(v->sfd);
    close(p[0]);
    struct handoff h = {
      .fd = fuse_session_fd(v->se),
      .init = v->init,
      .init_len = v->init_len,
      .start = start,
      .ready_fd = p[1],
      .open_files = &v->shared->open_files,
      .released = &v->shared->released,
    };
    exit(serve(opaque, &h));
  }
  close(p[1]);
  v->child = pid;
  v->ready_rd = p[0];
  v->serving = false;
  debug("fuse", "server %u started (pid %d)", start, (int)pid);
  return 0;
}

/* How the child ended: "killed by signal 9", "exited with status 1". */
static void
describe(int status, char *buf, size_t len)
{
  if (WIFSIGNALED(status))
    snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
  else
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

/* Another crash within the window: may it be restarted? */
static bool
crash_allowed(struct supervisor *v)
{
  double now = now_seconds();
  unsigned kept = 0;
  for (unsigned i = 0; i < v->ncrashes; i++)
    if (now - v->crashes[i] < CRASH_WINDOW)
      v->crashes[kept++] = v->crashes[i];
  v->ncrashes = kept;
  if (kept >= MAX_CRASHES)
    return false;
  v->crashes[v->ncrashes++] = now;
  return true;
}

/* Wait for a signal on the signalfd, the readiness pipe, or until retry_at.  Returns the
 * signal number, 0 when the pipe became readable, -1 when retry_at came. */
static int
next_event(struct supervisor *v)
{
  struct pollfd p[2] = { { v->sfd, POLLIN, 0 }, { v->ready_rd, POLLIN, 0 } };
  for (;;) {
    int timeout = -1;
    if (v->retry_at > 0) {
      double left = v->retry_at - now_seconds();
      if (left <= 0)
        return -1;
      timeout = (int)(left * 1000) + 1;
    }
    int n = poll(p, v->ready_rd >= 0 ? 2 : 1, timeout);
    if (n < 0 && errno != EINTR)
      return -2;
    if (n <= 0)
      continue;
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(v->sfd, &si, sizeof si) == (ssize_t)sizeof si)
        return (int)si.ssi_signo;
    }
    if (v->ready_rd >= 0 && p[1].revents)
      return 0;
  }
}

int
supervise_run(const char *mountpoint, const char *opts, struct daemon *d, const sigset_t *signals,
              supervise_serve_fn serve, void *opaque)
{
  struct supervisor v = { .mountpoint = mountpoint, .sfd = -1, .child = -1, .ready_rd = -1 };
  int rc = 1;
  bool ever_served = false, stopping = false;
  unsigned start = 0;
  sigset_t set = *signals;
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  if ((v.sfd = signalfd(-1, &set, SFD_CLOEXEC)) < 0) {
    log_error("signalfd: %s", strerror(errno));
    return 1;
  }
  if (mount_and_capture(&v, opts) < 0 || start_server(&v, start, serve, opaque) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  for (;;) {
    int ev = next_event(&v);
    if (ev == -2) {
      log_error("poll: %s", strerror(errno));
      goto out;
    }
    if (ev == -1) { /* the pause after a failed start is over */
      v.retry_at = 0;
      log_info("%s: starting server %u on its map", mountpoint, start + 1);
      if (start_server(&v, ++start, serve, opaque) < 0) {
        log_error("%s", error_message());
        goto out;
      }
      continue;
    }
    if (ev == 0) { /* the readiness pipe: "R", or the server's end closed */
      char b;
      bool ready = read(v.ready_rd, &b, 1) == 1;
      close(v.ready_rd);
      v.ready_rd = -1;
      if (!ready)
        continue; /* it died before serving: its SIGCHLD follows */
      v.serving = true;
      v.failing_since = 0;
      v.delay = 0;
      if (!ever_served) {
        ever_served = true;
        if (daemon_ready(d) < 0) {
          log_error("%s", error_message());
          stopping = true;
          kill(v.child, SIGTERM);
        }
      } else
        log_info("%s: server %u serves", mountpoint, start);
      continue;
    }
    if (ev == SIGINT || ev == SIGTERM || ev == SIGHUP) {
      debug("fuse", "signal %d: stopping server %d", ev, (int)v.child);
      if (v.child > 0)
        kill(v.child, stopping ? SIGKILL : SIGTERM);
      else if (v.retry_at > 0) /* between two starts: nothing to stop */
        goto out;
      stopping = true;
      continue;
    }
    if (ev != SIGCHLD)
      continue;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      if (pid != v.child)
        continue;
      v.child = -1;
      if (v.ready_rd >= 0) {
        close(v.ready_rd);
        v.ready_rd = -1;
      }
      char how[64];
      describe(status, how, sizeof how);
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        rc = 0;
        goto out;
      }
      if (stopping || !ever_served) {
        rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        if (!ever_served)
          log_error("%s: the server %s before serving", mountpoint, how);
        goto out;
      }
      if (!mount_present(v.dev)) {
        log_error("%s: the server %s and the mount is gone", mountpoint, how);
        goto out;
      }
      if (v.serving) {
        if (!crash_allowed(&v)) {
          log_error("%s: the server %s, the %dth time within %.0f s: giving up (the disk's "
                    "users get I/O errors now)",
                    mountpoint, how, MAX_CRASHES + 1, CRASH_WINDOW);
          goto out;
        }
        log_warning("%s: the server %s: restarting it on its map (open files: %u)", mountpoint, how,
                    atomic_load(&v.shared->open_files));
        if (start_server(&v, ++start, serve, opaque) < 0) {
          log_error("%s", error_message());
          goto out;
        }
        continue;
      }
      /* It failed before serving: try again later, until GIVE_UP. */
      double now = now_seconds();
      if (v.failing_since == 0)
        v.failing_since = now;
      if (now - v.failing_since > GIVE_UP) {
        log_error("%s: no server could start for %.0f s (the last %s): giving up (the disk's "
                  "users get I/O errors now)",
                  mountpoint, GIVE_UP, how);
        goto out;
      }
      v.delay = v.delay > 0 ? (v.delay * 2 > 8 ? 8 : v.delay * 2) : 0.25;
      v.retry_at = now + v.delay;
      log_warning("%s: server %u %s before serving: again in %.2f s (open files: %u; their "
                  "I/O waits)",
                  mountpoint, start, how, v.delay, atomic_load(&v.shared->open_files));
    }
  }
out:
  if (v.child > 0) {
    kill(v.child, SIGKILL);
    waitpid(v.child, NULL, 0);
  }
  if (v.se) {
    /* Normally the server unmounted; after a failure this ends the connection.  libfuse's
     * own unmount then closes the device (and finds the mount gone: it polls the device for
     * POLLERR first). */
    if (v.dev)
      mount_unmount(mountpoint, v.dev);
    fuse_session_unmount(v.se);
    fuse_session_destroy(v.se);
  }
  if (v.ready_rd >= 0)
    close(v.ready_rd);
  if (v.shared)
    munmap(v.shared, sizeof *v.shared);
  free(v.init);
  close(v.sfd);
  return rc;
}
