/* ferry: the live move's clone server process, see clone-server.h. */
#include "migrator/clone-server.h"

#include "common/control.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "migrator/locate.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT 30.0 /* seconds for a server to start serving */
#define STOP_TIMEOUT 300.0 /* seconds to commit the map and exit (a flush of DEST) */

static void
sleep_ms(long ms)
{
  nanosleep(&(struct timespec){ ms / 1000, (ms % 1000) * 1000000L }, NULL);
}

static char *
path_in(const char *dir, const char *name)
{
  char *s = NULL;
  return asprintf(&s, "%s/%s", dir, name) < 0 ? NULL : s;
}

int
clone_server_init(struct clone_server *s, const char *program, const char *workdir,
                  const char *source, const char *dest, uint64_t size, uint64_t region_size,
                  uint64_t rate)
{
  memset(s, 0, sizeof *s);
  if (program)
    s->program = strdup(program);
  else if (locate_program("ferry-nbd", "nbd-server", "FERRY_NBD", &s->program) < 0)
    return -ENOENT;
  s->sock = path_in(workdir, "nbd.sock");
  s->ctl = path_in(workdir, "nbd.ctl");
  s->pidfile = path_in(workdir, "nbd.pid");
  s->map = path_in(workdir, "nbd.map");
  s->log = path_in(workdir, "nbd.log");
  s->source = strdup(source);
  s->dest = strdup(dest);
  s->size = size;
  s->region_size = region_size;
  s->rate = rate;
  if (!s->program || !s->sock || !s->ctl || !s->pidfile || !s->map || !s->log || !s->source
      || !s->dest) {
    clone_server_free(s);
    return error_set(ENOMEM, "out of memory");
  }
  return 0;
}

void
clone_server_free(struct clone_server *s)
{
  free(s->program);
  free(s->sock);
  free(s->ctl);
  free(s->pidfile);
  free(s->map);
  free(s->log);
  free(s->source);
  free(s->dest);
  memset(s, 0, sizeof *s);
}

char *
clone_server_log_tail(const struct clone_server *s)
{
  char buf[1536];
  int fd = open(s->log, O_RDONLY | O_CLOEXEC);
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

bool
clone_server_alive(struct clone_server *s)
{
  if (s->pid <= 0)
    return false;
  if (s->child) {
    int st;
    pid_t r = waitpid(s->pid, &st, WNOHANG);
    if (r == 0)
      return true;
    if (r == s->pid) {
      if (WIFEXITED(st))
        snprintf(s->how, sizeof s->how, "exited with status %d", WEXITSTATUS(st));
      else
        snprintf(s->how, sizeof s->how, "killed by signal %d", WTERMSIG(st));
    } else
      snprintf(s->how, sizeof s->how, "is gone");
    s->pid = 0;
    return false;
  }
  if (kill(s->pid, 0) == 0 || errno == EPERM)
    return true;
  snprintf(s->how, sizeof s->how, "is gone (pid %d)", (int)s->pid);
  s->pid = 0;
  return false;
}

int
clone_server_call(struct clone_server *s, const char *command, json_t **status, double timeout)
{
  return control_client_call(s->ctl, command, NULL, status, timeout);
}

static int
wait_ready(struct clone_server *s)
{
  double deadline = now_seconds() + READY_TIMEOUT;
  for (;;) {
    if (!clone_server_alive(s)) {
      char *tail = clone_server_log_tail(s);
      int r = error_set(EIO, "clone server %s %s before serving: %s", s->program, s->how,
                        tail ? tail : "");
      free(tail);
      return r;
    }
    if (access(s->sock, F_OK) == 0 && access(s->ctl, F_OK) == 0
        && clone_server_call(s, "status", NULL, 5) == 0)
      return 0;
    if (now_seconds() > deadline)
      return error_set(ETIMEDOUT, "clone server did not answer on %s within %.0f s", s->ctl,
                       READY_TIMEOUT);
    sleep_ms(10);
  }
}

int
clone_server_start(struct clone_server *s, bool paused)
{
  char size[32] = "", region[32] = "", rate[32] = "";
  const char *argv[32];
  int n = 0;
  argv[n++] = s->program;
  argv[n++] = "--foreground";
  argv[n++] = "--socket";
  argv[n++] = s->sock;
  argv[n++] = "--control";
  argv[n++] = s->ctl;
  argv[n++] = "--pidfile";
  argv[n++] = s->pidfile;
  if (paused)
    argv[n++] = "--paused";
  if (s->size) {
    snprintf(size, sizeof size, "%llu", (unsigned long long)s->size);
    argv[n++] = "--size";
    argv[n++] = size;
  }
  if (s->region_size) {
    snprintf(region, sizeof region, "%llu", (unsigned long long)s->region_size);
    argv[n++] = "--region-size";
    argv[n++] = region;
  }
  if (s->rate) {
    snprintf(rate, sizeof rate, "%llu", (unsigned long long)s->rate);
    argv[n++] = "--rate";
    argv[n++] = rate;
  }
  argv[n++] = "--source";
  argv[n++] = s->source;
  argv[n++] = "--map";
  argv[n++] = s->map;
  argv[n++] = s->dest;
  argv[n] = NULL;

  int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0)
    return error_set_errno(errno, "%s: create", s->log);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  dprintf(fd, "--- ferry live-move starts %s%s\n", s->program, paused ? " (paused)" : "");
  pid_t pid = fork();
  if (pid == 0) {
    /* A session of its own and no parent-death signal: the guest's disk must outlive
     * ferry, a ^C and a closed terminal. */
    setsid();
    dup2(devnull, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(argv[0], (char **)argv);
    dprintf(2, "%s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int e = errno;
  close(fd);
  if (devnull >= 0)
    close(devnull);
  if (pid < 0)
    return error_set_errno(e, "%s: fork", s->program);
  s->pid = pid;
  s->child = true;
  s->how[0] = '\0';
  debug("live", "clone server pid %d: %s ... %s", (int)pid, s->program, s->dest);
  return wait_ready(s);
}

int
clone_server_adopt(struct clone_server *s)
{
  FILE *f = fopen(s->pidfile, "r");
  if (!f)
    return 0;
  int pid = 0;
  bool ok = fscanf(f, "%d", &pid) == 1 && pid > 0;
  fclose(f);
  if (!ok)
    return 0;
  s->pid = pid;
  s->child = false;
  if (!clone_server_alive(s))
    return 0;
  /* A live PID could be another process reusing it: the control socket must answer. */
  if (clone_server_call(s, "status", NULL, 5) < 0) {
    s->pid = 0;
    return 0;
  }
  return 1;
}

int
clone_server_stop(struct clone_server *s)
{
  if (!clone_server_alive(s))
    return 0;
  kill(s->pid, SIGTERM);
  double deadline = now_seconds() + STOP_TIMEOUT;
  while (clone_server_alive(s)) {
    if (now_seconds() > deadline)
      return error_set(ETIMEDOUT, "clone server (pid %d) did not exit within %.0f s of SIGTERM",
                       (int)s->pid, STOP_TIMEOUT);
    sleep_ms(10);
  }
  /* A server we did not start has no exit status for us: its pidfile goes away only on a
   * clean exit. */
  bool clean
      = s->child ? strcmp(s->how, "exited with status 0") == 0 : access(s->pidfile, F_OK) != 0;
  if (!clean) {
    char *tail = clone_server_log_tail(s);
    int r = error_set(EIO, "clone server %s while stopping (map may not be committed): %s", s->how,
                      tail ? tail : "");
    free(tail);
    return r;
  }
  return 0;
}

void
clone_server_kill(struct clone_server *s)
{
  if (!clone_server_alive(s))
    return;
  kill(s->pid, SIGKILL);
  while (clone_server_alive(s))
    sleep_ms(5);
}
