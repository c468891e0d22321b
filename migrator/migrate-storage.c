/* ferry: the storage step of `ferry migrate` driven by a catalog plan, see migrate-storage.h. */
#include "migrator/migrate-storage.h"
#include "migrator/move-live.h"

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "migrator/opennebula/xmlbody.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* OpenNebula VM states (VirtualMachine::VmState) a move starts from. */
enum { VM_ACTIVE = 3, VM_STOPPED = 4, VM_POWEROFF = 8, VM_UNDEPLOYED = 9 };
/* Seconds oned may take to undeploy a VM (guest shutdown, disks moved back). */
enum { UNDEPLOY_TIMEOUT = 600 };

char *
migrate_storage_log_path(const char *journal)
{
  char *s = NULL;
  if (asprintf(&s, "%s.storage.json", journal) < 0)
    return NULL;
  return s;
}

int
migrate_storage_rollback(const char *journal, FILE *out)
{
  char *log = migrate_storage_log_path(journal);
  if (!log)
    return error_set(ENOMEM, "out of memory");
  int r = 0;
  if (access(log, F_OK) == 0)
    r = storage_rollback_file(log, out);
  free(log);
  return r;
}

/* The system datastore the VM's last history record points at (where non-persistent disks
 * live today). */
static int
current_system_datastore(const struct plan *p, int64_t *out)
{
  for (size_t i = 0; i < p->n_rows; i++) {
    if (p->before[i].kind != CATALOG_HISTORY)
      continue;
    struct xmlbody *b = NULL;
    char *v = NULL;
    int r = xmlbody_parse(p->before[i].value[CATALOG_BODY], "history body", &b);
    if (r == 0 && (r = xmlbody_get(b, "/HISTORY/DS_ID", &v)) == 1)
      *out = strtoll(v, NULL, 10);
    free(v);
    xmlbody_free(b);
    if (r == 1)
      return 0;
    return r < 0 ? r
                 : error_set(ENOENT, "VM %" PRId64 ": last history record has no DS_ID", p->vm_id);
  }
  return error_set(ENOENT,
                   "VM %" PRId64 ": no history record (never deployed): no system "
                   "datastore holds its disks",
                   p->vm_id);
}

/* One plan disk as the storage step sees it (layout in migrate-storage.h). */
static int
storage_disk_of(const struct plan *p, const struct plan_disk *d, int64_t cur_sys, char **names,
                struct storage_disk *out)
{
  memset(out, 0, sizeof *out);
  out->vm = (int)p->vm_id;
  out->disk = (int)d->disk_id;
  out->size = 0; /* fs: the source file's size */
  if (d->persistent) {
    const char *base = d->source ? strrchr(d->source, '/') : NULL;
    base = base ? base + 1 : d->source;
    if (!base || !*base)
      return error_set(EINVAL, "VM %" PRId64 " disk %" PRId64 ": no SOURCE to name its volume",
                       p->vm_id, d->disk_id);
    names[0] = strdup(base);
    names[1] = strdup(base);
    out->src_ds = (int)d->src_datastore;
    out->dst_ds = (int)d->dst_datastore;
  } else {
    if (asprintf(&names[0], "%" PRId64 "/disk.%" PRId64, p->vm_id, d->disk_id) < 0)
      names[0] = NULL;
    names[1] = names[0] ? strdup(names[0]) : NULL;
    out->src_ds = (int)cur_sys;
    out->dst_ds = (int)p->system_datastore;
  }
  if (!names[0] || !names[1])
    return error_set(ENOMEM, "out of memory");
  out->src_volume = names[0];
  out->dst_volume = names[1];
  if (d->size_mb)
    out->size = d->size_mb << 20;
  return 0;
}

struct hooks_ctx {
  struct plan *p;
  const char *journal;
  bool stopped_by_us;
  /* fs: the OpenNebula SOURCE of each persistent image's volume on the destination
   * (<destination BASE_PATH>/<volume>), NULL where the storage step does not name one. */
  char *sources[64];
  int64_t source_disk[64];
  size_t n_sources;
};

static bool
catalog_is_xmlrpc(const struct plan *p)
{
  return strncmp(catalog_uri(p->catalog), "xmlrpc:", 7) == 0;
}

static int
vm_state(struct plan *p, int *state, int *lcm)
{
  struct catalog_result res;
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT state, lcm_state FROM vm_pool WHERE oid = %" PRId64, p->vm_id);
  int r = catalog_query(p->catalog, sql, 2, &res);
  if (r < 0)
    return r;
  if (res.nrows != 1) {
    catalog_result_free(&res);
    return error_set(ENOENT, "VM %" PRId64 " not found in vm_pool", p->vm_id);
  }
  *state = catalog_cell(&res, 0, 0) ? atoi(catalog_cell(&res, 0, 0)) : -1;
  *lcm = catalog_cell(&res, 0, 1) ? atoi(catalog_cell(&res, 0, 1)) : -1;
  catalog_result_free(&res);
  return 0;
}

int
migrate_undeploy(struct plan *p)
{
  int r = catalog_vm_action(p->catalog, "undeploy", p->vm_id);
  if (r < 0)
    return error_prefix("VM %" PRId64 ": undeploy", p->vm_id);
  double deadline = now_seconds() + UNDEPLOY_TIMEOUT;
  int state = -1, lcm = -1;
  while ((r = vm_state(p, &state, &lcm)) == 0 && state != VM_UNDEPLOYED) {
    if (now_seconds() > deadline)
      return error_set(ETIMEDOUT,
                       "VM %" PRId64 ": not UNDEPLOYED %d s after undeploy (state %d, "
                       "LCM state %d)",
                       p->vm_id, UNDEPLOY_TIMEOUT, state, lcm);
    struct timespec ts = { 0, 200 * 1000000L };
    nanosleep(&ts, NULL);
  }
  if (r < 0)
    return r;
  struct plan *np = NULL;
  if ((r = plan_build(p->catalog, &p->req, &np)) < 0)
    return error_prefix("VM %" PRId64 ": planning again after undeploy", p->vm_id);
  /* The caller owns *p: swap contents, free the old ones. */
  struct plan old = *p;
  *p = *np;
  *np = old;
  plan_free(np);
  return 0;
}

static int
undeploy(struct hooks_ctx *h)
{
  return migrate_undeploy(h->p);
}

static int
stop_vm(void *opaque, bool *was_running)
{
  struct hooks_ctx *h = opaque;
  struct plan *p = h->p;
  *was_running = false;
  if (p->state == VM_UNDEPLOYED || p->state == VM_STOPPED)
    return 0;
  /* POWEROFF: oned would resume it on its old host (LifeCycleManager::trigger_restart), so it
   * is undeployed first; it stays down afterwards, and `onevm resume` schedules it. */
  if (p->state == VM_POWEROFF && catalog_is_xmlrpc(p))
    return undeploy(h);
  /* A RUNNING VM gets this far only with a catalog that reaches oned (cmd/migrate.c sets
   * storage_moves_running for xmlrpc:). */
  if (p->state == VM_ACTIVE && catalog_is_xmlrpc(p)) {
    int r = undeploy(h);
    if (r == 0)
      *was_running = h->stopped_by_us = true;
    return r;
  }
  return error_set(EBUSY,
                   "VM %" PRId64 " is not stopped (state %d): undeploy or power it off "
                   "first",
                   p->vm_id, p->state);
}

static int
resume_vm(void *opaque)
{
  struct hooks_ctx *h = opaque;
  if (!h->stopped_by_us)
    return 0;
  int r = catalog_vm_action(h->p->catalog, "resume", h->p->vm_id);
  return r < 0 ? error_prefix("VM %" PRId64 ": resume", h->p->vm_id) : 0;
}

static int
switch_disks(void *opaque)
{
  struct hooks_ctx *h = opaque;
  /* The storage step named the destination volumes: the image and the DISK say so
   * (plan_set_disk_source), here, after an undeploy may have planned the move again. */
  for (size_t i = 0; i < h->n_sources; i++) {
    int r = plan_set_disk_source(h->p, h->source_disk[i], h->sources[i]);
    if (r < 0)
      return r;
  }
  return plan_apply(h->p, h->journal);
}

/* The live move of a running VM's disks, one after the other: each disk's device moves onto
 * its clone and then onto its destination volume with the VM running; once every disk is on
 * the destination, the catalog says so and the source volumes are renamed. */
static int
live_storage(struct storage *st, struct plan *p, const struct move_disk *disks, size_t n,
             const struct migrate_storage_options *o, const char *workdir, struct move_report *rep)
{
  double t0 = now_seconds();
  memset(rep, 0, sizeof *rep);
  int r = 0;
  for (size_t i = 0; i < n && r == 0; i++) {
    char dev[48], *wd = NULL;
    snprintf(dev, sizeof dev, "virtio-disk%" PRId64, disks[i].disk_id);
    if (asprintf(&wd, "%s/disk-%" PRId64 ".live", workdir, disks[i].disk_id) < 0)
      return error_set(ENOMEM, "out of memory");
    struct live_move_options lo = { .qmp = o->live_qmp,
                                    .device = dev,
                                    .dest = disks[i].dest,
                                    .workdir = wd,
                                    .progress = o->progress,
                                    .out = o->out,
                                    .on_switched = o->on_switched,
                                    .opaque = o->opaque };
    struct live_move_report lr;
    if (o->out)
      fprintf(o->out, "disk %" PRId64 ": live move of %s onto %s\n", disks[i].disk_id, dev,
              disks[i].dest);
    r = live_move(&lo, &lr);
    free(wd);
    if (r < 0) {
      error_prefix("disk %" PRId64, disks[i].disk_id);
      /* Before any switch the VM runs on its source volumes: put storage back. */
      if (i == 0 && lr.switched_at[0] == '\0') {
        char *msg = strdup(error_message());
        if (storage_abort(st) < 0)
          log_warning("%s", error_message());
        error_set(-r, "%s", msg ? msg : "live move failed");
        free(msg);
      }
      return r;
    }
    if (lr.paused_seconds > rep->downtime)
      rep->downtime = lr.paused_seconds;
    rep->hydrate_seconds += lr.converged_seconds;
    rep->size += lr.size;
    rep->bytes_copied += lr.bytes_copied;
    rep->bytes_fetched += lr.bytes_fetched;
    rep->bytes_skipped += lr.bytes_skipped;
  }
  if ((r = plan_apply(p, o->journal)) < 0)
    return error_prefix("the VM runs on the destination volumes, but the catalog switch failed");
  if (o->out)
    fprintf(o->out, "catalog: VM's disks switched to the destination (it runs there already)\n");
  if ((r = storage_finalize(st)) < 0)
    return r;
  if (o->out && storage_get_kind(st) != STORAGE_NONE)
    fprintf(o->out, "storage: source renamed and tagged\n");
  rep->total_seconds = now_seconds() - t0;
  return 0;
}

int
migrate_storage(struct plan *p, const struct migrate_storage_options *o, struct move_report *rep)
{
  struct storage *st = NULL;
  char *log = NULL, *workdir = NULL;
  char *names[64][2] = { { NULL } };
  struct move_disk disks[64];
  int r;
  if (p->n_disks > 64)
    return error_set(E2BIG, "VM %" PRId64 ": more than 64 disks to move", p->vm_id);
  if ((r = storage_new(o->storage, &st)) < 0)
    return r;
  if (o->datastores)
    storage_set_datastores(st, o->datastores);
  storage_set_timestamp(st, o->timestamp ? o->timestamp : (long long)time(NULL));
  if (!o->dry_run && o->journal) {
    if (!(log = migrate_storage_log_path(o->journal))) {
      r = error_set(ENOMEM, "out of memory");
      goto out;
    }
    storage_set_log(st, log);
  }
  int64_t cur_sys = -1;
  for (size_t i = 0; i < p->n_disks; i++)
    if (!p->disks[i].persistent && (r = current_system_datastore(p, &cur_sys)) < 0)
      goto out;
  for (size_t i = 0; i < p->n_disks; i++) {
    struct storage_disk sd;
    if ((r = storage_disk_of(p, &p->disks[i], cur_sys, names[i], &sd)) < 0
        || (r = storage_plan_disk(st, &sd)) < 0)
      goto out;
  }

  if (o->workdir)
    workdir = strdup(o->workdir);
  else if (asprintf(&workdir, "%s.d", o->journal ? o->journal : "JOURNAL") < 0)
    workdir = NULL;
  if (!workdir) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  struct move_options mo = {
    .frontend = o->frontend,
    .ssh_host = o->ssh_host,
    .tls_listen = o->tls_listen,
    .tls_certificates = o->tls_certificates,
    /* fs creates the destination (O_EXCL), exec: has a hook create it: new either way. */
    .new_map = storage_get_kind(st) != STORAGE_NONE,
    .workdir = workdir,
    .skip_resume = o->skip_resume,
    .progress = o->progress,
    .out = o->out,
    .die_with_parent = o->die_with_parent,
  };
  if (o->dry_run) {
    if (o->out) {
      storage_print_plan(st, o->out);
      for (size_t i = 0; i < p->n_disks; i++) {
        struct move_disk d = { .disk_id = p->disks[i].disk_id,
                               .source = o->source_uri ? o->source_uri : "SOURCE",
                               .dest = "DESTINATION" };
        char **argv = NULL;
        if (move_server_argv(
                &mo, mo.frontend && strcmp(mo.frontend, "fuse") == 0 ? "ferry-fuse" : "ferry-nbd",
                &d, &argv)
            == 0) {
          char *line = move_argv_string(argv);
          fprintf(o->out, "  disk %" PRId64 " destination clone: %s\n", d.disk_id,
                  line ? line : "?");
          free(line);
          move_argv_free(argv);
        }
      }
    }
    r = 0;
    goto out;
  }
  if (o->out) {
    storage_print_plan(st, o->out);
    if (log)
      fprintf(o->out, "storage log: %s\n", log);
  }
  /* Prepare here, before move_run: a hook names the volumes' paths in its create reply and
   * the clone needs them.  move_run's own prepare then finds nothing left to do. */
  if ((r = storage_prepare(st)) < 0) {
    char *msg = strdup(error_message());
    if (storage_abort(st) < 0)
      log_warning("%s", error_message());
    error_set(-r, "%s", msg ? msg : "storage prepare failed");
    free(msg);
    goto out;
  }
  for (size_t i = 0; i < p->n_disks; i++) {
    int vm = (int)p->vm_id, disk = (int)p->disks[i].disk_id;
    disks[i].disk_id = p->disks[i].disk_id;
    disks[i].source = o->source_uri ? o->source_uri : storage_source_path(st, vm, disk);
    disks[i].dest = storage_dest_path(st, vm, disk);
    if (!disks[i].source || !disks[i].dest) {
      r = error_set(EINVAL,
                    "disk %d: the storage hook did not name the %s volume's path (reply "
                    "to create must hold \"path\" and \"source\")",
                    disk, disks[i].dest ? "source" : "destination");
      storage_abort(st);
      goto out;
    }
  }
  if (mkdir(workdir, 0700) < 0 && errno != EEXIST) {
    r = error_set_errno(errno, "%s: mkdir", workdir);
    storage_abort(st);
    goto out;
  }
  if (o->live_qmp) {
    r = live_storage(st, p, disks, p->n_disks, o, workdir, rep);
    goto out;
  }
  struct hooks_ctx ctx = { .p = p, .journal = o->journal };
  for (size_t i = 0; i < p->n_disks && strcmp(o->storage, "fs") == 0; i++) {
    const struct plan_disk *d = &p->disks[i];
    /* A path SOURCE (fs datastores) names the file the storage step writes; other SOURCEs
     * (Ceph pool/image...) follow the plan's naming rule. */
    if (!d->persistent || !d->source || d->source[0] != '/' || !d->dst_base_path)
      continue;
    if (asprintf(&ctx.sources[ctx.n_sources], "%s/%s", d->dst_base_path, names[i][1]) < 0) {
      r = error_set(ENOMEM, "out of memory");
      storage_abort(st);
      for (size_t k = 0; k < ctx.n_sources; k++)
        free(ctx.sources[k]);
      goto out;
    }
    ctx.source_disk[ctx.n_sources++] = d->disk_id;
  }
  bool xmlrpc = catalog_is_xmlrpc(p);
  struct move_hooks hooks = {
    .stop_vm = stop_vm,
    .switch_disks = switch_disks,
    /* Only a VM ferry stopped is started again; one that was already down stays down. */
    .resume_vm = xmlrpc && p->state == VM_ACTIVE ? resume_vm : NULL,
    .no_resume_reason = xmlrpc ? "it was not running before the move"
                               : "oned is stopped (sqlite/mysql catalog): start the VM with "
                                 "`onevm resume` once oned runs",
    .opaque = &ctx,
  };
  r = move_run(st, disks, p->n_disks, &mo, &hooks, rep);
  for (size_t i = 0; i < ctx.n_sources; i++)
    free(ctx.sources[i]);
out:
  for (size_t i = 0; i < 64; i++) {
    free(names[i][0]);
    free(names[i][1]);
  }
  storage_free(st);
  free(log);
  free(workdir);
  return r;
}
