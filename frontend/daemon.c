/* ferry: daemonizing with a readiness pipe, the pidfile, foreground mode (daemon.h). */
#include "frontend/daemon.h"

#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int
daemon_start(struct daemon *d, bool foreground, const char *pidfile)
{
  d->ready_fd = -1;
  d->pidfile = pidfile;
  d->pidfile_written = false;
  if (foreground)
    return 0;
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return error_set_errno(errno, "pipe");
  fflush(NULL); /* or buffered output would be written twice */
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(p[0]);
    close(p[1]);
    return error_set_errno(e, "fork");
  }
  if (pid > 0) {
    close(p[1]);
    char b;
    ssize_t n;
    while ((n = read(p[0], &b, 1)) < 0 && errno == EINTR)
      ;
    if (n == 1)
      _exit(0);
    /* The child closed the pipe without a word: it failed (or died); report as it did. */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
      ;
    _exit(WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1);
  }
  close(p[0]);
  setsid();
  d->ready_fd = p[1];
  return 0;
}

int
daemon_write_pidfile(const char *path)
{
  char tmp[4096];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= sizeof tmp)
    return error_set(ENAMETOOLONG, "--pidfile %s: name too long", path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return error_set_errno(errno, "--pidfile %s", path);
  fprintf(f, "%d\n", (int)getpid());
  /* Written whole, then renamed: a watcher never reads a partial PID. */
  if (fclose(f) != 0 || rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    return error_set_errno(e, "--pidfile %s", path);
  }
  return 0;
}

int
daemon_ready(struct daemon *d)
{
  if (d->pidfile) {
    if (daemon_write_pidfile(d->pidfile) < 0)
      return -1;
    d->pidfile_written = true;
  }
  if (d->ready_fd < 0)
    return 0;
  fflush(stdout); /* e.g. ferry-fuse --loop's /dev/loopN */
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2)
      close(null);
  }
  log_use_syslog();
  if (write(d->ready_fd, "R", 1) < 0)
    log_warning("cannot notify the parent process: %s", strerror(errno));
  close(d->ready_fd);
  d->ready_fd = -1;
  return 0;
}

void
daemon_finish(struct daemon *d)
{
  if (d->pidfile_written)
    unlink(d->pidfile);
  d->pidfile_written = false;
  if (d->ready_fd >= 0)
    close(d->ready_fd);
  d->ready_fd = -1;
}
