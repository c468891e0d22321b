/* Unit tests for the QMP client against a real qemu (`qemu-system-x86_64 -machine none`, no
 * guest): handshake, replies vs events, QMP errors with their class, timeouts with late
 * replies dropped by id, a second client refused, qemu going away.  Exit 77 without qemu. */
#include "common/error.h"
#include "common/util.h"
#include "hypervisor/qmp.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
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

static char dir[] = "/tmp/ferry-test-qmp.XXXXXX";
static char sock[256], img[256];
static pid_t qemu;

static void
sleep_ms(long ms)
{
  nanosleep(&(struct timespec){ ms / 1000, (ms % 1000) * 1000000L }, NULL);
}

static int
start_qemu(void)
{
  char qmp_arg[300];
  snprintf(qmp_arg, sizeof qmp_arg, "unix:%s,server=on,wait=off", sock);
  qemu = fork();
  if (qemu == 0) {
    execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "none", "-nodefaults",
           "-no-user-config", "-display", "none", "-qmp", qmp_arg, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 400; i++) {
    if (access(sock, F_OK) == 0)
      return 0;
    int st;
    if (waitpid(qemu, &st, WNOHANG) == qemu) {
      qemu = 0;
      return -1;
    }
    sleep_ms(25);
  }
  return -1;
}

static const char *
status_of(struct qmp *q)
{
  static char s[32];
  json_t *ret = NULL;
  s[0] = '\0';
  if (qmp_execute(q, "query-status", NULL, &ret, 5) == 0)
    snprintf(s, sizeof s, "%s", json_string_value(json_object_get(ret, "status")) ?: "?");
  json_decref(ret);
  return s;
}

static void
test_refusals(void)
{
  struct qmp *q = NULL;
  char path[300];
  snprintf(path, sizeof path, "%s/missing.sock", dir);
  CHECK(qmp_connect(path, 1, &q) == -ENOENT && !q);
  CHECK(strstr(error_message(), "missing.sock: no such QMP socket") != NULL);

  /* A socket file nobody listens on any more. */
  snprintf(path, sizeof path, "%s/stale.sock", dir);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  memcpy(sa.sun_path, path,
         strlen(path) + 1 < sizeof sa.sun_path ? strlen(path) + 1 : sizeof sa.sun_path - 1);
  CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  close(fd);
  CHECK(qmp_connect(path, 1, &q) == -ECONNREFUSED);
  CHECK(strstr(error_message(), "no qemu is listening") != NULL);

  /* Something that is not qemu: it greets with a line that is not a QMP greeting. */
  snprintf(path, sizeof path, "%s/other.sock", dir);
  unlink(path);
  memcpy(sa.sun_path, path,
         strlen(path) + 1 < sizeof sa.sun_path ? strlen(path) + 1 : sizeof sa.sun_path - 1);
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0);
  pid_t child = fork();
  if (child == 0) {
    int c = accept(fd, NULL, NULL);
    const char *hello = "{\"hello\": \"world\"}\n";
    if (write(c, hello, strlen(hello)) < 0)
      _exit(1);
    sleep_ms(2000);
    _exit(0);
  }
  close(fd);
  CHECK(qmp_connect(path, 2, &q) == -EPROTO);
  CHECK(strstr(error_message(), "not a QMP socket") != NULL);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
}

static void
test_session(void)
{
  struct qmp *q = NULL;
  CHECK(qmp_connect(sock, 10, &q) == 0 && q);
  if (!q)
    return;
  CHECK(qmp_qemu_version(q) >= 50000);
  CHECK(qmp_peer_pid(q) == qemu);
  CHECK(strcmp(status_of(q), "running") == 0);

  /* qemu sends STOP before the reply to stop: the event is queued, then taken. */
  CHECK(qmp_execute(q, "stop", NULL, NULL, 5) == 0);
  CHECK(qmp_pending_events(q) >= 1);
  json_t *ev = NULL;
  CHECK(qmp_wait_event(q, "STOP", NULL, NULL, 0, &ev) == 0 && ev);
  CHECK(json_object_get(ev, "timestamp") != NULL);
  json_decref(ev);
  CHECK(strcmp(status_of(q), "paused") == 0);
  CHECK(qmp_execute(q, "cont", NULL, NULL, 5) == 0);
  CHECK(qmp_wait_event(q, "RESUME", NULL, NULL, 5, NULL) == 0);
  CHECK(qmp_wait_event(q, "NO_SUCH_EVENT", NULL, NULL, 0.2, NULL) == -ETIMEDOUT);
  CHECK(strstr(error_message(), "no NO_SUCH_EVENT event within 0.2 s") != NULL);

  /* QMP errors keep their class and description. */
  CHECK(qmp_executef(q, "device_del", NULL, 5, "{s:s}", "id", "nope") == -ENODEV);
  CHECK(strcmp(qmp_error_class(q), "DeviceNotFound") == 0);
  CHECK(strcmp(error_message(), "device_del: Device 'nope' not found (DeviceNotFound)") == 0);
  CHECK(qmp_execute(q, "no-such-command", NULL, NULL, 5) == -ENOSYS);
  CHECK(strcmp(qmp_error_class(q), "CommandNotFound") == 0);
  CHECK(qmp_executef(q, "blockdev-del", NULL, 5, "{s:s}", "node-name", "x") == -EIO);
  CHECK(strcmp(qmp_error_class(q), "GenericError") == 0);
  CHECK(strstr(error_message(), "blockdev-del: Failed to find node with node-name='x'") != NULL);
  CHECK(strcmp(status_of(q), "running") == 0);
  CHECK(strcmp(qmp_error_class(q), "") == 0);

  /* The block layer: add a file node, see it, remove it. */
  FILE *f = fopen(img, "w");
  CHECK(f && ftruncate(fileno(f), 1 << 20) == 0);
  if (f)
    fclose(f);
  CHECK(qmp_executef(q, "blockdev-add", NULL, 5, "{s:s, s:s, s:s}", "driver", "file", "node-name",
                     "t0", "filename", img)
        == 0);
  json_t *nodes = NULL;
  CHECK(qmp_executef(q, "query-named-block-nodes", &nodes, 5, "{s:b}", "flat", 1) == 0);
  bool found = false;
  for (size_t i = 0; i < json_array_size(nodes); i++) {
    json_t *n = json_array_get(nodes, i);
    const char *name = json_string_value(json_object_get(n, "node-name"));
    const char *file = json_string_value(json_object_get(n, "file"));
    if (name && file && strcmp(name, "t0") == 0 && strcmp(file, img) == 0)
      found = true;
  }
  json_decref(nodes);
  CHECK(found);
  CHECK(qmp_executef(q, "blockdev-del", NULL, 5, "{s:s}", "node-name", "t0") == 0);

  /* A second client gets no greeting while we hold the monitor. */
  struct qmp *q2 = NULL;
  CHECK(qmp_connect(sock, 0.5, &q2) == -ETIMEDOUT && !q2);
  CHECK(strstr(error_message(), "is another one connected?") != NULL);

  /* A reply that comes too late is dropped by its id: the next command gets its own. */
  kill(qemu, SIGSTOP);
  CHECK(qmp_execute(q, "query-status", NULL, NULL, 0.3) == -ETIMEDOUT);
  CHECK(strstr(error_message(), "query-status: no reply from qemu within 0.3 s") != NULL);
  kill(qemu, SIGCONT);
  json_t *ret = NULL;
  CHECK(qmp_execute(q, "query-version", NULL, &ret, 5) == 0);
  CHECK(json_object_get(ret, "qemu") != NULL && json_object_get(ret, "status") == NULL);
  json_decref(ret);

  /* qemu goes away: the next command says so. */
  CHECK(qmp_execute(q, "quit", NULL, NULL, 5) == 0);
  int st = 0;
  CHECK(waitpid(qemu, &st, 0) == qemu && WIFEXITED(st));
  qemu = 0;
  int r = qmp_execute(q, "query-status", NULL, NULL, 5);
  CHECK(r == -EPIPE || r == -ECONNRESET);
  qmp_close(q);
}

int
main(void)
{
  if (system("command -v qemu-system-x86_64 >/dev/null 2>&1") != 0) {
    printf("SKIP: qemu-system-x86_64 not installed\n");
    return 77;
  }
  if (!mkdtemp(dir))
    return 1;
  snprintf(sock, sizeof sock, "%s/qmp.sock", dir);
  snprintf(img, sizeof img, "%s/disk.img", dir);
  if (start_qemu() < 0) {
    fprintf(stderr, "qemu did not start\n");
    return 1;
  }
  test_refusals();
  test_session();
  if (qemu > 0) {
    kill(qemu, SIGKILL);
    waitpid(qemu, NULL, 0);
  }
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    failures++;
  error_clear();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
