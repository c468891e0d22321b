/* ferry: building a plan — load the rows, check the request, refuse what cannot move. */
#include "migrator/opennebula/plan.h"
#include "migrator/opennebula/plan-internal.h"
#include "migrator/opennebula/xmlbody.h"
#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* VM states (VirtualMachine::VmState) and the LCM states we name in messages. */
static const char *const vm_states[] = {
  "INIT", "PENDING", "HOLD",     "ACTIVE",     "STOPPED", "SUSPENDED",
  "DONE", "FAILED",  "POWEROFF", "UNDEPLOYED", "CLONING", "CLONING_FAILURE",
};
enum { VM_ACTIVE = 3, VM_STOPPED = 4, VM_POWEROFF = 8, VM_UNDEPLOYED = 9, LCM_RUNNING = 3 };
enum { DS_TYPE_IMAGE = 0, DS_TYPE_SYSTEM = 1 };

const char *
plan_state_name(int state, int lcm_state)
{
  if (state == VM_ACTIVE && lcm_state == LCM_RUNNING)
    return "RUNNING";
  return state >= 0 && (size_t)state < sizeof vm_states / sizeof vm_states[0] ? vm_states[state]
                                                                              : "unknown";
}

int
plan_note(struct plan *p, const char *fmt, ...)
{
  va_list ap;
  char *s = NULL;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  char **v = n >= 0 ? realloc(p->notes, (p->n_notes + 1) * sizeof *v) : NULL;
  if (!v) {
    free(s);
    return error_set(ENOMEM, "out of memory");
  }
  p->notes = v;
  p->notes[p->n_notes++] = s;
  return 0;
}

/* ---- small catalog lookups ---- */

static int
query_int_list(struct catalog *c, const char *sql, int64_t **out, size_t *n)
{
  struct catalog_result res;
  int r = catalog_query(c, sql, 1, &res);
  *out = NULL;
  *n = 0;
  if (r < 0)
    return r;
  if (res.nrows && !(*out = calloc(res.nrows, sizeof **out))) {
    catalog_result_free(&res);
    return error_set(ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < res.nrows; i++)
    if (catalog_cell(&res, i, 0))
      (*out)[(*n)++] = strtoll(catalog_cell(&res, i, 0), NULL, 10);
  catalog_result_free(&res);
  return 0;
}

static bool
list_has(const int64_t *v, size_t n, int64_t x)
{
  for (size_t i = 0; i < n; i++)
    if (v[i] == x)
      return true;
  return false;
}

/* A datastore's facts from its body, without making it a plan row. */
static int
ds_read(struct catalog *c, int64_t id, struct plan_ds *d)
{
  struct catalog_row row;
  char what[96];
  memset(d, 0, sizeof *d);
  int r = catalog_read_row(c, CATALOG_DATASTORE, id, -1, &row);
  if (r < 0) {
    if (r == -ENOENT)
      error_set(ENOENT, "datastore %" PRId64 " not found in datastore_pool", id);
    return r;
  }
  r = plan_ds_parse(row.value[CATALOG_BODY], plan_row_what(&row, CATALOG_BODY, what, sizeof what),
                    id, d);
  catalog_row_clear(&row);
  return r;
}

int
plan_ds_load(struct plan *p, int64_t id, struct plan_ds *d)
{
  size_t i;
  char what[96];
  memset(d, 0, sizeof *d);
  int r = plan_add_row(p, CATALOG_DATASTORE, id, -1, &i);
  if (r < 0) {
    if (r == -ENOENT)
      error_set(ENOENT, "datastore %" PRId64 " not found in datastore_pool", id);
    return r;
  }
  return plan_ds_parse(p->before[i].value[CATALOG_BODY],
                       plan_row_what(&p->before[i], CATALOG_BODY, what, sizeof what), id, d);
}

static int
ds_clusters(struct catalog *c, int64_t ds, int64_t **cids, size_t *n)
{
  char sql[128];
  snprintf(sql, sizeof sql,
           "SELECT cid FROM cluster_datastore_relation WHERE oid = %" PRId64 " ORDER BY cid", ds);
  return query_int_list(c, sql, cids, n);
}

static int
cluster_name(struct catalog *c, int64_t cid, char **name)
{
  struct catalog_result res;
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT name FROM cluster_pool WHERE oid = %" PRId64, cid);
  int r = catalog_query(c, sql, 1, &res);
  if (r < 0)
    return r;
  if (res.nrows != 1)
    r = error_set(ENOENT, "cluster %" PRId64 " not found in cluster_pool", cid);
  else if (!(*name = strdup(catalog_cell(&res, 0, 0) ? catalog_cell(&res, 0, 0) : "")))
    r = error_set(ENOMEM, "out of memory");
  catalog_result_free(&res);
  return r;
}

/* ---- rows ---- */

int
plan_add_row(struct plan *p, enum catalog_kind kind, int64_t id, int64_t seq, size_t *index)
{
  for (size_t i = 0; i < p->n_rows; i++)
    if (p->before[i].kind == kind && p->before[i].id == id) {
      if (index)
        *index = i;
      return 0;
    }
  struct catalog_row *b = realloc(p->before, (p->n_rows + 1) * sizeof *b);
  if (b)
    p->before = b;
  struct catalog_row *a = b ? realloc(p->after, (p->n_rows + 1) * sizeof *a) : NULL;
  if (!a)
    return error_set(ENOMEM, "out of memory");
  p->after = a;
  memset(&p->after[p->n_rows], 0, sizeof *a);
  int r = catalog_read_row(p->catalog, kind, id, seq, &p->before[p->n_rows]);
  if (r < 0)
    return r;
  if (index)
    *index = p->n_rows;
  p->n_rows++;
  return 0;
}

/* ---- destination ---- */

static int
pick_in_cluster(struct plan *p, int type, int64_t *out)
{
  struct catalog *c = p->catalog;
  char sql[128];
  int64_t *ids;
  size_t n, found = 0;
  int r;
  snprintf(sql, sizeof sql,
           "SELECT oid FROM cluster_datastore_relation WHERE cid = %" PRId64 " ORDER BY oid",
           p->cluster);
  if ((r = query_int_list(c, sql, &ids, &n)) < 0)
    return r;
  for (size_t i = 0; i < n && r == 0; i++) {
    struct plan_ds d;
    if ((r = ds_read(c, ids[i], &d)) < 0)
      break;
    if (d.type == type) {
      found++;
      *out = ids[i];
    }
    plan_ds_clear(&d);
  }
  free(ids);
  if (r == 0 && found != 1)
    r = error_set(EINVAL, "cluster %" PRId64 " (%s) has %zu %s datastores: name one with %s",
                  p->cluster, p->cluster_name, found, type == DS_TYPE_IMAGE ? "image" : "system",
                  type == DS_TYPE_IMAGE ? "--to-datastore" : "--to-system-datastore");
  return r;
}

static int
check_in_cluster(struct plan *p, const struct plan_ds *d)
{
  int64_t *cids;
  size_t n;
  int r = ds_clusters(p->catalog, d->id, &cids, &n);
  if (r < 0)
    return r;
  if (!list_has(cids, n, p->cluster))
    r = error_set(EINVAL, "datastore %" PRId64 " (%s) is not in cluster %" PRId64 " (%s)", d->id,
                  d->name, p->cluster, p->cluster_name);
  free(cids);
  return r;
}

static int
resolve_destination(struct plan *p, struct plan_ds *ds, struct plan_ds *sys)
{
  const struct plan_request *q = &p->req;
  struct catalog *c = p->catalog;
  int r;
  p->cluster = q->to_cluster;
  p->datastore = q->to_datastore;
  p->system_datastore = q->to_system_datastore;
  if (p->cluster < 0) {
    int64_t *a, *b;
    size_t na, nb;
    if (p->datastore < 0 || p->system_datastore < 0)
      return error_set(EINVAL, "name the destination: --to-cluster, or --to-datastore and "
                               "--to-system-datastore");
    if ((r = ds_clusters(c, p->datastore, &a, &na)) < 0)
      return r;
    if ((r = ds_clusters(c, p->system_datastore, &b, &nb)) < 0) {
      free(a);
      return r;
    }
    for (size_t i = 0; i < na && p->cluster < 0; i++)
      if (list_has(b, nb, a[i]))
        p->cluster = a[i];
    free(a);
    free(b);
    if (p->cluster < 0) {
      if ((r = ds_read(c, p->datastore, ds)) < 0)
        return r;
      return error_set(EINVAL,
                       "datastore %" PRId64 " and system datastore %" PRId64 " share no cluster",
                       p->datastore, p->system_datastore);
    }
  }
  if ((r = cluster_name(c, p->cluster, &p->cluster_name)) < 0)
    return r;
  if (p->datastore < 0 && (r = pick_in_cluster(p, DS_TYPE_IMAGE, &p->datastore)) < 0)
    return r;
  if (p->system_datastore < 0 && (r = pick_in_cluster(p, DS_TYPE_SYSTEM, &p->system_datastore)) < 0)
    return r;
  if ((r = ds_read(c, p->datastore, ds)) < 0 || (r = ds_read(c, p->system_datastore, sys)) < 0)
    return r;
  if (ds->type != DS_TYPE_IMAGE)
    return error_set(EINVAL, "datastore %" PRId64 " (%s) is not an image datastore", ds->id,
                     ds->name);
  if (sys->type != DS_TYPE_SYSTEM)
    return error_set(EINVAL, "datastore %" PRId64 " (%s) is not a system datastore", sys->id,
                     sys->name);
  if ((r = check_in_cluster(p, ds)) < 0 || (r = check_in_cluster(p, sys)) < 0)
    return r;
  if (!(p->datastore_name = strdup(ds->name)) || !(p->system_datastore_name = strdup(sys->name)))
    return error_set(ENOMEM, "out of memory");
  return 0;
}

/* ---- the VM ---- */

static int
check_networks(struct plan *p, struct xmlbody *vm)
{
  int n = xmlbody_count(vm, "/VM/TEMPLATE/NIC");
  for (int i = 1; i <= n; i++) {
    char path[96], *net = NULL, sql[160];
    struct catalog_result res;
    int r;
    snprintf(path, sizeof path, "/VM/TEMPLATE/NIC[%d]/NETWORK_ID", i);
    if ((r = xmlbody_get(vm, path, &net)) < 0)
      return r;
    if (!net)
      continue;
    snprintf(sql, sizeof sql,
             "SELECT oid FROM cluster_network_relation WHERE cid = %" PRId64 " AND oid = %" PRId64,
             p->cluster, (int64_t)strtoll(net, NULL, 10));
    if ((r = catalog_query(p->catalog, sql, 1, &res)) == 0) {
      if (res.nrows == 0)
        r = error_set(EINVAL,
                      "VM %" PRId64 ": network %s (NIC %d) is not in cluster %" PRId64 " (%s)",
                      p->vm_id, net, i - 1, p->cluster, p->cluster_name);
      catalog_result_free(&res);
    }
    free(net);
    if (r < 0)
      return r;
  }
  return 0;
}

static int
check_state(struct plan *p)
{
  if (p->state == VM_UNDEPLOYED || p->state == VM_STOPPED)
    return 0;
  /* Resume of a POWEROFF VM is LifeCycleManager::trigger_restart: the same host, a copy of the
   * last history record, no scheduler, no prolog — it would boot on the old cluster. */
  if (p->state == VM_POWEROFF) {
    if (p->req.undeploys_poweroff)
      return 0;
    return error_set(EBUSY,
                     "VM %" PRId64 " (%s) is POWEROFF: oned resumes a powered-off VM on the "
                     "same host with a copy of its last history record (no scheduling, no "
                     "prolog), so after a move it would boot in the old cluster; undeploy it "
                     "first (onevm undeploy %" PRId64 "), or move it through an xmlrpc:// "
                     "catalog, which undeploys it",
                     p->vm_id, p->vm_name, p->vm_id);
  }
  if (p->state == VM_ACTIVE && p->lcm_state == LCM_RUNNING) {
    if (p->req.force || p->req.storage_moves_running)
      return 0;
    return error_set(EBUSY,
                     "VM %" PRId64 " (%s) is RUNNING: undeploy it first, or "
                     "pass --force for a metadata-only switch under a running VM",
                     p->vm_id, p->vm_name);
  }
  return error_set(EBUSY,
                   "VM %" PRId64 " (%s) is in state %s (LCM state %d): ferry moves VMs "
                   "that are UNDEPLOYED or STOPPED (POWEROFF through oned, which undeploys "
                   "it; RUNNING with --force)",
                   p->vm_id, p->vm_name, plan_state_name(p->state, p->lcm_state), p->lcm_state);
}

static int
load_vm(struct plan *p)
{
  struct catalog_result res;
  char sql[160];
  snprintf(sql, sizeof sql, "SELECT name, state, lcm_state FROM vm_pool WHERE oid = %" PRId64,
           p->vm_id);
  int r = catalog_query(p->catalog, sql, 3, &res);
  if (r < 0)
    return r;
  if (res.nrows != 1) {
    catalog_result_free(&res);
    return error_set(ENOENT, "VM %" PRId64 " not found in vm_pool", p->vm_id);
  }
  p->vm_name = strdup(catalog_cell(&res, 0, 0) ? catalog_cell(&res, 0, 0) : "");
  p->state = catalog_cell(&res, 0, 1) ? atoi(catalog_cell(&res, 0, 1)) : -1;
  p->lcm_state = catalog_cell(&res, 0, 2) ? atoi(catalog_cell(&res, 0, 2)) : -1;
  catalog_result_free(&res);
  if (!p->vm_name)
    return error_set(ENOMEM, "out of memory");
  return plan_add_row(p, CATALOG_VM, p->vm_id, -1, NULL); /* always row 0 */
}

static int
load_history(struct plan *p)
{
  struct catalog_result res;
  char sql[160];
  /* Not MAX(seq): a VM without history would make it NULL, and oned's one.system.sqlquery cuts
   * its answer at a NULL cell. */
  snprintf(sql, sizeof sql,
           "SELECT seq FROM history WHERE vid = %" PRId64 " ORDER BY seq DESC LIMIT 1", p->vm_id);
  int r = catalog_query(p->catalog, sql, 1, &res);
  if (r < 0)
    return r;
  const char *seq = res.nrows ? catalog_cell(&res, 0, 0) : NULL;
  if (seq && *seq)
    r = plan_add_row(p, CATALOG_HISTORY, p->vm_id, strtoll(seq, NULL, 10), NULL);
  catalog_result_free(&res);
  return r;
}

/* The VM body embeds the last history record: it must be the table's last, or editing
 * /VM/HISTORY_RECORDS/HISTORY would change a record the history row does not match. */
static int
check_embedded_history(struct plan *p, struct xmlbody *vm)
{
  size_t h = (size_t)-1;
  for (size_t i = 0; i < p->n_rows; i++)
    if (p->before[i].kind == CATALOG_HISTORY)
      h = i;
  char *seq = NULL;
  int r = xmlbody_get(vm, "/VM/HISTORY_RECORDS/HISTORY/SEQ", &seq);
  if (r < 0)
    return r;
  if (seq && (h == (size_t)-1 || strtoll(seq, NULL, 10) != p->before[h].seq))
    r = error_set(EINVAL,
                  "VM %" PRId64 ": its body embeds history seq %s but the history table's "
                  "last is %s: inconsistent catalog (run onedb fsck)",
                  p->vm_id, seq, h == (size_t)-1 ? "none" : "another");
  free(seq);
  return r;
}

/* The system datastore the last history record names (where volatile and CLONE=YES disks
 * live now). */
static int
load_current_system_datastore(struct plan *p)
{
  size_t h = plan_find_row(p, CATALOG_HISTORY, p->vm_id, -1);
  struct xmlbody *b = NULL;
  char *v = NULL, what[96];
  int r = 0;
  p->src_system_datastore = -1;
  if (h == (size_t)-1)
    return 0;
  if ((r = xmlbody_parse_lenient(p->before[h].value[CATALOG_BODY],
                                 plan_row_what(&p->before[h], CATALOG_BODY, what, sizeof what), &b))
          == 0
      && (r = xmlbody_get(b, "/HISTORY/DS_ID", &v)) == 1) {
    p->src_system_datastore = strtoll(v, NULL, 10);
    r = plan_add_row(p, CATALOG_DATASTORE, p->src_system_datastore, -1, NULL);
    if (r == -ENOENT)
      r = error_set(ENOENT,
                    "VM %" PRId64 ": its last history record names system datastore %" PRId64
                    ", which is not in datastore_pool",
                    p->vm_id, p->src_system_datastore);
  }
  free(v);
  xmlbody_free(b);
  return r < 0 ? r : 0;
}

int
plan_build(struct catalog *c, const struct plan_request *req, struct plan **out)
{
  struct plan *p = calloc(1, sizeof *p);
  struct plan_ds ds = { 0 }, sys = { 0 };
  struct xmlbody *vm = NULL;
  int64_t *disk_ids = NULL;
  size_t n_disks = 0;
  char what[96];
  int r;

  *out = NULL;
  if (!p)
    return error_set(ENOMEM, "out of memory");
  p->catalog = c;
  p->req = *req;
  p->vm_id = req->vm_id;
  if (req->n_disk_ids) {
    if (!(p->req_disks = malloc(req->n_disk_ids * sizeof *p->req_disks))) {
      r = error_set(ENOMEM, "out of memory");
      goto out;
    }
    memcpy(p->req_disks, req->disk_ids, req->n_disk_ids * sizeof *p->req_disks);
    p->req.disk_ids = p->req_disks;
  }
  if ((r = load_vm(p)) < 0 || (r = resolve_destination(p, &ds, &sys)) < 0)
    goto out;
  if ((r = xmlbody_parse(p->before[0].value[CATALOG_BODY],
                         plan_row_what(&p->before[0], CATALOG_BODY, what, sizeof what), &vm))
          < 0
      || (r = check_networks(p, vm)) < 0 || (r = plan_select_disks(p, vm, &disk_ids, &n_disks)) < 0
      || (r = load_history(p)) < 0 || (r = check_embedded_history(p, vm)) < 0
      || (r = load_current_system_datastore(p)) < 0
      || (r = plan_add_row(p, CATALOG_DATASTORE, ds.id, -1, NULL)) < 0
      || (r = plan_add_row(p, CATALOG_DATASTORE, sys.id, -1, NULL)) < 0
      || (r = plan_load_inherit(p)) < 0)
    goto out;
  if (n_disks == 0) {
    r = error_set(EINVAL, "VM %" PRId64 " has no disk to move", p->vm_id);
    goto out;
  }
  if (!(p->disks = calloc(n_disks, sizeof *p->disks))) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  /* Register every moving disk first: image_used_elsewhere() needs the full set. */
  for (size_t i = 0; i < n_disks; i++)
    p->disks[i].disk_id = disk_ids[i];
  p->n_disks = n_disks;
  for (size_t i = 0; i < n_disks; i++)
    if ((r = plan_load_disk(p, vm, disk_ids[i], &p->disks[i])) < 0)
      goto out;
  if ((r = plan_load_owners(p)) < 0 || (r = plan_compute(p)) < 0)
    goto out;
  /* A finished move is a no-op whatever the VM's state; anything else must be movable. */
  if (!plan_is_noop(p) && (r = check_state(p)) < 0)
    goto out;
  *out = p;
  p = NULL;
out:
  free(disk_ids);
  xmlbody_free(vm);
  plan_ds_clear(&ds);
  plan_ds_clear(&sys);
  plan_free(p);
  return r;
}

void
plan_free(struct plan *p)
{
  if (!p)
    return;
  plan_clear_edits(p);
  for (size_t i = 0; i < p->n_rows; i++) {
    catalog_row_clear(&p->before[i]);
    catalog_row_clear(&p->after[i]);
  }
  for (size_t i = 0; i < p->n_disks; i++) {
    struct plan_disk *d = &p->disks[i];
    free(d->source);
    free(d->new_source);
    free(d->given_source);
    free(d->src_tm_mad);
    free(d->dst_tm_mad);
    free(d->src_base_path);
    free(d->dst_base_path);
  }
  for (size_t i = 0; i < p->n_notes; i++)
    free(p->notes[i]);
  free(p->notes);
  free(p->disks);
  free(p->before);
  free(p->after);
  free(p->req_disks);
  free(p->vm_name);
  free(p->cluster_name);
  free(p->datastore_name);
  free(p->system_datastore_name);
  for (size_t i = 0; i < p->n_inherit; i++)
    free(p->inherit[i]);
  free(p->inherit);
  free(p->inherit_source);
  free(p);
}

bool
plan_is_noop(const struct plan *p)
{
  return p->n_edits == 0;
}

bool
plan_row_touched(const struct plan *p, size_t row)
{
  return !catalog_row_equal(&p->before[row], &p->after[row]);
}

int
plan_set_disk_source(struct plan *p, int64_t disk_id, const char *new_source)
{
  for (size_t i = 0; i < p->n_disks; i++) {
    if (p->disks[i].disk_id != disk_id)
      continue;
    char *s = new_source ? strdup(new_source) : NULL;
    if (new_source && !s)
      return error_set(ENOMEM, "out of memory");
    free(p->disks[i].given_source);
    p->disks[i].given_source = s;
    return plan_compute(p);
  }
  return error_set(ENOENT, "disk %" PRId64 " is not part of the plan", disk_id);
}
