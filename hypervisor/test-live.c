/* Unit tests for the live switch (live.c) against a real qemu: a PC machine with no guest
 * kernel (the BIOS spins; the machine runs, its devices exist) and real ferry-nbd clone
 * servers.  Inspection and its refusals, the switch by reopen (-blockdev) and by mirror
 * (-drive), a QMP error before cont (rolled back), a paused guest refused, the pivot and the
 * verification, and the guardian resuming a guest whose ferry died while it was paused.
 * Exit 77 without qemu-system-x86_64, qemu-img or ferry-nbd ($FERRY_NBD). */
#include "common/control.h"
#include "common/error.h"
#include "common/util.h"
#include "hypervisor/live.h"
#include "hypervisor/qmp.h"

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

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond,     \
              error_message());                                                                    \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static char dir[] = "/tmp/ferry-test-live.XXXXXX";
static char qmp_path[256];
static pid_t qemu;
static pid_t servers[4];
static int n_servers;

static char *
path(const char *name)
{
  static char bufs[16][300];
  static int i;
  char *b = bufs[i++ % 16];
  snprintf(b, 300, "%s/%s", dir, name);
  return b;
}

static void
sleep_ms(long ms)
{
  nanosleep(&(struct timespec){ ms / 1000, (ms % 1000) * 1000000L }, NULL);
}

static int
run(const char *cmd)
{
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
make_file(const char *p, size_t mib)
{
  char cmd[600];
  snprintf(cmd, sizeof cmd, "head -c %zuM /dev/urandom > '%s'", mib, p);
  CHECK(run(cmd) == 0);
}

/* A clone server (not paused) of source into dest on socket sock; waits until it serves. */
static void
start_server(const char *source, const char *dest, const char *tag)
{
  char sock[300], ctl[300], map[300], size[32];
  snprintf(sock, sizeof sock, "%s/%s.sock", dir, tag);
  snprintf(ctl, sizeof ctl, "%s/%s.ctl", dir, tag);
  snprintf(map, sizeof map, "%s/%s.map", dir, tag);
  FILE *f = fopen(source, "r");
  fseek(f, 0, SEEK_END);
  snprintf(size, sizeof size, "%ld", ftell(f));
  fclose(f);
  f = fopen(dest, "w");
  CHECK(f && ftruncate(fileno(f), atol(size)) == 0);
  fclose(f);
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    execl(getenv("FERRY_NBD"), "ferry-nbd", "--foreground", "--socket", sock, "--control", ctl,
          "--source", source, "--map", map, dest, (char *)NULL);
    _exit(127);
  }
  servers[n_servers++] = pid;
  json_t *st = NULL;
  for (int i = 0; i < 400; i++) {
    if (access(sock, F_OK) == 0 && control_client_call(ctl, "wait", NULL, &st, 10) == 0)
      break;
    sleep_ms(25);
  }
  CHECK(st && strcmp(json_string_value(json_object_get(st, "state")) ?: "", "converged") == 0);
  json_decref(st);
}

static int
start_qemu(void)
{
  char qmp_arg[300], drive[600], b0[600], b2[600];
  snprintf(qmp_arg, sizeof qmp_arg, "unix:%s,server=on,wait=off", qmp_path);
  snprintf(b0, sizeof b0, "{\"driver\":\"file\",\"node-name\":\"file0\",\"filename\":\"%s\"}",
           path("a.raw"));
  snprintf(drive, sizeof drive, "file=%s,format=raw,if=none,id=drive1", path("b.raw"));
  snprintf(b2, sizeof b2,
           "{\"driver\":\"qcow2\",\"node-name\":\"ov0\",\"file\":{\"driver\":\"file\","
           "\"filename\":\"%s\"}}",
           path("overlay.qcow2"));
  qemu = fork();
  if (qemu == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "64",
           "-nodefaults", "-no-user-config", "-display", "none", "-qmp", qmp_arg, "-blockdev", b0,
           "-blockdev", "{\"driver\":\"raw\",\"node-name\":\"fmt0\",\"file\":\"file0\"}", "-device",
           "virtio-blk-pci,drive=fmt0,id=vd0", "-drive", drive, "-device",
           "virtio-blk-pci,drive=drive1,id=vd1", "-blockdev", b2, "-device",
           "virtio-blk-pci,drive=ov0,id=vd2", "-object",
           "throttle-group,id=tg0,x-bps-total=100000000", "-blockdev",
           "{\"driver\":\"null-co\",\"node-name\":\"null0\"}", "-blockdev",
           "{\"driver\":\"throttle\",\"node-name\":\"thr0\",\"throttle-group\":\"tg0\","
           "\"file\":\"null0\"}",
           "-device", "virtio-blk-pci,drive=thr0,id=vd3", (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 400; i++) {
    if (access(qmp_path, F_OK) == 0)
      return 0;
    if (waitpid(qemu, NULL, WNOHANG) == qemu) {
      qemu = 0;
      return -1;
    }
    sleep_ms(25);
  }
  return -1;
}

static bool
has_ferry_node(struct qmp *q, const char *name)
{
  json_t *nodes = NULL;
  bool found = false;
  if (qmp_executef(q, "query-named-block-nodes", &nodes, 10, "{s:b}", "flat", 1) == 0)
    for (size_t i = 0; i < json_array_size(nodes); i++)
      found
          |= strcmp(json_string_value(json_object_get(json_array_get(nodes, i), "node-name")), name)
             == 0;
  json_decref(nodes);
  return found;
}

static void
test_inspect(struct qmp *q)
{
  struct live_disk d;
  CHECK(live_inspect(q, "vd0", &d) == 0);
  CHECK(strcmp(d.format_node, "fmt0") == 0 && strcmp(d.format_driver, "raw") == 0);
  CHECK(d.format_named && strcmp(d.protocol_node, "file0") == 0);
  CHECK(strcmp(d.protocol_driver, "file") == 0 && strcmp(d.image, path("a.raw")) == 0);
  CHECK(d.image_size == 8 << 20 && d.virtual_size == 8 << 20);
  live_disk_free(&d);
  CHECK(live_inspect(q, "drive1", &d) == 0 && !d.format_named);
  live_disk_free(&d);
  CHECK(live_inspect(q, "nope", &d) == -ENODEV);
  CHECK(strstr(error_message(), "device nope not found; the guest's disks: "));
  CHECK(strstr(error_message(), "vd0 (node fmt0: ") && strstr(error_message(), "vd1 (node #block"));
  CHECK(live_inspect(q, "vd2", &d) == -ENOTSUP);
  CHECK(strstr(error_message(), "has a backing file") && strstr(error_message(), "base.raw"));
  CHECK(live_inspect(q, "vd3", &d) == -ENOTSUP);
  CHECK(strstr(error_message(), "is a 'throttle' filter"));
}

static void
test_switch_and_pivot(struct qmp *q)
{
  struct live_disk d;
  struct live_nodes n;
  struct live_nbd nbd = { .socket = path("c1.sock"), .reconnect_delay = 30, .open_timeout = 5 };
  double paused = -1, drain = -1;
  start_server(path("a.raw"), path("c1.dest"), "c1");
  live_nodes_init(&n, "t1");
  CHECK(live_inspect(q, "vd0", &d) == 0);

  /* A real QMP error during the switch: rolled back, the guest runs on its image. */
  setenv("FERRY_LIVE_FAULT", "switch-qmp-error", 1);
  CHECK(live_switch(q, &d, &n, &nbd, NULL, &paused) == -EIO);
  unsetenv("FERRY_LIVE_FAULT");
  CHECK(strstr(error_message(), "(GenericError); the guest runs on its original disk"));
  char state[32];
  CHECK(live_run_state(q, state, sizeof state) == 0 && strcmp(state, "running") == 0);
  CHECK(!has_ferry_node(q, n.nbd) && has_ferry_node(q, "file0"));

  /* A paused guest is refused and stays paused. */
  CHECK(qmp_execute(q, "stop", NULL, NULL, 10) == 0);
  CHECK(live_switch(q, &d, &n, &nbd, NULL, &paused) == -EBUSY);
  CHECK(live_run_state(q, state, sizeof state) == 0 && strcmp(state, "paused") == 0);
  CHECK(qmp_execute(q, "cont", NULL, NULL, 10) == 0);

  CHECK(live_switch(q, &d, &n, &nbd, NULL, &paused) == 0 && paused >= 0);
  CHECK(strcmp(d.protocol_node, n.nbd) == 0 && strcmp(d.protocol_driver, "nbd") == 0);
  CHECK(!has_ferry_node(q, "file0")); /* qemu let go of the old image */
  live_disk_free(&d);
  CHECK(live_inspect(q, "vd0", &d) == 0 && strcmp(d.protocol_node, n.nbd) == 0);
  CHECK(live_run_state(q, state, sizeof state) == 0 && strcmp(state, "running") == 0);

  CHECK(live_pivot(q, &d, &n, path("c1.dest"), &drain) == 0 && drain >= 0);
  const char *forbidden[] = { path("a.raw"), path("c1.sock") };
  CHECK(live_verify(q, "vd0", path("c1.dest"), forbidden, 2) == 0);
  CHECK(live_verify(q, "vd0", path("a.raw"), NULL, 0) == -EIO);
  CHECK(strstr(error_message(), "runs on") && strstr(error_message(), "c1.dest"));
  live_disk_free(&d);
}

static void
test_mirror(struct qmp *q)
{
  struct live_disk d;
  struct live_nodes n;
  struct live_nbd nbd = { .socket = path("c2.sock"), .reconnect_delay = 30, .open_timeout = 5 };
  double paused = -1, drain = -1;
  start_server(path("b.raw"), path("c2.dest"), "c2");
  live_nodes_init(&n, "t2");
  CHECK(live_inspect(q, "drive1", &d) == 0);
  CHECK(live_switch(q, &d, &n, &nbd, NULL, &paused) == 0);
  CHECK(d.format_named && strcmp(d.format_node, n.format) == 0);
  CHECK(live_pivot(q, &d, &n, path("c2.dest"), &drain) == 0);
  const char *forbidden[] = { path("b.raw"), path("c2.sock") };
  CHECK(live_verify(q, "vd1", path("c2.dest"), forbidden, 2) == 0);
  live_disk_free(&d);
}

/* ferry dies (SIGKILL) right after stop: the guardian resumes the guest. */
static void
test_guardian(void)
{
  start_server(path("c1.dest"), path("c3.dest"), "c3");
  pid_t child = fork();
  if (child == 0) {
    struct qmp *q = NULL;
    struct live_disk d;
    struct live_nodes n;
    struct live_nbd nbd = { .socket = path("c3.sock"), .reconnect_delay = 30, .open_timeout = 5 };
    double paused;
    live_nodes_init(&n, "t3");
    setenv("FERRY_LIVE_FAULT", "die-after-stop", 1);
    if (qmp_connect(qmp_path, 10, &q) == 0 && live_inspect(q, "vd0", &d) == 0)
      live_switch(q, &d, &n, &nbd, NULL, &paused);
    _exit(3); /* not reached when the fault fires */
  }
  int st = 0;
  CHECK(waitpid(child, &st, 0) == child && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  /* Look without holding the monitor: the guardian needs it (qemu serves one client). */
  struct qmp *q = NULL;
  char state[32] = "";
  for (int i = 0; i < 100; i++) {
    sleep_ms(100);
    if (qmp_connect(qmp_path, 2, &q) < 0)
      continue;
    if (live_run_state(q, state, sizeof state) == 0 && strcmp(state, "running") == 0)
      break;
    qmp_close(q);
    q = NULL;
  }
  CHECK(strcmp(state, "running") == 0);
  struct live_disk d;
  CHECK(q && live_inspect(q, "vd0", &d) == 0 && strcmp(d.image, path("c1.dest")) == 0);
  if (q) {
    live_disk_free(&d);
    CHECK(live_detach(q, "ferry-nbd-t3") == 0); /* the leftover node; its server serves */
    CHECK(!has_ferry_node(q, "ferry-nbd-t3"));
    qmp_close(q);
  }
}

int
main(void)
{
  const char *nbd = getenv("FERRY_NBD");
  if (run("command -v qemu-system-x86_64 qemu-img >/dev/null 2>&1") != 0 || !nbd
      || access(nbd, X_OK) != 0) {
    printf("SKIP: needs qemu-system-x86_64, qemu-img and $FERRY_NBD\n");
    return 77;
  }
  if (!mkdtemp(dir))
    return 1;
  snprintf(qmp_path, sizeof qmp_path, "%s/qmp.sock", dir);
  make_file(path("a.raw"), 8);
  make_file(path("b.raw"), 4);
  char cmd[1000];
  snprintf(cmd, sizeof cmd,
           "qemu-img create -q -f raw '%s' 4M && qemu-img create -q -f qcow2 -b '%s' -F raw '%s'",
           path("base.raw"), path("base.raw"), path("overlay.qcow2"));
  CHECK(run(cmd) == 0);
  if (start_qemu() < 0) {
    fprintf(stderr, "qemu did not start\n");
    return 1;
  }
  struct qmp *q = NULL;
  CHECK(qmp_connect(qmp_path, 10, &q) == 0);
  if (q) {
    test_inspect(q);
    test_switch_and_pivot(q);
    test_mirror(q);
    qmp_close(q); /* the guardian test needs the monitor free */
    test_guardian();
  }
  /* The moved disks hold their images' bytes. */
  snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s' && cmp -s '%s' '%s'", path("a.raw"), path("c1.dest"),
           path("b.raw"), path("c2.dest"));
  CHECK(run(cmd) == 0);
  if (qemu > 0) {
    kill(qemu, SIGKILL);
    waitpid(qemu, NULL, 0);
  }
  for (int i = 0; i < n_servers; i++) {
    kill(servers[i], SIGTERM);
    waitpid(servers[i], NULL, 0);
  }
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  run(cmd);
  error_clear();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
