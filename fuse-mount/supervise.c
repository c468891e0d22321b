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
/* A server that keeps dying is not restarted for ever: after this many restarts within
 * RESTART_WINDOW seconds the supervisor gives up (and unmounts: users get errors). */
#define MAX_RESTARTS 5
#define RESTART_WINDOW 60.0

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
  pthread_mutex_lock(&chan.lock);
  chan.init_done = true;
  pthread_cond_broadcast(&chan.cond);
  pthread_mutex_unlock(&chan.lock);
  if (!chan.h || chan.h->start == 0)
    return;
  /* The requests the dead server had read and not answered: queue them again. */
  struct fuse_out_header oh = { .len = sizeof oh, .error = NOTIFY_RESEND, .unique = 0 };
  if (write(chan.h->fd, &oh, sizeof oh) == (ssize_t)sizeof oh)
    log_info("restarted server: the kernel resends the requests the previous server had "
             "taken");
  else
    log_warning("the kernel cannot resend the requests the killed server had taken (%s; "
                "FUSE_NOTIFY_RESEND needs Linux 6.9): their callers wait for ever",
                strerror(errno));
}

/* ---- the supervisor ---- */

struct supervisor {
  const char *mountpoint;
  dev_t dev;
  struct fuse_session *se;
  void *init;
  size_t init_len;
  atomic_uint *open_files;
  int sfd; /* signalfd */
  pid_t child;
  double restarts[MAX_RESTARTS];
  unsigned nrestarts;
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
  v->open_files = mmap(NULL, sizeof *v->open_files, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (v->open_files == MAP_FAILED) {
    v->open_files = NULL;
    return error_set_errno(errno, "mmap");
  }
  atomic_init(v->open_files, 0);
  return 0;
}

/* Fork a server; ready_fd is the write end of the readiness pipe (first start) or -1. */
static int
start_server(struct supervisor *v, unsigned start, int ready_fd, int ready_rd,
             supervise_serve_fn serve, void *opaque)
{
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return error_set_errno(errno, "fork");
  if (pid == 0) {
    close(v->sfd);
    if (ready_rd >= 0)
      close(ready_rd);
    struct handoff h = {
      .fd = fuse_session_fd(v->se),
      .init = v->init,
      .init_len = v->init_len,
      .start = start,
      .ready_fd = ready_fd,
      .open_files = v->open_files,
    };
    exit(serve(opaque, &h));
  }
  v->child = pid;
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

/* May we start another server now?  Counts restarts within the window. */
static bool
restart_allowed(struct supervisor *v)
{
  double now = now_seconds();
  unsigned kept = 0;
  for (unsigned i = 0; i < v->nrestarts; i++)
    if (now - v->restarts[i] < RESTART_WINDOW)
      v->restarts[kept++] = v->restarts[i];
  v->nrestarts = kept;
  if (kept >= MAX_RESTARTS)
    return false;
  v->restarts[v->nrestarts++] = now;
  return true;
}

/* Wait for a signal on the signalfd (and, when rd >= 0, for the readiness pipe).
 * Returns the signal number, or 0 when rd became readable. */
static int
next_event(struct supervisor *v, int rd)
{
  struct pollfd p[2] = { { v->sfd, POLLIN, 0 }, { rd, POLLIN, 0 } };
  for (;;) {
    if (poll(p, rd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(v->sfd, &si, sizeof si) == (ssize_t)sizeof si)
        return (int)si.ssi_signo;
    }
    if (rd >= 0 && p[1].revents)
      return 0;
  }
}

int
supervise_run(const char *mountpoint, const char *opts, struct daemon *d, const sigset_t *signals,
              supervise_serve_fn serve, void *opaque)
{
  struct supervisor v = { .mountpoint = mountpoint, .sfd = -1, .child = -1 };
  int rc = 1, rd = -1, wr = -1;
  bool ready = false, stopping = false;
  sigset_t set = *signals;
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  if ((v.sfd = signalfd(-1, &set, SFD_CLOEXEC)) < 0) {
    log_error("signalfd: %s", strerror(errno));
    return 1;
  }
  if (mount_and_capture(&v, opts) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    log_error("pipe: %s", strerror(errno));
    goto out;
  }
  rd = p[0];
  wr = p[1];
  unsigned start = 0;
  if (start_server(&v, start, wr, rd, serve, opaque) < 0) {
    log_error("%s", error_message());
    goto out;
  }
  close(wr);
  wr = -1;
  for (;;) {
    int sig = next_event(&v, ready ? -1 : rd);
    if (sig == 0) { /* the readiness pipe: "R", or the server's end closed */
      char b;
      if (read(rd, &b, 1) == 1) {
        ready = true;
        close(rd);
        rd = -1;
        if (daemon_ready(d) < 0) {
          log_error("%s", error_message());
          stopping = true;
          kill(v.child, SIGTERM);
        }
      } else {
        close(rd); /* it died before serving: its SIGCHLD follows */
        rd = -1;
        ready = false;
        stopping = true;
      }
      continue;
    }
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
      debug("fuse", "signal %d: stopping server %d", sig, (int)v.child);
      if (v.child > 0)
        kill(v.child, stopping ? SIGKILL : SIGTERM);
      stopping = true;
      continue;
    }
    if (sig != SIGCHLD)
      continue;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      if (pid != v.child)
        continue;
      v.child = -1;
      char how[64];
      describe(status, how, sizeof how);
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        rc = 0;
        goto out;
      }
      if (stopping || !ready) {
        rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        if (!ready)
          log_error("%s: the server %s before serving", mountpoint, how);
        goto out;
      }
      if (!mount_present(v.dev)) {
        log_error("%s: the server %s and the mount is gone", mountpoint, how);
        goto out;
      }
      if (!restart_allowed(&v)) {
        log_error("%s: the server %s, the %dth time within %.0f s: giving up (the disk's "
                  "users get I/O errors now)",
                  mountpoint, how, MAX_RESTARTS + 1, RESTART_WINDOW);
        goto out;
      }
      log_warning("%s: the server %s: restarting it on its map (open files: %u)", mountpoint, how,
                  atomic_load(v.open_files));
      if (start_server(&v, ++start, -1, -1, serve, opaque) < 0) {
        log_error("%s", error_message());
        goto out;
      }
    }
  }
out:
  if (v.child > 0) {
    kill(v.child, SIGKILL);
    waitpid(v.child, NULL, 0);
  }
  if (v.se) {
    /* Normally the server unmounted; after a failure this ends the connection. */
    if (v.dev)
      mount_unmount(mountpoint, v.dev);
    fuse_session_destroy(v.se); /* closes the device */
  }
  if (rd >= 0)
    close(rd);
  if (wr >= 0)
    close(wr);
  if (v.open_files)
    munmap(v.open_files, sizeof *v.open_files);
  free(v.init);
  close(v.sfd);
  return rc;
}
