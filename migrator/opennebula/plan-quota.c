/* ferry: the owners' datastore quota usage follows the moved disks and images.
 *
 * oned counts, per user and per group (user_quotas / group_quotas bodies), on each datastore:
 * IMAGES_USED = the images owned there, SIZE_USED = their SIZE plus their snapshots plus, for
 * every VM owned, each DISK whose copy lives in the image datastore (CLONE=YES and
 * CLONE_TARGET=SELF, or CLONE=NO and LN_TARGET=SELF: SIZE + DISK_SNAPSHOT_TOTAL_SIZE on the
 * DISK's DATASTORE_ID); disks living in the system datastore count in VM_QUOTA's
 * SYSTEM_DISK_SIZE_USED.  That is onedb fsck's rule (src/onedb/fsck/quotas.rb) and oned's
 * (VirtualMachineDisk::image_ds_size/datastore_sizes, QuotaDatastore).  A move subtracts the
 * usage on the source datastore and adds it on the destination in the same switch; an entry
 * is created with default limits (-1) like Quota::check_quota and dropped when it falls back
 * to zero usage with default limits, like Quota::cleanup_quota.  An explicit limit the move
 * would exceed is refused.  oneadmin (user 0, group 0) has no quotas.
 */
#include "migrator/opennebula/plan-internal.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One owner's change on one datastore (ds -1: the system disk size of VM_QUOTA). */
struct delta {
  enum catalog_kind kind; /* CATALOG_USER_QUOTAS or CATALOG_GROUP_QUOTAS */
  int64_t owner;
  int64_t ds;
  double images, size;
};

struct deltas {
  struct delta *d;
  size_t n;
};

static int
add(struct deltas *ds, enum catalog_kind kind, int64_t owner, int64_t datastore, double images,
    double size)
{
  if (owner <= 0 || (images == 0 && size == 0))
    return 0;
  for (size_t i = 0; i < ds->n; i++)
    if (ds->d[i].kind == kind && ds->d[i].owner == owner && ds->d[i].ds == datastore) {
      ds->d[i].images += images;
      ds->d[i].size += size;
      return 0;
    }
  struct delta *v = realloc(ds->d, (ds->n + 1) * sizeof *v);
  if (!v)
    return error_set(ENOMEM, "out of memory");
  ds->d = v;
  ds->d[ds->n++] = (struct delta){ kind, owner, datastore, images, size };
  return 0;
}

static int
add_owner(struct deltas *ds, int64_t uid, int64_t gid, int64_t datastore, double images,
          double size)
{
  int r = add(ds, CATALOG_USER_QUOTAS, uid, datastore, images, size);
  return r < 0 ? r : add(ds, CATALOG_GROUP_QUOTAS, gid, datastore, images, size);
}

static double
number(struct xmlbody *b, const char *path)
{
  char *v = NULL;
  double n = xmlbody_get(b, path, &v) == 1 ? strtod(v, NULL) : 0;
  free(v);
  return n;
}

/* Where a DISK's usage counts: its image datastore (SELF), the system disk size (SYSTEM and
 * volatile), or nowhere (NONE). */
static int
disk_usage(struct xmlbody *vm, int64_t disk_id, int64_t *ds, double *size)
{
  char path[160], *type = NULL, *clone = NULL, *target = NULL, *dsid = NULL;
  int r;
  *ds = -2; /* counts nowhere */
  *size = 0;
#define FIELD(name, var)                                                                           \
  snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[DISK_ID=%" PRId64 "]/" name, disk_id);            \
  if ((r = xmlbody_get(vm, path, &var)) < 0)                                                       \
    goto out;
  FIELD("TYPE", type);
  FIELD("CLONE", clone);
  FIELD("DATASTORE_ID", dsid);
  snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[DISK_ID=%" PRId64 "]/SIZE", disk_id);
  *size = number(vm, path);
  snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[DISK_ID=%" PRId64 "]/DISK_SNAPSHOT_TOTAL_SIZE",
           disk_id);
  if (type && (!strcasecmp(type, "fs") || !strcasecmp(type, "swap"))) {
    *ds = -1; /* volatile disks have no snapshots */
    goto out;
  }
  *size += number(vm, path);
  bool cloned = clone && !strcasecmp(clone, "YES");
  if (cloned) {
    FIELD("CLONE_TARGET", target);
  } else if (clone) {
    FIELD("LN_TARGET", target);
  }
#undef FIELD
  if (target && !strcasecmp(target, "SELF") && dsid)
    *ds = strtoll(dsid, NULL, 10);
  else if (target && !strcasecmp(target, "SYSTEM"))
    *ds = -1;
  r = 0;
out:
  free(type);
  free(clone);
  free(target);
  free(dsid);
  return r < 0 ? r : 0;
}

/* The moved disks' usage before (the before-image) and after (the edited body). */
static int
disk_deltas(struct ctx *x, struct deltas *ds)
{
  struct plan *p = x->p;
  struct xmlbody *before = NULL;
  char what[96];
  int r = xmlbody_parse_lenient(p->before[0].value[CATALOG_BODY],
                                plan_row_what(&p->before[0], CATALOG_BODY, what, sizeof what),
                                &before);
  for (size_t i = 0; i < p->n_disks && r == 0; i++) {
    int64_t ds_b, ds_a;
    double sz_b, sz_a;
    if ((r = disk_usage(before, p->disks[i].disk_id, &ds_b, &sz_b)) < 0
        || (r = disk_usage(x->docs[0][CATALOG_BODY].xml, p->disks[i].disk_id, &ds_a, &sz_a)) < 0)
      break;
    if (ds_b == ds_a && sz_b == sz_a)
      continue;
    if (ds_b != -2 && (r = add_owner(ds, p->vm_uid, p->vm_gid, ds_b, 0, -sz_b)) < 0)
      break;
    if (ds_a != -2)
      r = add_owner(ds, p->vm_uid, p->vm_gid, ds_a, 0, sz_a);
  }
  xmlbody_free(before);
  return r;
}

/* Every moving image: one image and its size leave the source datastore for the destination. */
static int
image_deltas(struct ctx *x, struct deltas *ds)
{
  struct plan *p = x->p;
  int r = 0;
  for (size_t i = 0; i < p->n_disks && r == 0; i++) {
    const struct plan_disk *dk = &p->disks[i];
    if (dk->image_id < 0 || !dk->image_moves)
      continue;
    size_t row = plan_find_row(p, CATALOG_IMAGE, dk->image_id, -1);
    struct catalog_result res;
    char sql[128], *from = NULL, what[96];
    if (row == (size_t)-1)
      continue;
    struct xmlbody *b = NULL, *img = x->docs[row][CATALOG_BODY].xml;
    /* Its datastore before the move, and the owner (image_pool uid/gid). */
    if ((r = xmlbody_parse_lenient(p->before[row].value[CATALOG_BODY],
                                   plan_row_what(&p->before[row], CATALOG_BODY, what, sizeof what),
                                   &b))
            < 0
        || (r = xmlbody_get(b, "/IMAGE/DATASTORE_ID", &from)) < 0) {
      xmlbody_free(b);
      break;
    }
    r = 0;
    double size = number(img, "/IMAGE/SIZE");
    int snaps = xmlbody_count(img, "/IMAGE/SNAPSHOTS/SNAPSHOT");
    for (int s = 1; s <= snaps; s++) {
      char path[96];
      snprintf(path, sizeof path, "/IMAGE/SNAPSHOTS/SNAPSHOT[%d]/SIZE", s);
      size += number(img, path);
    }
    xmlbody_free(b);
    snprintf(sql, sizeof sql, "SELECT uid, gid FROM image_pool WHERE oid = %" PRId64, dk->image_id);
    if (from && (r = catalog_query(p->catalog, sql, 2, &res)) == 0) {
      if (res.nrows == 1 && catalog_cell(&res, 0, 0) && catalog_cell(&res, 0, 1)) {
        int64_t uid = strtoll(catalog_cell(&res, 0, 0), NULL, 10),
                gid = strtoll(catalog_cell(&res, 0, 1), NULL, 10);
        int64_t src = strtoll(from, NULL, 10);
        if (src != p->datastore && (r = add_owner(ds, uid, gid, src, -1, -size)) == 0)
          r = add_owner(ds, uid, gid, p->datastore, 1, size);
      }
      catalog_result_free(&res);
    }
    free(from);
  }
  return r;
}

/* one_util::float_to_str: integers without decimals, else two. */
static void
quota_number(double v, char *buf, size_t len)
{
  if (v == (double)(long long)v)
    snprintf(buf, len, "%.0f", v);
  else
    snprintf(buf, len, "%.2f", v);
}

static int
apply_one(struct ctx *x, const struct delta *d)
{
  struct plan *p = x->p;
  size_t row = plan_find_row(p, d->kind, d->owner, -1);
  const char *who = d->kind == CATALOG_USER_QUOTAS ? "user" : "group";
  char path[192], base[128], num[48], lim[48];
  int r;
  if (row == (size_t)-1)
    return 0; /* no quota row (a note says so) */
  struct xmlbody *b = x->docs[row][CATALOG_BODY].xml;
  if (d->ds == -1) { /* VM_QUOTA/VM/SYSTEM_DISK_SIZE_USED */
    snprintf(path, sizeof path, "/QUOTAS/VM_QUOTA/VM/SYSTEM_DISK_SIZE_USED");
    if (xmlbody_count(b, path) != 1)
      return 0;
    quota_number(number(b, path) + d->size, num, sizeof num);
    return edit_set_if_present(x, row, CATALOG_BODY, path, num);
  }
  snprintf(base, sizeof base, "/QUOTAS/DATASTORE_QUOTA/DATASTORE[ID=%" PRId64 "]", d->ds);
  int present = xmlbody_count(b, base);
  if (present < 0)
    return present;
  if (present == 0) {
    if (d->images < 0 || d->size < 0)
      return plan_note(p,
                       "%s %" PRId64 " has no datastore %" PRId64
                       " quota entry to take the usage from: run onedb fsck",
                       who, d->owner, d->ds);
    if (xmlbody_count(b, "/QUOTAS/DATASTORE_QUOTA") != 1)
      return plan_note(p, "%s %" PRId64 ": quota body has no DATASTORE_QUOTA: run onedb fsck", who,
                       d->owner);
    char id[32], images[48], size[48], text[256];
    snprintf(id, sizeof id, "%" PRId64, d->ds);
    quota_number(d->images, images, sizeof images);
    quota_number(d->size, size, sizeof size);
    const char *keys[] = { "ID", "IMAGES", "IMAGES_USED", "SIZE", "SIZE_USED" };
    const char *values[] = { id, "-1", images, "-1", size };
    if ((r = xmlbody_append_vector(b, "/QUOTAS/DATASTORE_QUOTA", "DATASTORE", keys, values, 5)) < 0)
      return r;
    snprintf(text, sizeof text, "IMAGES=-1 IMAGES_USED=%s SIZE=-1 SIZE_USED=%s", images, size);
    return plan_add_edit(p, row, CATALOG_BODY, PLAN_INSERT, base, NULL, text);
  }
  static const char *const metric[] = { "IMAGES", "SIZE" };
  double used[2], limit[2];
  for (int m = 0; m < 2; m++) {
    snprintf(path, sizeof path, "%s/%s_USED", base, metric[m]);
    used[m] = number(b, path) + (m ? d->size : d->images);
    snprintf(path, sizeof path, "%s/%s", base, metric[m]);
    limit[m] = xmlbody_count(b, path) == 1 ? number(b, path) : -1;
    /* -1: the default quota, -2: unlimited (Quota::DEFAULT/UNLIMITED); only explicit limits
     * are checked here. */
    if (limit[m] >= 0 && used[m] > limit[m] && (m ? d->size : d->images) > 0) {
      quota_number(limit[m], lim, sizeof lim);
      quota_number(used[m], num, sizeof num);
      return error_set(EDQUOT,
                       "%s %" PRId64 ": the move would use %s of %s on datastore %" PRId64
                       ", over its quota limit %s (%s_quotas): raise the quota first",
                       who, d->owner, num, metric[m], d->ds, lim, who);
    }
  }
  /* Back to nothing with default limits: Quota::cleanup_quota drops the entry. */
  if (used[0] == 0 && used[1] == 0 && limit[0] == -1 && limit[1] == -1) {
    char old[128];
    snprintf(old, sizeof old, "datastore %" PRId64 " entry", d->ds);
    if ((r = xmlbody_delete(b, base)) < 0)
      return r;
    return plan_add_edit(p, row, CATALOG_BODY, PLAN_DELETE, base, old, NULL);
  }
  for (int m = 0; m < 2; m++) {
    snprintf(path, sizeof path, "%s/%s_USED", base, metric[m]);
    quota_number(used[m], num, sizeof num);
    if ((r = edit_set_if_present(x, row, CATALOG_BODY, path, num)) < 0)
      return r;
  }
  return 0;
}

int
plan_quota_edits(struct ctx *x)
{
  struct deltas ds = { 0 };
  int r = disk_deltas(x, &ds);
  if (r == 0)
    r = image_deltas(x, &ds);
  /* Sources first: an entry emptied on one datastore is dropped before another is added. */
  for (int pass = 0; pass < 2 && r == 0; pass++)
    for (size_t i = 0; i < ds.n && r == 0; i++)
      if ((ds.d[i].images + ds.d[i].size < 0) == (pass == 0)
          && (ds.d[i].images != 0 || ds.d[i].size != 0))
        r = apply_one(x, &ds.d[i]);
  free(ds.d);
  return r < 0 ? r : 0;
}
