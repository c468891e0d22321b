/* ferry: the live switch and pivot through QMP, see live.h. */
#include "hypervisor/live.h"

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QMP_TIMEOUT 30.0 /* seconds for one command (a reopen waits for in-flight I/O) */
#define JOB_TIMEOUT 60.0 /* seconds for a sync=none mirror to get ready and complete */

/* Testing aids (docs/live-move.md): FERRY_LIVE_FAULT=switch-qmp-error makes the move inside
 * the switch name a node that does not exist, so qemu's own error takes the rollback path;
 * die-after-stop kills ferry with SIGKILL right after stop. */
static bool
fault(const char *point)
{
  const char *f = getenv("FERRY_LIVE_FAULT");
  return f && strcmp(f, point) == 0;
}

static char *
dup_or_empty(const char *s)
{
  return strdup(s ? s : "");
}

void
live_disk_free(struct live_disk *d)
{
  free(d->device);
  free(d->qdev);
  free(d->format_node);
  free(d->format_driver);
  free(d->protocol_node);
  free(d->protocol_driver);
  free(d->image);
  free(d->detect_zeroes);
  memset(d, 0, sizeof *d);
}

void
live_nodes_init(struct live_nodes *n, const char *tag)
{
  snprintf(n->nbd, sizeof n->nbd, "ferry-nbd-%.16s", tag);
  snprintf(n->format, sizeof n->format, "ferry-fmt-%.16s", tag);
  snprintf(n->dest, sizeof n->dest, "ferry-dest-%.16s", tag);
}

int
live_run_state(struct qmp *q, char *status, size_t len)
{
  json_t *ret = NULL;
  int r = qmp_execute(q, "query-status", NULL, &ret, QMP_TIMEOUT);
  if (r < 0)
    return r;
  snprintf(status, len, "%s", json_string_value(json_object_get(ret, "status")) ?: "unknown");
  json_decref(ret);
  return 0;
}

/* --- the guardian of the pause ------------------------------------------------------------- */

/* If ferry dies (kill -9) between stop and cont, the guest must not stay paused: a child
 * process, armed just before stop, outlives it, connects to QMP once ferry's connection is
 * gone (qemu serves one client) and resumes a paused guest.  Whatever instant ferry died at,
 * the disk is on a complete node (reopen and mirror completion are atomic in qemu, and the
 * clone server is a separate process), so cont is always right.  Disarmed by a byte. */
struct guardian {
  pid_t pid;
  int fd;
};

static void
guardian_main(int fd, const char *qmp_path)
{
  char b;
  ssize_t n;
  do
    n = read(fd, &b, 1);
  while (n < 0 && errno == EINTR);
  if (n == 1)
    _exit(0); /* disarmed: ferry resumed the guest itself */
  for (int i = 0; i < 60; i++) {
    struct qmp *q = NULL;
    if (qmp_connect(qmp_path, 2, &q) == 0) {
      char state[32];
      if (live_run_state(q, state, sizeof state) == 0 && strcmp(state, "paused") == 0)
        qmp_execute(q, "cont", NULL, NULL, QMP_TIMEOUT);
      qmp_close(q);
      _exit(0);
    }
    nanosleep(&(struct timespec){ 0, 250000000L }, NULL);
  }
  _exit(1);
}

static void
guardian_arm(struct guardian *g, const char *qmp_path)
{
  int p[2];
  g->pid = -1;
  g->fd = -1;
  if (pipe2(p, O_CLOEXEC) < 0)
    return;
  pid_t pid = fork();
  if (pid == 0) {
    /* Its own process group: the ^C that stops ferry must not stop the guardian.  It keeps
     * only the pipe: an inherited QMP connection would hold qemu's only client slot. */
    setpgid(0, 0);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    if (dup2(p[0], 3) < 0)
      _exit(1);
    close_range(4, ~0u, 0);
    guardian_main(3, qmp_path);
  }
  close(p[0]);
  if (pid < 0) {
    close(p[1]);
    return;
  }
  g->pid = pid;
  g->fd = p[1];
}

static void
guardian_disarm(struct guardian *g)
{
  if (g->fd >= 0) {
    ssize_t w = write(g->fd, "d", 1);
    (void)w;
    close(g->fd);
  }
  if (g->pid > 0)
    waitpid(g->pid, NULL, 0);
  g->pid = -1;
  g->fd = -1;
}

/* --- finding the disk ------------------------------------------------------------------ */

static bool
device_matches(json_t *info, const char *id)
{
  const char *dev = json_string_value(json_object_get(info, "device")) ?: "";
  const char *qdev = json_string_value(json_object_get(info, "qdev")) ?: "";
  const char *node
      = json_string_value(json_object_get(json_object_get(info, "inserted"), "node-name")) ?: "";
  if (strcmp(dev, id) == 0 || strcmp(qdev, id) == 0 || strcmp(node, id) == 0)
    return *id != '\0';
  /* qdev ids: "/machine/peripheral/ID" or "/machine/peripheral/ID/virtio-backend". */
  const char *prefix = "/machine/peripheral/";
  size_t pl = strlen(prefix), il = strlen(id);
  return strncmp(qdev, prefix, pl) == 0 && strncmp(qdev + pl, id, il) == 0
         && (qdev[pl + il] == '\0' || qdev[pl + il] == '/');
}

/* "vd0 (node fmt0: /path), drive1 (...)" for the unknown-device message. */
static char *
list_devices(json_t *blocks)
{
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  if (!f)
    return NULL;
  size_t shown = 0;
  for (size_t i = 0; i < json_array_size(blocks); i++) {
    json_t *b = json_array_get(blocks, i);
    const char *dev = json_string_value(json_object_get(b, "device")) ?: "";
    const char *qdev = json_string_value(json_object_get(b, "qdev")) ?: "";
    json_t *ins = json_object_get(b, "inserted");
    const char *pfx = "/machine/peripheral/";
    char id[256] = "";
    if (strncmp(qdev, pfx, strlen(pfx)) == 0) {
      snprintf(id, sizeof id, "%s", qdev + strlen(pfx));
      char *slash = strchr(id, '/');
      if (slash)
        *slash = '\0';
    }
    fprintf(f, "%s%s (node %s: %s)", shown++ ? ", " : "",
            *id    ? id
            : *dev ? dev
                   : qdev,
            ins ? json_string_value(json_object_get(ins, "node-name")) ?: "?" : "no medium",
            ins ? json_string_value(json_object_get(ins, "file")) ?: "?" : "-");
  }
  if (!shown)
    fputs("none", f);
  fclose(f);
  return out;
}

static json_t *
node_by_name(json_t *nodes, const char *name)
{
  for (size_t i = 0; i < json_array_size(nodes); i++) {
    json_t *n = json_array_get(nodes, i);
    const char *nn = json_string_value(json_object_get(n, "node-name"));
    if (nn && strcmp(nn, name) == 0)
      return n;
  }
  return NULL;
}

/* The node attached as child `edge` ("file") of parent, from the block graph; NULL when the
 * graph is not available (then the caller matches file names). */
static char *
graph_child(struct qmp *q, const char *parent, const char *edge)
{
  json_t *g = NULL;
  if (qmp_execute(q, "x-debug-query-block-graph", NULL, &g, QMP_TIMEOUT) < 0) {
    debug("live", "no block graph: %s", error_message());
    return NULL;
  }
  json_t *nodes = json_object_get(g, "nodes"), *edges = json_object_get(g, "edges");
  json_int_t pid = -1, cid = -1;
  for (size_t i = 0; i < json_array_size(nodes); i++) {
    json_t *n = json_array_get(nodes, i);
    const char *name = json_string_value(json_object_get(n, "name"));
    if (name && strcmp(name, parent) == 0
        && strcmp(json_string_value(json_object_get(n, "type")) ?: "", "block-driver") == 0)
      pid = json_integer_value(json_object_get(n, "id"));
  }
  for (size_t i = 0; pid >= 0 && i < json_array_size(edges); i++) {
    json_t *e = json_array_get(edges, i);
    if (json_integer_value(json_object_get(e, "parent")) == pid
        && strcmp(json_string_value(json_object_get(e, "name")) ?: "", edge) == 0)
      cid = json_integer_value(json_object_get(e, "child"));
  }
  char *child = NULL;
  for (size_t i = 0; cid >= 0 && i < json_array_size(nodes); i++) {
    json_t *n = json_array_get(nodes, i);
    if (json_integer_value(json_object_get(n, "id")) == cid)
      child = dup_or_empty(json_string_value(json_object_get(n, "name")));
  }
  json_decref(g);
  return child;
}

static bool
is_protocol(const char *drv)
{
  return strcmp(drv, "file") == 0 || strcmp(drv, "host_device") == 0 || strcmp(drv, "nbd") == 0;
}

static uint64_t
image_size_of(json_t *node)
{
  json_int_t v
      = json_integer_value(json_object_get(json_object_get(node, "image"), "virtual-size"));
  return v > 0 ? (uint64_t)v : 0;
}

/* The format node's protocol child: the graph's "file" edge, else the protocol node whose
 * file name is the format node's. */
static int
find_protocol(struct qmp *q, json_t *nodes, json_t *fmt, const char *device, struct live_disk *d)
{
  char *name = graph_child(q, d->format_node, "file");
  json_t *p = name && *name ? node_by_name(nodes, name) : NULL;
  if (!p) {
    const char *file = json_string_value(json_object_get(fmt, "file")) ?: "";
    for (size_t i = 0; i < json_array_size(nodes); i++) {
      json_t *n = json_array_get(nodes, i);
      const char *nf = json_string_value(json_object_get(n, "file")) ?: "";
      const char *nd = json_string_value(json_object_get(n, "drv")) ?: "";
      if (n != fmt && is_protocol(nd) && strcmp(nf, file) == 0)
        p = n;
    }
  }
  free(name);
  if (!p)
    return error_set(ENOENT, "device %s: cannot find the protocol node under format node %s",
                     device, d->format_node);
  const char *drv = json_string_value(json_object_get(p, "drv")) ?: "?";
  const char *file = json_string_value(json_object_get(p, "file")) ?: "";
  if (!is_protocol(drv))
    return error_set(ENOTSUP,
                     "device %s: node %s under %s is a '%s' node; ferry live-move moves "
                     "file, host_device and nbd protocol nodes",
                     device, json_string_value(json_object_get(p, "node-name")), d->format_node,
                     drv);
  if (strncmp(file, "json:", 5) == 0)
    return error_set(ENOTSUP,
                     "device %s: the image of node %s is not a plain path or NBD URI "
                     "(%s)",
                     device, json_string_value(json_object_get(p, "node-name")), file);
  d->protocol_node = dup_or_empty(json_string_value(json_object_get(p, "node-name")));
  d->protocol_driver = dup_or_empty(drv);
  d->image = dup_or_empty(file);
  d->image_size = image_size_of(p);
  return d->protocol_node && d->protocol_driver && d->image ? 0
                                                            : error_set(ENOMEM, "out of memory");
}

static int
check_format(json_t *fmt, const char *device, struct live_disk *d)
{
  const char *drv = d->format_driver;
  json_t *image = json_object_get(fmt, "image");
  const char *backing = json_string_value(json_object_get(fmt, "backing_file"));
  if (!backing)
    backing = json_string_value(json_object_get(image, "backing-filename"));
  if (backing)
    return error_set(ENOTSUP,
                     "device %s: %s image %s has a backing file %s: ferry live-move moves "
                     "one image; move or flatten the backing chain first (e.g. "
                     "block-stream)",
                     device, drv, json_string_value(json_object_get(fmt, "file")) ?: "?", backing);
  if (strcmp(drv, "raw") != 0 && strcmp(drv, "qcow2") != 0) {
    const char *filters[] = { "throttle", "copy-on-read", "preallocate",       "compress",
                              "blkdebug", "blkverify",    "copy-before-write", "snapshot-access" };
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
      if (strcmp(drv, filters[i]) == 0)
        return error_set(ENOTSUP,
                         "device %s: its root node %s is a '%s' filter; ferry live-move "
                         "needs the format node (raw or qcow2) at the top",
                         device, d->format_node, drv);
    return error_set(ENOTSUP,
                     "device %s: format '%s' (node %s): ferry live-move moves raw and "
                     "qcow2 disks",
                     device, drv, d->format_node);
  }
  json_t *spec = json_object_get(json_object_get(image, "format-specific"), "data");
  if (json_object_get(spec, "data-file"))
    return error_set(ENOTSUP, "device %s: qcow2 image with an external data file %s", device,
                     json_string_value(json_object_get(spec, "data-file")) ?: "?");
  return 0;
}

int
live_inspect(struct qmp *q, const char *device, struct live_disk *d)
{
  memset(d, 0, sizeof *d);
  json_t *blocks = NULL, *nodes = NULL;
  int r = qmp_execute(q, "query-block", NULL, &blocks, QMP_TIMEOUT);
  if (r < 0)
    return r;
  json_t *info = NULL;
  for (size_t i = 0; i < json_array_size(blocks) && !info; i++)
    if (device_matches(json_array_get(blocks, i), device))
      info = json_array_get(blocks, i);
  if (!info) {
    char *list = list_devices(blocks);
    r = error_set(ENODEV, "device %s not found; the guest's disks: %s", device, list ? list : "?");
    free(list);
    goto out;
  }
  json_t *ins = json_object_get(info, "inserted");
  if (!ins) {
    r = error_set(ENOMEDIUM, "device %s has no medium", device);
    goto out;
  }
  d->device = strdup(device);
  d->qdev = dup_or_empty(json_string_value(json_object_get(info, "qdev")));
  d->format_node = dup_or_empty(json_string_value(json_object_get(ins, "node-name")));
  d->format_named = d->format_node && d->format_node[0] != '#';
  d->read_only = json_is_true(json_object_get(ins, "ro"));
  json_t *cache = json_object_get(ins, "cache");
  d->cache_direct = json_is_true(json_object_get(cache, "direct"));
  d->cache_no_flush = json_is_true(json_object_get(cache, "no-flush"));
  d->detect_zeroes
      = dup_or_empty(json_string_value(json_object_get(ins, "detect_zeroes")) ?: "off");
  if (!d->device || !d->qdev || !d->format_node || !d->detect_zeroes) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  if (d->read_only) {
    r = error_set(EROFS, "device %s is read-only: nothing to move live (copy the image instead)",
                  device);
    goto out;
  }
  if ((r = qmp_executef(q, "query-named-block-nodes", &nodes, QMP_TIMEOUT, "{s:b}", "flat", 1)) < 0)
    goto out;
  json_t *fmt = node_by_name(nodes, d->format_node);
  if (!fmt) {
    r = error_set(ENOENT, "device %s: node %s not in query-named-block-nodes", device,
                  d->format_node);
    goto out;
  }
  d->format_driver = dup_or_empty(json_string_value(json_object_get(fmt, "drv")));
  d->virtual_size = image_size_of(fmt);
  json_int_t cs
      = json_integer_value(json_object_get(json_object_get(fmt, "image"), "cluster-size"));
  d->cluster_size = cs > 0 ? (uint64_t)cs : 0;
  if ((r = check_format(fmt, device, d)) < 0 || (r = find_protocol(q, nodes, fmt, device, d)) < 0)
    goto out;
  if (strcmp(d->format_driver, "raw") == 0 && d->virtual_size != d->image_size) {
    r = error_set(ENOTSUP,
                  "device %s: raw node %s shows %" PRIu64 " of %s's %" PRIu64
                  " bytes (offset/size options): not supported",
                  device, d->format_node, d->virtual_size, d->image, d->image_size);
    goto out;
  }
  debug("live", "device %s: %s node %s over %s node %s (%s, %" PRIu64 " bytes)", device,
        d->format_driver, d->format_node, d->protocol_driver, d->protocol_node, d->image,
        d->image_size);
out:
  json_decref(blocks);
  json_decref(nodes);
  if (r < 0) {
    int e = r;
    live_disk_free(d);
    r = e;
  }
  return r;
}

/* --- moving the protocol layer ------------------------------------------------------------ */

/* blockdev-reopen of the format node with its "file" child set to node.  The options qemu
 * reports are given again (an option left out is reset to its default). */
static int
reopen_onto(struct qmp *q, const struct live_disk *d, const char *node, uint64_t raw_size)
{
  json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:s, s:{s:b, s:b}}", "driver", d->format_driver,
                        "node-name", d->format_node, "file", node, "read-only", d->read_only,
                        "detect-zeroes", d->detect_zeroes, "cache", "direct", d->cache_direct,
                        "no-flush", d->cache_no_flush);
  if (o && raw_size)
    json_object_set_new(o, "size", json_integer((json_int_t)raw_size));
  json_t *args = o ? json_pack("{s:[o]}", "options", o) : NULL;
  if (!args)
    return error_set(ENOMEM, "out of memory");
  int r = qmp_execute(q, "blockdev-reopen", args, NULL, QMP_TIMEOUT);
  json_decref(args);
  return r;
}

/* -drive disks: a sync=none mirror from the device's root to target, completed at once. */
static int
mirror_onto(struct qmp *q, const struct live_disk *d, const char *target, const char *job)
{
  int r = qmp_executef(q, "blockdev-mirror", NULL, QMP_TIMEOUT, "{s:s, s:s, s:s, s:s}", "job-id",
                       job, "device", d->format_node, "target", target, "sync", "none");
  if (r < 0)
    return r;
  json_t *ev = NULL;
  if ((r = qmp_wait_event(q, "BLOCK_JOB_READY", "device", job, JOB_TIMEOUT, NULL)) < 0
      || (r = qmp_executef(q, "block-job-complete", NULL, QMP_TIMEOUT, "{s:s}", "device", job)) < 0
      || (r = qmp_wait_event(q, "BLOCK_JOB_COMPLETED", "device", job, JOB_TIMEOUT, &ev)) < 0) {
    char *msg = strdup(error_message());
    qmp_executef(q, "block-job-cancel", NULL, QMP_TIMEOUT, "{s:s, s:b}", "device", job, "force", 1);
    error_set(-r, "%s", msg ? msg : "mirror failed");
    free(msg);
    return r;
  }
  const char *err = json_string_value(json_object_get(json_object_get(ev, "data"), "error"));
  r = err ? error_set(EIO, "mirror job %s: %s", job, err) : 0;
  json_decref(ev);
  return r;
}

int
live_detach(struct qmp *q, const char *node)
{
  int r = qmp_executef(q, "blockdev-del", NULL, QMP_TIMEOUT, "{s:s}", "node-name", node);
  if (r < 0 && strstr(error_message(), "Failed to find node"))
    return 0;
  return r;
}

static int
add_nbd_node(struct qmp *q, const char *name, const struct live_nbd *nbd)
{
  return qmp_executef(q, "blockdev-add", NULL, QMP_TIMEOUT + nbd->open_timeout,
                      "{s:s, s:s, s:{s:b}, s:{s:s, s:s}, s:s, s:i, s:i}", "driver", "nbd",
                      "node-name", name, "cache", "direct", 1, "server", "type", "unix", "path",
                      nbd->socket, "export", "", "reconnect-delay", nbd->reconnect_delay,
                      "open-timeout", nbd->open_timeout);
}

static int
set_disk_on(struct live_disk *d, const char *node, const char *driver, const char *image)
{
  char *n = strdup(node), *dr = strdup(driver), *im = strdup(image);
  if (!n || !dr || !im) {
    free(n);
    free(dr);
    free(im);
    return error_set(ENOMEM, "out of memory");
  }
  free(d->protocol_node);
  free(d->protocol_driver);
  free(d->image);
  d->protocol_node = n;
  d->protocol_driver = dr;
  d->image = im;
  return 0;
}

/* A failed switch, the guest paused by us: the move is one transaction in qemu (reopen) or
 * was cancelled (mirror), so the device is still on its original node; resume the guest. */
static void
resume_after_failure(struct qmp *q, struct guardian *g, int r)
{
  char *msg = strdup(error_message());
  int rc = qmp_execute(q, "cont", NULL, NULL, QMP_TIMEOUT);
  if (rc < 0)
    rc = qmp_execute(q, "cont", NULL, NULL, QMP_TIMEOUT);
  guardian_disarm(g);
  if (rc < 0)
    error_set(-r, "%s; and resuming the guest failed: %s (resume it with the QMP command cont)",
              msg ? msg : "switch failed", error_message());
  else
    error_set(-r, "%s; the guest runs on its original disk", msg ? msg : "switch failed");
  free(msg);
}

/* Detach what a failed switch attached, keeping the message. */
static void
undo_nodes(struct qmp *q, const struct live_disk *d, const struct live_nodes *n,
           const struct live_hooks *h, bool mirror, int r)
{
  char *msg = strdup(error_message());
  if (mirror)
    live_detach(q, n->format);
  if (h && h->export_up && h->export_up(h->opaque) < 0)
    log_warning("device %s: %s: node %s stays attached (detaching it now would block qemu)",
                d->device, error_message(), n->nbd);
  else
    live_detach(q, n->nbd);
  error_set(-r, "%s", msg ? msg : "switch failed");
  free(msg);
}

int
live_switch(struct qmp *q, struct live_disk *d, const struct live_nodes *n,
            const struct live_nbd *nbd, const struct live_hooks *h, double *paused_seconds)
{
  char state[32];
  int r = live_run_state(q, state, sizeof state);
  if (r < 0)
    return r;
  if (strcmp(state, "running") != 0)
    return error_set(EBUSY,
                     "device %s: the guest is not running (state %s): ferry live-move "
                     "pauses and resumes a running guest only; resume it first",
                     d->device, state);
  /* Everything that can be prepared is, while the guest still runs: the pause holds only
   * the move itself. */
  if ((r = add_nbd_node(q, n->nbd, nbd)) < 0)
    return error_prefix("device %s: attaching the clone export %s", d->device, nbd->socket);
  bool mirror = !d->format_named;
  if (mirror
      && (r = qmp_executef(q, "blockdev-add", NULL, QMP_TIMEOUT, "{s:s, s:s, s:s}", "driver", "raw",
                           "node-name", n->format, "file", n->nbd))
             < 0) {
    error_prefix("device %s", d->device);
    goto undo_nodes;
  }
  const char *old_node = d->protocol_node;
  struct guardian g;
  guardian_arm(&g, qmp_socket_path(q));
  double t0 = now_seconds();
  if ((r = qmp_execute(q, "stop", NULL, NULL, QMP_TIMEOUT)) < 0) {
    guardian_disarm(&g);
    error_prefix("device %s: pausing the guest", d->device);
    goto undo_nodes;
  }
  if (fault("die-after-stop"))
    raise(SIGKILL); /* as a kill -9 at the worst moment: the guardian must resume the guest */
  if (h && h->before_move && (r = h->before_move(h->opaque)) < 0)
    goto resume;
  if (mirror) {
    char job[48];
    snprintf(job, sizeof job, "%s-switch", n->format);
    r = mirror_onto(q, d, fault("switch-qmp-error") ? "ferry-fault-no-such-node" : n->format, job);
  } else
    r = reopen_onto(q, d, fault("switch-qmp-error") ? "ferry-fault-no-such-node" : n->nbd, 0);
  if (r < 0) {
    error_prefix("device %s: moving onto the clone", d->device);
    goto resume;
  }
  if ((r = qmp_execute(q, "cont", NULL, NULL, QMP_TIMEOUT)) < 0) {
    /* On the clone, but paused: try once more, the guest must not stay paused. */
    r = qmp_execute(q, "cont", NULL, NULL, QMP_TIMEOUT);
    if (r < 0) {
      guardian_disarm(&g);
      return error_prefix("device %s: the disk is on the clone but resuming the guest failed "
                          "(resume it with the QMP command cont)",
                          d->device);
    }
  }
  *paused_seconds = now_seconds() - t0;
  guardian_disarm(&g);
  /* qemu lets go of the old image: a node qemu created itself (-drive) is gone already. */
  if (!mirror && old_node[0] != '#' && live_detach(q, old_node) < 0)
    log_warning("device %s: old node %s stays attached: %s", d->device, old_node, error_message());
  if (mirror) {
    char *fmt = strdup(n->format);
    if (!fmt)
      return error_set(ENOMEM, "out of memory");
    free(d->format_node);
    d->format_node = fmt;
    d->format_named = true;
  }
  char uri[PATH_MAX + 32];
  snprintf(uri, sizeof uri, "nbd+unix:///?socket=%s", nbd->socket);
  return set_disk_on(d, n->nbd, "nbd", uri);

resume:
  resume_after_failure(q, &g, r);
undo_nodes:
  undo_nodes(q, d, n, h, mirror, r);
  return r;
}

int
live_pivot(struct qmp *q, struct live_disk *d, const struct live_nodes *n, const char *dest,
           double *drain_seconds)
{
  struct stat st;
  if (stat(dest, &st) < 0)
    return error_set_errno(errno, "%s", dest);
  const char *driver = S_ISBLK(st.st_mode) ? "host_device" : "file";
  int r = qmp_executef(q, "blockdev-add", NULL, QMP_TIMEOUT, "{s:s, s:s, s:s, s:{s:b, s:b}}",
                       "driver", driver, "node-name", n->dest, "filename", dest, "cache", "direct",
                       d->cache_direct, "no-flush", d->cache_no_flush);
  if (r < 0)
    return error_prefix("device %s: attaching %s", d->device, dest);
  /* A raw disk keeps its size when DEST is larger than the image. */
  uint64_t dest_size = S_ISBLK(st.st_mode) ? 0 : (uint64_t)st.st_size;
  uint64_t raw_size
      = strcmp(d->format_driver, "raw") == 0 && dest_size != d->virtual_size ? d->virtual_size : 0;
  double t0 = now_seconds();
  if ((r = reopen_onto(q, d, n->dest, raw_size)) < 0) {
    char *msg = strdup(error_message());
    live_detach(q, n->dest);
    error_set(-r, "device %s: moving onto %s: %s (the guest stays on the clone)", d->device, dest,
              msg ? msg : "?");
    free(msg);
    return r;
  }
  *drain_seconds = now_seconds() - t0;
  if (live_detach(q, n->nbd) < 0)
    return error_prefix("device %s: on %s, but detaching the clone export", d->device, dest);
  return set_disk_on(d, n->dest, driver, dest);
}

/* --- verification ---------------------------------------------------------------------------- */

/* Does a node's file name (a path, an NBD URI or a json:{...} pseudo name) refer to path? */
static bool
mentions(const char *file, const char *path)
{
  if (strcmp(file, path) == 0)
    return true;
  size_t fl = strlen(file), pl = strlen(path);
  char quoted[PATH_MAX + 4];
  snprintf(quoted, sizeof quoted, "\"%s\"", path);
  if (strstr(file, quoted))
    return true;
  /* nbd+unix:///export?socket=PATH */
  return fl > pl + 7 && strcmp(file + fl - pl, path) == 0
         && strncmp(file + fl - pl - 7, "socket=", 7) == 0;
}

static bool
same_file(const char *a, const char *b)
{
  struct stat sa, sb;
  if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  return strcmp(a, b) == 0;
}

/* qemu's open file descriptors on path (qemu on this host, visible in /proc). */
static int
fd_open_on(pid_t pid, const char *path, char *fd_name, size_t len)
{
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
  DIR *dp = opendir(dir);
  if (!dp)
    return 0;
  int found = 0;
  struct dirent *e;
  while ((e = readdir(dp)) && !found) {
    char link[sizeof dir + sizeof e->d_name + 2], target[PATH_MAX];
    snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
      continue;
    target[n] = '\0';
    if (target[0] == '/' && same_file(target, path)) {
      snprintf(fd_name, len, "%.16s", e->d_name);
      found = 1;
    }
  }
  closedir(dp);
  return found;
}

int
live_verify(struct qmp *q, const char *device, const char *dest, const char *const *forbidden,
            size_t n_forbidden)
{
  struct live_disk d;
  int r = live_inspect(q, device, &d);
  if (r < 0)
    return error_prefix("verifying");
  if (strcmp(d.protocol_driver, "nbd") == 0 || !same_file(d.image, dest))
    r = error_set(EIO, "device %s runs on %s (%s node %s), not on %s", device, d.image,
                  d.protocol_driver, d.protocol_node, dest);
  live_disk_free(&d);
  if (r < 0)
    return r;
  json_t *nodes = NULL;
  if ((r = qmp_executef(q, "query-named-block-nodes", &nodes, QMP_TIMEOUT, "{s:b}", "flat", 1)) < 0)
    return r;
  for (size_t i = 0; i < json_array_size(nodes) && r == 0; i++) {
    json_t *nd = json_array_get(nodes, i);
    const char *file = json_string_value(json_object_get(nd, "file")) ?: "";
    for (size_t k = 0; k < n_forbidden && r == 0; k++)
      if (forbidden[k] && *forbidden[k] && mentions(file, forbidden[k]))
        r = error_set(EIO, "qemu still has node %s on %s",
                      json_string_value(json_object_get(nd, "node-name")) ?: "?", file);
  }
  json_decref(nodes);
  pid_t pid = qmp_peer_pid(q);
  for (size_t k = 0; k < n_forbidden && r == 0 && pid > 0; k++) {
    char fd[32];
    if (forbidden[k] && forbidden[k][0] == '/' && fd_open_on(pid, forbidden[k], fd, sizeof fd))
      r = error_set(EIO, "qemu (pid %d) still holds %s open (fd %s)", (int)pid, forbidden[k], fd);
  }
  return r;
}
