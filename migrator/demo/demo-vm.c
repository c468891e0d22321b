/* ferry: the demo's running VM, see demo-vm.h. */
#include "migrator/demo/demo-vm.h"

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "migrator/demo/demo-world.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FERRY_SOURCE_DIR
#define FERRY_SOURCE_DIR ""
#endif

struct line {
  double t;
  char *text;
};

struct demo_vm {
  pid_t pid;
  int listen_fd, conn_fd;
  char *qmp, *serial_sock, *serial_log, *qemu_log;
  pthread_t reader;
  bool reader_running;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  struct line *lines;
  size_t n, cap;
  unsigned acks;
  bool closed; /* qemu closed the console: powered off or died */
};

static char guest_kernel[4096], guest_initrd[4096], guest_accel[16] = "tcg";

double
demo_vm_clock(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool
in_path(const char *prog)
{
  const char *p = getenv("PATH");
  char path[4096];
  while (p && *p) {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    snprintf(path, sizeof path, "%.*s/%s", (int)len, p, prog);
    if (access(path, X_OK) == 0)
      return true;
    p = end ? end + 1 : NULL;
  }
  return false;
}

/* KEY=value lines from tests/guest/build. */
static void
take(const char *out, const char *key, char *dst, size_t len)
{
  size_t kl = strlen(key);
  for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (strncmp(l, key, kl) == 0 && l[kl] == '=') {
      const char *v = l + kl + 1;
      snprintf(dst, len, "%.*s", (int)strcspn(v, "\n"), v);
    }
}

bool
demo_vm_available(char *why, size_t len)
{
  if (!in_path("qemu-system-x86_64")) {
    snprintf(why, len, "qemu-system-x86_64 is not installed");
    return false;
  }
  const char *k = getenv("FERRY_GUEST_KERNEL"), *i = getenv("FERRY_GUEST_INITRD");
  if (k && *k && i && *i) {
    snprintf(guest_kernel, sizeof guest_kernel, "%s", k);
    snprintf(guest_initrd, sizeof guest_initrd, "%s", i);
    const char *a = getenv("FERRY_GUEST_ACCEL");
    snprintf(guest_accel, sizeof guest_accel, "%s", a && *a ? a : "tcg");
    return true;
  }
  char script[4200];
  snprintf(script, sizeof script, "%s/tests/guest/build", FERRY_SOURCE_DIR);
  if (!FERRY_SOURCE_DIR[0] || access(script, X_OK) != 0) {
    snprintf(why, len,
             "no test guest (set FERRY_GUEST_KERNEL and FERRY_GUEST_INITRD, or run "
             "from a source tree with tests/guest/build)");
    return false;
  }
  char *argv[] = { script, NULL }, *out = NULL, *err = NULL;
  int st = demo_run(argv, &out, NULL, &err);
  if (st == 0) {
    take(out, "KERNEL", guest_kernel, sizeof guest_kernel);
    take(out, "INITRD", guest_initrd, sizeof guest_initrd);
    take(out, "ACCEL", guest_accel, sizeof guest_accel);
  }
  bool ok = st == 0 && guest_kernel[0] && guest_initrd[0];
  if (!ok) {
    const char *e = err ? err : "";
    size_t el = strlen(e);
    while (el && e[el - 1] == '\n')
      el--;
    snprintf(why, len, "the test guest could not be built (%s exited %d: %.*s)", script, st,
             (int)(el > 300 ? 300 : el), e + (el > 300 ? el - 300 : 0));
  }
  free(out);
  free(err);
  return ok;
}

/* The serial console: stamp every line with the host's clock as it arrives. */
static void *
reader_main(void *opaque)
{
  struct demo_vm *vm = opaque;
  FILE *log = fopen(vm->serial_log, "w");
  char buf[8192];
  size_t have = 0;
  for (;;) {
    ssize_t n = read(vm->conn_fd, buf + have, sizeof buf - have);
    double t = demo_vm_clock();
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    have += (size_t)n;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
      *nl = '\0';
      if (nl > start && nl[-1] == '\r')
        nl[-1] = '\0';
      pthread_mutex_lock(&vm->lock);
      if (vm->n == vm->cap) {
        size_t cap = vm->cap ? vm->cap * 2 : 4096;
        struct line *l = realloc(vm->lines, cap * sizeof *l);
        if (l) {
          vm->lines = l;
          vm->cap = cap;
        }
      }
      if (vm->n < vm->cap && (vm->lines[vm->n].text = strdup(start))) {
        vm->lines[vm->n++].t = t;
        if (strncmp(start, "ferry-guest: ack ", 17) == 0)
          vm->acks++;
      }
      pthread_cond_broadcast(&vm->changed);
      pthread_mutex_unlock(&vm->lock);
      if (log)
        fprintf(log, "%.6f %s\n", t, start);
      start = nl + 1;
    }
    have -= (size_t)(start - buf);
    memmove(buf, start, have);
    if (have == sizeof buf)
      have = 0; /* a line longer than the buffer: dropped */
  }
  if (log)
    fclose(log);
  pthread_mutex_lock(&vm->lock);
  vm->closed = true;
  pthread_cond_broadcast(&vm->changed);
  pthread_mutex_unlock(&vm->lock);
  return NULL;
}

static char *
in_dir(const char *dir, const char *name)
{
  char *s = NULL;
  return asprintf(&s, "%s/%s", dir, name) < 0 ? NULL : s;
}

int
demo_vm_start(const char *dir, const char *socket_path, struct demo_vm **out)
{
  struct demo_vm *vm = calloc(1, sizeof *vm);
  if (!vm)
    return error_set(ENOMEM, "out of memory");
  vm->listen_fd = vm->conn_fd = -1;
  pthread_mutex_init(&vm->lock, NULL);
  pthread_cond_init(&vm->changed, NULL);
  *out = vm;
  vm->qmp = in_dir(dir, "vm-42.qmp");
  vm->serial_sock = in_dir(dir, "vm-42.console");
  vm->serial_log = in_dir(dir, "vm-42.serial");
  vm->qemu_log = in_dir(dir, "vm-42.qemu.log");
  char *pidfile = in_dir(dir, "vm-42.pid");
  char *qmp_arg = NULL, *ser_arg = NULL, *disk = NULL, *accel = NULL;
  int r = 0;
  if (!vm->qmp || !vm->serial_sock || !vm->serial_log || !vm->qemu_log || !pidfile
      || asprintf(&qmp_arg, "unix:%s,server=on,wait=off", vm->qmp) < 0
      || asprintf(&ser_arg, "socket,id=ser0,path=%s", vm->serial_sock) < 0
      || asprintf(&accel, "accel=%s", guest_accel) < 0
      || asprintf(&disk,
                  "{\"driver\":\"nbd\",\"node-name\":\"one-42-disk0-storage\",\"cache\":"
                  "{\"direct\":true},\"server\":{\"type\":\"unix\",\"path\":\"%s\"},"
                  "\"export\":\"\"}",
                  socket_path)
             < 0) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen(vm->serial_sock) >= sizeof sa.sun_path) {
    r = error_set(ENAMETOOLONG, "%s: path too long for a socket", vm->serial_sock);
    goto out;
  }
  memcpy(sa.sun_path, vm->serial_sock, strlen(vm->serial_sock) + 1);
  vm->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (vm->listen_fd < 0 || bind(vm->listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0
      || listen(vm->listen_fd, 1) < 0) {
    r = error_set_errno(errno, "%s: listen", vm->serial_sock);
    goto out;
  }
  char *argv[] = { (char *)"qemu-system-x86_64",
                   (char *)"-machine",
                   accel,
                   (char *)"-m",
                   (char *)"256",
                   (char *)"-smp",
                   (char *)"1",
                   (char *)"-nodefaults",
                   (char *)"-no-user-config",
                   (char *)"-display",
                   (char *)"none",
                   (char *)"-no-reboot",
                   (char *)"-name",
                   (char *)"one-42",
                   (char *)"-pidfile",
                   pidfile,
                   (char *)"-qmp",
                   qmp_arg,
                   (char *)"-chardev",
                   ser_arg,
                   (char *)"-serial",
                   (char *)"chardev:ser0",
                   (char *)"-kernel",
                   guest_kernel,
                   (char *)"-initrd",
                   guest_initrd,
                   (char *)"-append",
                   (char *)"console=ttyS0 quiet panic=-1 ferry.mode=loop ferry.files=4",
                   (char *)"-blockdev",
                   disk,
                   (char *)"-blockdev",
                   (char *)"{\"driver\":\"raw\",\"node-name\":\"one-42-disk0-format\","
                           "\"file\":\"one-42-disk0-storage\"}",
                   (char *)"-device",
                   (char *)"virtio-blk-pci,drive=one-42-disk0-format,id=virtio-disk0",
                   NULL };
  int fd = open(vm->qemu_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    r = error_set_errno(errno, "%s", vm->qemu_log);
    goto out;
  }
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* the demo's VM ends with the demo */
    dup2(fd, 1);
    dup2(fd, 2);
    execvp(argv[0], argv);
    dprintf(2, "qemu-system-x86_64: %s\n", strerror(errno));
    _exit(127);
  }
  close(fd);
  if (pid < 0) {
    r = error_set_errno(errno, "qemu-system-x86_64: fork");
    goto out;
  }
  vm->pid = pid;
  /* qemu connects to the console socket while it starts. */
  struct pollfd p = { .fd = vm->listen_fd, .events = POLLIN };
  if (poll(&p, 1, 30000) != 1
      || (vm->conn_fd = accept4(vm->listen_fd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
    r = error_set(EIO, "qemu did not start (see %s)", vm->qemu_log);
    goto out;
  }
  if (pthread_create(&vm->reader, NULL, reader_main, vm) != 0) {
    r = error_set(EAGAIN, "cannot start the console reader");
    goto out;
  }
  vm->reader_running = true;
out:
  free(pidfile);
  free(qmp_arg);
  free(ser_arg);
  free(disk);
  free(accel);
  return r;
}

const char *
demo_vm_qmp(const struct demo_vm *vm)
{
  return vm->qmp;
}

int
demo_vm_pid(const struct demo_vm *vm)
{
  return (int)vm->pid;
}

const char *
demo_vm_accel(const struct demo_vm *vm)
{
  (void)vm;
  return guest_accel;
}

unsigned
demo_vm_acks(struct demo_vm *vm)
{
  pthread_mutex_lock(&vm->lock);
  unsigned n = vm->acks;
  pthread_mutex_unlock(&vm->lock);
  return n;
}

int
demo_vm_wait_line(struct demo_vm *vm, const char *prefix, double timeout)
{
  double deadline = now_seconds() + timeout;
  size_t seen = 0;
  size_t pl = strlen(prefix);
  int r = 0;
  pthread_mutex_lock(&vm->lock);
  for (;;) {
    for (; seen < vm->n; seen++) {
      const char *t = vm->lines[seen].text;
      if (strncmp(t, prefix, pl) == 0 && (t[pl] == '\0' || t[pl] == ' '))
        goto out;
      if (strncmp(t, "ferry-guest: FAILED", 19) == 0) {
        r = error_set(EIO, "VM 42: %s", t + 13);
        goto out;
      }
    }
    if (vm->closed) {
      r = error_set(EIO, "VM 42 stopped before printing '%s' (see %s, %s)", prefix, vm->serial_log,
                    vm->qemu_log);
      goto out;
    }
    double left = deadline - now_seconds();
    if (left <= 0) {
      r = error_set(ETIMEDOUT, "VM 42: no '%s' within %.0f s (see %s)", prefix, timeout,
                    vm->serial_log);
      goto out;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&vm->changed, &vm->lock, &ts);
  }
out:
  pthread_mutex_unlock(&vm->lock);
  return r;
}

void
demo_vm_gaps(struct demo_vm *vm, double from, double to, double *heartbeat_gap, double *ack_gap,
             unsigned *heartbeats)
{
  double last_hb = 0, last_ack = 0;
  *heartbeat_gap = *ack_gap = 0;
  *heartbeats = 0;
  pthread_mutex_lock(&vm->lock);
  for (size_t i = 0; i < vm->n; i++) {
    const struct line *l = &vm->lines[i];
    if (l->t < from || l->t > to)
      continue;
    if (strncmp(l->text, "ferry-guest: hb ", 16) == 0) {
      if (last_hb && l->t - last_hb > *heartbeat_gap)
        *heartbeat_gap = l->t - last_hb;
      last_hb = l->t;
      (*heartbeats)++;
    } else if (strncmp(l->text, "ferry-guest: ack ", 17) == 0) {
      if (last_ack && l->t - last_ack > *ack_gap)
        *ack_gap = l->t - last_ack;
      last_ack = l->t;
    }
  }
  pthread_mutex_unlock(&vm->lock);
}

int
demo_vm_stop(struct demo_vm *vm, double timeout)
{
  if (vm->conn_fd >= 0 && write(vm->conn_fd, "stop\n", 5) != 5)
    return error_set_errno(errno, "VM 42: console");
  int r = demo_vm_wait_line(vm, "ferry-guest: done", timeout);
  if (r < 0)
    return r;
  double deadline = now_seconds() + timeout;
  int st;
  while (waitpid(vm->pid, &st, WNOHANG) == 0) {
    if (now_seconds() > deadline)
      return error_set(ETIMEDOUT, "VM 42: qemu did not exit after the power-off");
    nanosleep(&(struct timespec){ 0, 20000000L }, NULL);
  }
  vm->pid = 0;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0
             ? 0
             : error_set(EIO, "VM 42: qemu ended with status %d (see %s)", st, vm->qemu_log);
}

int
demo_vm_check_writes(struct demo_vm *vm, const char *image, unsigned *acked)
{
  char *argv[] = { (char *)"debugfs", (char *)"-R", (char *)"cat /ferry-guest/writes.log",
                   (char *)image, NULL };
  char *out = NULL, *err = NULL;
  size_t len = 0;
  int st = demo_run(argv, &out, &len, &err);
  int r = 0;
  /* Records are "ferry-guest-write N ..." padded to 4 KiB: note which N are there. */
  pthread_mutex_lock(&vm->lock);
  unsigned max = vm->acks;
  *acked = max;
  unsigned char *have = calloc(max + 2, 1);
  if (st != 0 || !have)
    r = error_set(EIO, "debugfs cat /ferry-guest/writes.log %s failed: %s", image, err ? err : "");
  for (const char *p = out; r == 0 && p && (p = strstr(p, "ferry-guest-write ")); p++) {
    unsigned long n = strtoul(p + 18, NULL, 10);
    if (n >= 1 && n <= max)
      have[n] = 1;
  }
  for (size_t i = 0; r == 0 && i < vm->n; i++) {
    const char *t = vm->lines[i].text;
    if (strncmp(t, "ferry-guest: ack ", 17) != 0)
      continue;
    unsigned long n = strtoul(t + 17, NULL, 10);
    if (n < 1 || n > max || !have[n])
      r = error_set(EIO, "%s: write %lu was acknowledged by the guest but is not there", image, n);
  }
  pthread_mutex_unlock(&vm->lock);
  free(have);
  free(out);
  free(err);
  return r;
}

void
demo_vm_free(struct demo_vm *vm)
{
  if (!vm)
    return;
  if (vm->pid > 0) {
    kill(vm->pid, SIGTERM);
    waitpid(vm->pid, NULL, 0);
  }
  if (vm->conn_fd >= 0)
    shutdown(vm->conn_fd, SHUT_RDWR);
  if (vm->reader_running)
    pthread_join(vm->reader, NULL);
  if (vm->conn_fd >= 0)
    close(vm->conn_fd);
  if (vm->listen_fd >= 0)
    close(vm->listen_fd);
  if (vm->serial_sock)
    unlink(vm->serial_sock);
  for (size_t i = 0; i < vm->n; i++)
    free(vm->lines[i].text);
  free(vm->lines);
  pthread_mutex_destroy(&vm->lock);
  pthread_cond_destroy(&vm->changed);
  free(vm->qmp);
  free(vm->serial_sock);
  free(vm->serial_log);
  free(vm->qemu_log);
  free(vm);
}
