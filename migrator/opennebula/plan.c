/* ferry: building a plan — load the rows, check the request, refuse what cannot move. */
#include "migrator/opennebula/plan.h"
#include "migrator/opennebula/xmlbody.h"
#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "migrator/opennebula/plan-internal.h"

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

static int
note(struct plan *p, const char *fmt, ...)
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

/* Datastore facts from its body. */
struct ds_info {
  int64_t id;
  char *name, *tm_mad, *base_path;
  int type;
};

static void
ds_info_clear(struct ds_info *d)
{
  free(d->name);
  free(d->tm_mad);
  free(d->base_path);
  memset(d, 0, sizeof *d);
}

static int
ds_info_load(struct catalog *c, int64_t id, struct ds_info *d)
{
  struct catalog_row row;
  struct xmlbody *x = NULL;
  char *type = NULL;
  int r;
  memset(d, 0, sizeof *d);
  d->id = id;
  if ((r = catalog_read_row(c, CATALOG_DATASTORE, id, -1, &row)) < 0) {
    if (r == -ENOENT)
      error_set(ENOENT, "datastore %" PRId64 " not found in datastore_pool", id);
    return r;
  }
  if ((r = xmlbody_parse(row.value[CATALOG_BODY], "datastore body", &x)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/NAME", &d->name)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/TM_MAD", &d->tm_mad)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/BASE_PATH", &d->base_path)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/TYPE", &type)) < 0)
    goto out;
  d->type = type ? atoi(type) : -1;
  if (!d->name)
    r = error_set(EINVAL, "datastore %" PRId64 ": body has no NAME", id);
  else
    r = 0;
out:
  free(type);
  xmlbody_free(x);
  catalog_row_clear(&row);
  if (r < 0)
    ds_info_clear(d);
  return r;
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

static int
add_row(struct plan *p, enum catalog_kind kind, int64_t id, int64_t seq, size_t *index)
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
    struct ds_info d;
    if ((r = ds_info_load(c, ids[i], &d)) < 0)
      break;
    if (d.type == type) {
      found++;
      *out = ids[i];
    }
    ds_info_clear(&d);
  }
  free(ids);
  if (r == 0 && found != 1)
    r = error_set(EINVAL, "cluster %" PRId64 " (%s) has %zu %s datastores: name one with %s",
                  p->cluster, p->cluster_name, found, type == DS_TYPE_IMAGE ? "image" : "system",
                  type == DS_TYPE_IMAGE ? "--to-datastore" : "--to-system-datastore");
  return r;
}

static int
check_in_cluster(struct plan *p, const struct ds_info *d)
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
resolve_destination(struct plan *p, struct ds_info *ds, struct ds_info *sys)
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
      if ((r = ds_info_load(c, p->datastore, ds)) < 0)
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
  if ((r = ds_info_load(c, p->datastore, ds)) < 0
      || (r = ds_info_load(c, p->system_datastore, sys)) < 0)
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
disk_field(struct xmlbody *vm, int64_t disk, const char *field, char **value)
{
  char path[128];
  snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[DISK_ID=%" PRId64 "]/%s", disk, field);
  return xmlbody_get(vm, path, value);
}

/* Does some VM other than the moving disks still use image `img` on datastore `ds`? */
static int
image_used_elsewhere(struct plan *p, struct xmlbody *img, int64_t image_id, int64_t ds,
                     int64_t *user)
{
  int64_t *vms;
  size_t n;
  int r = xmlbody_ids(img, "/IMAGE/VMS", &vms, &n);
  char where[160];
  snprintf(where, sizeof where,
           "/VM/TEMPLATE/DISK[IMAGE_ID=%" PRId64 " and DATASTORE_ID=%" PRId64 "]/DISK_ID", image_id,
           ds);
  for (size_t i = 0; i < n && r == 0; i++) {
    struct catalog_row row;
    struct xmlbody *x = NULL;
    *user = vms[i];
    if (catalog_read_row(p->catalog, CATALOG_VM, vms[i], -1, &row) < 0) {
      error_clear();
      r = 1; /* listed but unreadable: assume it still uses the image */
      break;
    }
    if ((r = xmlbody_parse(row.value[CATALOG_BODY], "vm_pool body", &x)) == 0) {
      int count = xmlbody_count(x, where);
      if (vms[i] == p->vm_id) { /* our own disks that stay behind count too */
        count = 0;
        int total = xmlbody_count(x, "/VM/TEMPLATE/DISK");
        for (int d = 1; d <= total; d++) {
          char path[200], *id = NULL, *im = NULL;
          snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[%d]/DISK_ID", d);
          xmlbody_get(x, path, &id);
          snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[%d]/IMAGE_ID", d);
          xmlbody_get(x, path, &im);
          bool moving = false;
          for (size_t k = 0; id && k < p->n_disks; k++)
            moving |= p->disks[k].disk_id == strtoll(id, NULL, 10);
          if (im && strtoll(im, NULL, 10) == image_id && !moving)
            count++;
          free(id);
          free(im);
        }
      }
      r = count > 0 ? 1 : 0;
    }
    xmlbody_free(x);
    catalog_row_clear(&row);
  }
  free(vms);
  return r;
}

static int
load_disk(struct plan *p, struct xmlbody *vm, int64_t disk_id, const struct ds_info *dst,
          struct plan_disk *dk)
{
  char *ds = NULL, *img = NULL, *size = NULL;
  struct ds_info src = { 0 };
  int r;
  memset(dk, 0, sizeof *dk);
  dk->disk_id = disk_id;
  dk->image_id = -1;
  if ((r = disk_field(vm, disk_id, "DATASTORE_ID", &ds)) < 0
      || (r = disk_field(vm, disk_id, "IMAGE_ID", &img)) < 0
      || (r = disk_field(vm, disk_id, "SOURCE", &dk->source)) < 0
      || (r = disk_field(vm, disk_id, "SIZE", &size)) < 0
      || (r = disk_field(vm, disk_id, "TM_MAD", &dk->src_tm_mad)) < 0)
    goto out;
  if (!ds) {
    r = error_set(EINVAL,
                  "VM %" PRId64 ": disk %" PRId64 " has no image datastore (volatile "
                  "disk): ferry moves image-backed disks",
                  p->vm_id, disk_id);
    goto out;
  }
  dk->src_datastore = strtoll(ds, NULL, 10);
  dk->dst_datastore = dst->id;
  dk->size_mb = size ? strtoull(size, NULL, 10) : 0;
  if ((r = ds_info_load(p->catalog, dk->src_datastore, &src)) < 0)
    goto out;
  if (!(dk->src_base_path = strdup(src.base_path ? src.base_path : ""))
      || !(dk->dst_base_path = strdup(dst->base_path ? dst->base_path : ""))
      || !(dk->dst_tm_mad = strdup(dst->tm_mad ? dst->tm_mad : ""))) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  if ((r = add_row(p, CATALOG_DATASTORE, dk->src_datastore, -1, NULL)) < 0)
    goto out;
  if (!img) {
    r = 0;
    goto out;
  }
  dk->image_id = strtoll(img, NULL, 10);
  size_t irow;
  if ((r = add_row(p, CATALOG_IMAGE, dk->image_id, -1, &irow)) < 0) {
    if (r == -ENOENT)
      error_set(ENOENT, "image %" PRId64 " (disk %" PRId64 ") not found in image_pool",
                dk->image_id, disk_id);
    goto out;
  }
  struct xmlbody *ix = NULL;
  char *pers = NULL, *img_ds = NULL;
  if ((r = xmlbody_parse(p->before[irow].value[CATALOG_BODY], "image_pool body", &ix)) == 0
      && (r = xmlbody_get(ix, "/IMAGE/PERSISTENT", &pers)) >= 0
      && (r = xmlbody_get(ix, "/IMAGE/DATASTORE_ID", &img_ds)) >= 0) {
    int64_t from = img_ds ? strtoll(img_ds, NULL, 10) : dk->src_datastore;
    dk->persistent = pers && atoi(pers) == 1;
    r = 0;
    if (from != dst->id && (r = add_row(p, CATALOG_DATASTORE, from, -1, NULL)) == 0) {
      int64_t user = -1;
      if (dk->persistent)
        dk->image_moves = true;
      else if ((r = image_used_elsewhere(p, ix, dk->image_id, from, &user)) == 0)
        dk->image_moves = true;
      else if (r == 1) {
        r = note(p,
                 "image %" PRId64 " (non-persistent) stays on datastore %" PRId64
                 ": still used there by VM %" PRId64,
                 dk->image_id, from, user);
      }
    }
  }
  free(pers);
  free(img_ds);
  xmlbody_free(ix);
out:
  ds_info_clear(&src);
  free(ds);
  free(img);
  free(size);
  return r;
}

static int
select_disks(struct plan *p, struct xmlbody *vm, int64_t **ids, size_t *n)
{
  int total = xmlbody_count(vm, "/VM/TEMPLATE/DISK");
  int64_t *all = calloc(total > 0 ? (size_t)total : 1, sizeof *all);
  size_t n_all = 0;
  int r = 0;
  if (!all)
    return error_set(ENOMEM, "out of memory");
  for (int i = 1; i <= total; i++) {
    char path[96], *id = NULL, *ds = NULL;
    snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[%d]/DISK_ID", i);
    xmlbody_get(vm, path, &id);
    snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[%d]/DATASTORE_ID", i);
    xmlbody_get(vm, path, &ds);
    if (id && (p->req.n_disk_ids || ds))
      all[n_all++] = strtoll(id, NULL, 10);
    free(id);
    free(ds);
  }
  if (!p->req.n_disk_ids) {
    *ids = all;
    *n = n_all;
    return 0;
  }
  for (size_t i = 0; i < p->req.n_disk_ids && r == 0; i++)
    if (!list_has(all, n_all, p->req.disk_ids[i]))
      r = error_set(ENOENT, "VM %" PRId64 " has no disk %" PRId64 " (DISK_ID)", p->vm_id,
                    p->req.disk_ids[i]);
  free(all);
  if (r < 0)
    return r;
  if (!(*ids = malloc(p->req.n_disk_ids * sizeof **ids)))
    return error_set(ENOMEM, "out of memory");
  memcpy(*ids, p->req.disk_ids, p->req.n_disk_ids * sizeof **ids);
  *n = p->req.n_disk_ids;
  return 0;
}

static int
check_state(struct plan *p)
{
  if (p->state == VM_POWEROFF || p->state == VM_UNDEPLOYED || p->state == VM_STOPPED)
    return 0;
  if (p->state == VM_ACTIVE && p->lcm_state == LCM_RUNNING) {
    if (p->req.force || p->req.storage_moves_running)
      return 0;
    return error_set(EBUSY,
                     "VM %" PRId64 " (%s) is RUNNING: undeploy or power it off first, or "
                     "pass --force for a metadata-only switch under a running VM",
                     p->vm_id, p->vm_name);
  }
  return error_set(EBUSY,
                   "VM %" PRId64 " (%s) is in state %s (LCM state %d): ferry moves VMs "
                   "that are POWEROFF, UNDEPLOYED or STOPPED (RUNNING with --force)",
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
  return add_row(p, CATALOG_VM, p->vm_id, -1, NULL); /* always row 0 */
}

static int
load_history(struct plan *p)
{
  struct catalog_result res;
  char sql[160];
  snprintf(sql, sizeof sql, "SELECT MAX(seq) AS max_seq FROM history WHERE vid = %" PRId64,
           p->vm_id);
  int r = catalog_query(p->catalog, sql, 1, &res);
  if (r < 0)
    return r;
  const char *seq = res.nrows ? catalog_cell(&res, 0, 0) : NULL;
  if (seq && *seq)
    r = add_row(p, CATALOG_HISTORY, p->vm_id, strtoll(seq, NULL, 10), NULL);
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

int
plan_build(struct catalog *c, const struct plan_request *req, struct plan **out)
{
  struct plan *p = calloc(1, sizeof *p);
  struct ds_info ds = { 0 }, sys = { 0 };
  struct xmlbody *vm = NULL;
  int64_t *disk_ids = NULL;
  size_t n_disks = 0;
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
  if ((r = xmlbody_parse(p->before[0].value[CATALOG_BODY], "vm_pool body", &vm)) < 0
      || (r = check_networks(p, vm)) < 0 || (r = select_disks(p, vm, &disk_ids, &n_disks)) < 0
      || (r = load_history(p)) < 0 || (r = check_embedded_history(p, vm)) < 0
      || (r = add_row(p, CATALOG_DATASTORE, ds.id, -1, NULL)) < 0)
    goto out;
  if (n_disks == 0) {
    r = error_set(EINVAL, "VM %" PRId64 " has no image-backed disk to move", p->vm_id);
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
    if ((r = load_disk(p, vm, disk_ids[i], &ds, &p->disks[i])) < 0)
      goto out;
  if ((r = plan_compute(p)) < 0)
    goto out;
  /* A finished move is a no-op whatever the VM's state; anything else must be movable. */
  if (!plan_is_noop(p) && (r = check_state(p)) < 0)
    goto out;
  *out = p;
  p = NULL;
out:
  free(disk_ids);
  xmlbody_free(vm);
  ds_info_clear(&ds);
  ds_info_clear(&sys);
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
    free(p->disks[i].new_source);
    p->disks[i].new_source = s;
    return plan_compute(p);
  }
  return error_set(ENOENT, "disk %" PRId64 " is not part of the plan", disk_id);
}
