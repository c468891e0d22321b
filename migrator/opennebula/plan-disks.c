/* ferry: which DISKs of a VM move, and what the plan must know about each (plan_build's
 * second half): image disks with their image datastore, volatile disks (TYPE fs/swap) with the
 * system datastore, the images and datastores involved, INHERIT_DATASTORE_ATTR, the owners'
 * quota rows. */
#include "migrator/opennebula/plan-internal.h"
#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- INHERIT_DATASTORE_ATTR ---- */

/* share/etc/oned.conf of each release (the operator may change them: oned's own list wins). */
static const char *const inherit_5_12[] = { "CEPH_HOST",
                                            "CEPH_SECRET",
                                            "CEPH_KEY",
                                            "CEPH_USER",
                                            "CEPH_CONF",
                                            "CEPH_TRASH",
                                            "POOL_NAME",
                                            "ISCSI_USER",
                                            "ISCSI_USAGE",
                                            "ISCSI_HOST",
                                            "GLUSTER_HOST",
                                            "GLUSTER_VOLUME",
                                            "DISK_TYPE",
                                            "ALLOW_ORPHANS",
                                            "VCENTER_ADAPTER_TYPE",
                                            "VCENTER_DISK_TYPE",
                                            "VCENTER_DS_REF",
                                            "VCENTER_DS_IMAGE_DIR",
                                            "VCENTER_DS_VOLATILE_DIR",
                                            "VCENTER_INSTANCE_ID",
                                            NULL };
static const char *const inherit_6_8_extra[] = { "QCOW2_STANDALONE", NULL };
static const char *const inherit_6_10_extra[] = { "SPARSE", NULL };
static const char *const inherit_7_extra[] = { "LVM_THIN_ENABLE", "PERSISTENT_SNAPSHOTS", NULL };

static int
inherit_add(struct plan *p, const char *name)
{
  for (size_t i = 0; i < p->n_inherit; i++)
    if (!strcmp(p->inherit[i], name))
      return 0;
  char **v = realloc(p->inherit, (p->n_inherit + 1) * sizeof *v);
  if (!v)
    return error_set(ENOMEM, "out of memory");
  p->inherit = v;
  if (!(p->inherit[p->n_inherit] = strdup(name)))
    return error_set(ENOMEM, "out of memory");
  p->n_inherit++;
  return 0;
}

static int
inherit_defaults(struct plan *p)
{
  const struct catalog_schema *s = catalog_schema(p->catalog);
  int r = 0;
  for (size_t i = 0; inherit_5_12[i] && r == 0; i++)
    if (s->major < 7 || strncmp(inherit_5_12[i], "VCENTER_", 8) != 0)
      r = inherit_add(p, inherit_5_12[i]);
  if (s->major >= 6)
    for (size_t i = 0; inherit_6_8_extra[i] && r == 0; i++)
      r = inherit_add(p, inherit_6_8_extra[i]);
  if (s->major >= 7 || (s->major == 6 && s->minor >= 10))
    for (size_t i = 0; inherit_6_10_extra[i] && r == 0; i++)
      r = inherit_add(p, inherit_6_10_extra[i]);
  if (s->major >= 7)
    for (size_t i = 0; inherit_7_extra[i] && r == 0; i++)
      r = inherit_add(p, inherit_7_extra[i]);
  return r;
}

/* INHERIT_DATASTORE_ATTR = "NAME" lines of an oned.conf (comments skipped). */
static int
inherit_from_file(struct plan *p, const char *path, FILE *f)
{
  char line[1024];
  int r = 0, found = 0;
  while (r == 0 && fgets(line, sizeof line, f)) {
    char *s = line, name[256];
    while (*s == ' ' || *s == '\t')
      s++;
    if (strncmp(s, "INHERIT_DATASTORE_ATTR", 22) != 0)
      continue;
    s += 22;
    if (sscanf(s, " = \"%255[^\"]\"", name) == 1 || sscanf(s, " = %255s", name) == 1) {
      r = inherit_add(p, name);
      found++;
    }
  }
  if (r == 0 && !found)
    r = error_set(EINVAL, "%s: no INHERIT_DATASTORE_ATTR: not oned's configuration?", path);
  return r;
}

static int
inherit_from_oned(struct plan *p, const char *xml)
{
  struct xmlbody *x = NULL;
  int r = xmlbody_parse_lenient(xml, "one.system.config", &x);
  int n = r == 0 ? xmlbody_count(x, "/OPENNEBULA_CONFIGURATION/INHERIT_DATASTORE_ATTR") : 0;
  for (int i = 1; i <= n && r >= 0; i++) {
    char path[96], *v = NULL;
    snprintf(path, sizeof path, "/OPENNEBULA_CONFIGURATION/INHERIT_DATASTORE_ATTR[%d]", i);
    if ((r = xmlbody_get(x, path, &v)) == 1)
      r = inherit_add(p, v);
    free(v);
  }
  xmlbody_free(x);
  return r < 0 ? r : n;
}

static int
inherit_note(struct plan *p)
{
  return plan_note(p,
                   "datastore attributes inherited by DISKs (INHERIT_DATASTORE_ATTR): %zu, "
                   "from %s",
                   p->n_inherit, p->inherit_source);
}

int
plan_load_inherit(struct plan *p)
{
  const char *conf = p->req.oned_conf;
  char *xml = NULL;
  int r;
  const struct catalog_schema *s = catalog_schema(p->catalog);
  p->vectors_inherited = s->major >= 6; /* Datastore::disk_attribute, 6.0+ */
  if (!conf && catalog_oned_config(p->catalog, &xml) == 0) {
    r = inherit_from_oned(p, xml);
    free(xml);
    if (r > 0) {
      if (!(p->inherit_source = strdup("oned's configuration (one.system.config)")))
        return error_set(ENOMEM, "out of memory");
      return inherit_note(p);
    }
    if (r < 0)
      return r;
  }
  error_clear();
  FILE *f = fopen(conf ? conf : "/etc/one/oned.conf", "r");
  if (f) {
    r = inherit_from_file(p, conf ? conf : "/etc/one/oned.conf", f);
    fclose(f);
    if (r < 0)
      return r;
    if (!(p->inherit_source = strdup(conf ? conf : "/etc/one/oned.conf")))
      return error_set(ENOMEM, "out of memory");
    return inherit_note(p);
  }
  if (conf)
    return error_set_errno(errno, "--oned-conf %s", conf);
  if ((r = inherit_defaults(p)) < 0)
    return r;
  if (asprintf(&p->inherit_source, "oned.conf's defaults of OpenNebula %d.%d", s->major, s->minor)
      < 0) {
    p->inherit_source = NULL;
    return error_set(ENOMEM, "out of memory");
  }
  return inherit_note(p);
}

/* ---- disks ---- */

static int
disk_field(struct xmlbody *vm, int64_t disk, const char *field, char **value)
{
  char path[128];
  snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[DISK_ID=%" PRId64 "]/%s", disk, field);
  return xmlbody_get(vm, path, value);
}

static bool
volatile_type(const char *type)
{
  return type && (!strcasecmp(type, "fs") || !strcasecmp(type, "swap"));
}

/* Every DISK that can move (image-backed with a datastore, or volatile and deployed), or the
 * requested ones; what is skipped is said in a note. */
int
plan_select_disks(struct plan *p, struct xmlbody *vm, int64_t **ids, size_t *n)
{
  int total = xmlbody_count(vm, "/VM/TEMPLATE/DISK");
  int64_t *all = calloc(total > 0 ? (size_t)total : 1, sizeof *all);
  size_t n_all = 0;
  int r = 0;
  if (!all)
    return error_set(ENOMEM, "out of memory");
  for (int i = 1; i <= total && r == 0; i++) {
    char path[96], *id = NULL, *ds = NULL, *type = NULL, *img = NULL;
    snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[%d]/DISK_ID", i);
    xmlbody_get(vm, path, &id);
    snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[%d]/DATASTORE_ID", i);
    xmlbody_get(vm, path, &ds);
    snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[%d]/TYPE", i);
    xmlbody_get(vm, path, &type);
    snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[%d]/IMAGE_ID", i);
    xmlbody_get(vm, path, &img);
    bool wanted = !p->req.n_disk_ids;
    for (size_t k = 0; id && k < p->req.n_disk_ids; k++)
      wanted |= p->req.disk_ids[k] == strtoll(id, NULL, 10);
    if (id && ds)
      all[n_all++] = strtoll(id, NULL, 10);
    else if (id && wanted && volatile_type(type))
      r = p->req.n_disk_ids
              ? error_set(EINVAL,
                          "VM %" PRId64 " disk %s: volatile and never deployed (no "
                          "DATASTORE_ID): nothing to move, oned fills it from the system "
                          "datastore at deploy",
                          p->vm_id, id)
              : plan_note(p,
                          "disk %s skipped: volatile (%s) and never deployed, nothing to move: "
                          "oned fills it from the system datastore at deploy",
                          id, type);
    else if (id && wanted)
      r = p->req.n_disk_ids
              ? error_set(EINVAL, "VM %" PRId64 " disk %s: no DATASTORE_ID: nothing to move",
                          p->vm_id, id)
              : plan_note(p, "disk %s skipped: no DATASTORE_ID (%s%s), nothing to move", id,
                          img ? "image " : "no image", img ? img : "");
    free(id);
    free(ds);
    free(type);
    free(img);
  }
  if (r < 0) {
    free(all);
    return r;
  }
  if (!p->req.n_disk_ids) {
    *ids = all;
    *n = n_all;
    return 0;
  }
  for (size_t i = 0; i < p->req.n_disk_ids && r == 0; i++) {
    bool known = false;
    for (size_t k = 0; k < n_all; k++)
      known |= all[k] == p->req.disk_ids[i];
    if (!known)
      r = error_set(ENOENT, "VM %" PRId64 " has no disk %" PRId64 " (DISK_ID)", p->vm_id,
                    p->req.disk_ids[i]);
  }
  free(all);
  if (r < 0)
    return r;
  if (!(*ids = malloc(p->req.n_disk_ids * sizeof **ids)))
    return error_set(ENOMEM, "out of memory");
  memcpy(*ids, p->req.disk_ids, p->req.n_disk_ids * sizeof **ids);
  *n = p->req.n_disk_ids;
  return 0;
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
    char what[96];
    *user = vms[i];
    if (catalog_read_row(p->catalog, CATALOG_VM, vms[i], -1, &row) < 0) {
      error_clear();
      r = 1; /* listed but unreadable: assume it still uses the image */
      break;
    }
    if ((r = xmlbody_parse_lenient(row.value[CATALOG_BODY],
                                   plan_row_what(&row, CATALOG_BODY, what, sizeof what), &x))
        == 0) {
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
load_image(struct plan *p, struct plan_disk *dk, const struct plan_ds *dst)
{
  size_t irow;
  struct xmlbody *ix = NULL;
  char *pers = NULL, *img_ds = NULL, what[96];
  int r;
  if ((r = plan_add_row(p, CATALOG_IMAGE, dk->image_id, -1, &irow)) < 0) {
    if (r == -ENOENT)
      error_set(ENOENT, "image %" PRId64 " (disk %" PRId64 ") not found in image_pool",
                dk->image_id, dk->disk_id);
    return r;
  }
  if ((r = xmlbody_parse(p->before[irow].value[CATALOG_BODY],
                         plan_row_what(&p->before[irow], CATALOG_BODY, what, sizeof what), &ix))
          == 0
      && (r = xmlbody_get(ix, "/IMAGE/PERSISTENT", &pers)) >= 0
      && (r = xmlbody_get(ix, "/IMAGE/DATASTORE_ID", &img_ds)) >= 0) {
    int64_t from = img_ds ? strtoll(img_ds, NULL, 10) : dk->src_datastore;
    dk->persistent = pers && atoi(pers) == 1;
    r = 0;
    if (from != dst->id && (r = plan_add_row(p, CATALOG_DATASTORE, from, -1, NULL)) == 0) {
      int64_t user = -1;
      if (dk->persistent)
        dk->image_moves = true;
      else if ((r = image_used_elsewhere(p, ix, dk->image_id, from, &user)) == 0)
        dk->image_moves = true;
      else if (r == 1)
        r = plan_note(p,
                      "image %" PRId64 " (non-persistent) stays on datastore %" PRId64
                      ": still used there by VM %" PRId64,
                      dk->image_id, from, user);
    }
  }
  free(pers);
  free(img_ds);
  xmlbody_free(ix);
  return r;
}

int
plan_load_disk(struct plan *p, struct xmlbody *vm, int64_t disk_id, struct plan_disk *dk)
{
  char *ds = NULL, *img = NULL, *size = NULL, *type = NULL;
  struct plan_ds src = { 0 }, dst = { 0 };
  int r;
  memset(dk, 0, sizeof *dk);
  dk->disk_id = disk_id;
  dk->image_id = -1;
  if ((r = disk_field(vm, disk_id, "DATASTORE_ID", &ds)) < 0
      || (r = disk_field(vm, disk_id, "IMAGE_ID", &img)) < 0
      || (r = disk_field(vm, disk_id, "SOURCE", &dk->source)) < 0
      || (r = disk_field(vm, disk_id, "SIZE", &size)) < 0
      || (r = disk_field(vm, disk_id, "TYPE", &type)) < 0
      || (r = disk_field(vm, disk_id, "TM_MAD", &dk->src_tm_mad)) < 0)
    goto out;
  /* Volatile disks live in the system datastore (VirtualMachineDisks::volatile_info gave them
   * its DATASTORE_ID after deploy): they move with it, like a CLONE=YES disk's copy. */
  dk->is_volatile = volatile_type(type);
  dk->src_datastore = strtoll(ds, NULL, 10);
  dk->dst_datastore = dk->is_volatile ? p->system_datastore : p->datastore;
  dk->size_mb = size ? strtoull(size, NULL, 10) : 0;
  if ((r = plan_ds_load(p, dk->src_datastore, &src)) < 0
      || (r = plan_ds_load(p, dk->dst_datastore, &dst)) < 0)
    goto out;
  if (!(dk->src_base_path = strdup(src.base_path ? src.base_path : ""))
      || !(dk->dst_base_path = strdup(dst.base_path ? dst.base_path : ""))
      || !(dk->dst_tm_mad = strdup(dst.tm_mad ? dst.tm_mad : ""))) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  if (dk->is_volatile && src.type != 1) {
    r = error_set(EINVAL,
                  "VM %" PRId64 " disk %" PRId64 " (volatile %s) names datastore %" PRId64
                  " (%s), which is not a system datastore",
                  p->vm_id, disk_id, type, src.id, src.name);
    goto out;
  }
  if (img && !dk->is_volatile) {
    dk->image_id = strtoll(img, NULL, 10);
    r = load_image(p, dk, &dst);
  }
out:
  plan_ds_clear(&src);
  plan_ds_clear(&dst);
  free(ds);
  free(img);
  free(size);
  free(type);
  return r;
}

/* ---- owners and their quota rows ---- */

static int
owner_of(struct plan *p, enum catalog_kind kind, int64_t id, int64_t *uid, int64_t *gid)
{
  struct catalog_result res;
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT uid, gid FROM %s WHERE oid = %" PRId64,
           catalog_table_name(kind), id);
  int r = catalog_query(p->catalog, sql, 2, &res);
  if (r < 0)
    return r;
  *uid = *gid = -1;
  if (res.nrows == 1 && catalog_cell(&res, 0, 0) && catalog_cell(&res, 0, 1)) {
    *uid = strtoll(catalog_cell(&res, 0, 0), NULL, 10);
    *gid = strtoll(catalog_cell(&res, 0, 1), NULL, 10);
  }
  catalog_result_free(&res);
  return 0;
}

static int
quota_row(struct plan *p, enum catalog_kind kind, int64_t id)
{
  if (id <= 0) /* oneadmin (user 0, group 0) has no quotas (onedb fsck skips it too) */
    return 0;
  int r = plan_add_row(p, kind, id, -1, NULL);
  if (r == -ENOENT) {
    error_clear();
    return plan_note(p, "%s has no row for %" PRId64 ": its datastore quotas are not updated",
                     catalog_table_name(kind), id);
  }
  return r;
}

/* The user and group quota rows of the VM's owner and of every moving image's owner. */
int
plan_load_owners(struct plan *p)
{
  int r;
  bool users = catalog_has_table(p->catalog, CATALOG_USER_QUOTAS),
       groups = catalog_has_table(p->catalog, CATALOG_GROUP_QUOTAS);
  if ((r = owner_of(p, CATALOG_VM, p->vm_id, &p->vm_uid, &p->vm_gid)) < 0)
    return r;
  if (!users || !groups)
    return plan_note(p, "no %s table: datastore quotas not updated (run onedb fsck)",
                     !users ? "user_quotas" : "group_quotas");
  if ((r = quota_row(p, CATALOG_USER_QUOTAS, p->vm_uid)) < 0
      || (r = quota_row(p, CATALOG_GROUP_QUOTAS, p->vm_gid)) < 0)
    return r;
  for (size_t i = 0; i < p->n_disks && r == 0; i++) {
    int64_t uid, gid;
    if (p->disks[i].image_id < 0 || !p->disks[i].image_moves)
      continue;
    if ((r = owner_of(p, CATALOG_IMAGE, p->disks[i].image_id, &uid, &gid)) == 0
        && (r = quota_row(p, CATALOG_USER_QUOTAS, uid)) == 0)
      r = quota_row(p, CATALOG_GROUP_QUOTAS, gid);
  }
  return r;
}
