/* ferry: computing a plan's edits from the rows' before-images.
 *
 * Pure: it reads plan.before, writes plan.after and plan.edits, and can be re-run (after
 * plan_set_disk_source).  An edit whose old value already equals the new one is not an edit,
 * which is what makes re-running a finished move a no-op.  body_json (6.10+) is edited in place
 * with the same paths over the JSON tree (jsonbody.h).
 */
#include "migrator/opennebula/plan.h"
#include "migrator/opennebula/plan-internal.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the edits of a move ---- */

/* body_json mirrors the body: a path the body has must be in body_json too, or its layout is
 * not the one ferry understands and editing it would leave it stale. */
static int
json_mirrors_body(struct ctx *x, const char *path)
{
  struct doc *body = &x->docs[0][CATALOG_BODY], *json = &x->docs[0][CATALOG_BODY_JSON];
  char *a = NULL, *b = NULL;
  int r = 0;
  if (!doc_loaded(json) || !doc_loaded(body))
    return 0;
  if ((r = doc_get(body, path, &a)) > 0 && (r = doc_get(json, path, &b)) == 0)
    r = error_set(EINVAL,
                  "vm_pool %" PRId64 " body_json: no %s although the body has it: "
                  "body_json layout not understood, refusing to leave it stale",
                  x->p->vm_id, path);
  free(a);
  free(b);
  return r < 0 ? r : 0;
}

static int
vm_columns_set(struct ctx *x, const char *path, const char *value)
{
  int r = json_mirrors_body(x, path);
  for (int col = 0; col < CATALOG_NCOLUMNS && r == 0; col++)
    r = edit_set_if_present(x, 0, (enum catalog_column)col, path, value);
  return r;
}

/* parent/name in body and body_json: set, added (sorted) or (value NULL) removed. */
static int
vm_put(struct ctx *x, const char *parent, const char *name, const char *value)
{
  char path[256];
  snprintf(path, sizeof path, "%s/%s", parent, name);
  int r = json_mirrors_body(x, path);
  if (r == 0)
    r = edit_put(x, 0, CATALOG_BODY, parent, name, value);
  if (r == 0)
    r = edit_put(x, 0, CATALOG_BODY_JSON, parent, name, value);
  return r;
}

/* A datastore of the plan, parsed from its before-image. */
static int
plan_ds(struct plan *p, int64_t id, struct plan_ds *ds)
{
  size_t i = plan_find_row(p, CATALOG_DATASTORE, id, -1);
  char what[96];
  if (i == (size_t)-1)
    return error_set(EINVAL, "datastore %" PRId64 ": not loaded", id);
  return plan_ds_parse(p->before[i].value[CATALOG_BODY],
                       plan_row_what(&p->before[i], CATALOG_BODY, what, sizeof what), id, ds);
}

static bool
is_ceph(const struct plan_ds *ds)
{
  return ds->tm_mad && !strcasecmp(ds->tm_mad, "ceph");
}

/* SOURCE after a move from `from` to `to` (malloc'd), NULL when it does not change: a Ceph
 * SOURCE is POOL_NAME/IMAGE (the datastore driver's naming; the VM's clone is named after it,
 * SOURCE-VMID-DISKID, by tm/ceph), a path under the source's BASE_PATH follows BASE_PATH.  A
 * non-Ceph destination keeps the SOURCE of an image that stays where it is. */
static char *
source_after(const struct plan_ds *from, const struct plan_ds *to, const char *src,
             int64_t image_id, bool image_moves, bool *unknown)
{
  char *out = NULL;
  *unknown = false;
  if (!src || from->id == to->id)
    return NULL;
  if (is_ceph(to)) {
    const char *pool = plan_ds_attr(to, "POOL_NAME"), *slash = strchr(src, '/');
    if (!pool || !*pool)
      pool = "one"; /* datastore/ceph's default */
    if (src[0] != '/' && slash)
      (void)!asprintf(&out, "%s/%s", pool, slash + 1);
    else
      (void)!asprintf(&out, "%s/one-%" PRId64, pool, image_id);
  } else if (!image_moves)
    return NULL;
  else if (from->base_path && to->base_path
           && !strncmp(src, from->base_path, strlen(from->base_path))
           && src[strlen(from->base_path)] == '/')
    (void)!asprintf(&out, "%s%s", to->base_path, src + strlen(from->base_path));
  else if (is_ceph(from) && to->base_path) {
    const char *base = strrchr(src, '/');
    (void)!asprintf(&out, "%s/%s", to->base_path, base ? base + 1 : src);
  } else
    *unknown = true;
  if (out && !strcmp(out, src)) {
    free(out);
    out = NULL;
  }
  return out;
}

/* The DISK's values to_xml_short writes (VirtualMachineDisk::to_xml_short, 6.8). */
static bool
in_short_body(const char *name)
{
  static const char *const names[]
      = { "DATASTORE", "DATASTORE_ID", "IMAGE",        "IMAGE_ID",  "SIZE",
          "TYPE",      "CLONE",        "CLONE_TARGET", "LN_TARGET", "DISK_SNAPSHOT_TOTAL_SIZE" };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(names[i], name))
      return true;
  return false;
}

static int
disk_edits(struct ctx *x, struct plan_disk *dk, const char *tsys_new)
{
  struct plan *p = x->p;
  struct plan_ds from = { 0 }, to = { 0 };
  struct xmlbody *image = NULL;
  struct attr_change *ch = NULL;
  size_t n_ch = 0, img = (size_t)-1;
  char parent[128], path[192], num[32], *itype = NULL, what[96];
  int r;
  snprintf(parent, sizeof parent, "/VM/TEMPLATE/DISK[DISK_ID=%" PRId64 "]", dk->disk_id);
  if ((r = plan_ds(p, dk->src_datastore, &from)) < 0
      || (r = plan_ds(p, dk->dst_datastore, &to)) < 0)
    goto out;
  if (dk->image_id >= 0 && (img = plan_find_row(p, CATALOG_IMAGE, dk->image_id, -1)) != (size_t)-1
      && ((r = xmlbody_parse_lenient(
               p->before[img].value[CATALOG_BODY],
               plan_row_what(&p->before[img], CATALOG_BODY, what, sizeof what), &image))
              < 0
          || (r = xmlbody_get(image, "/IMAGE/TYPE", &itype)) < 0))
    goto out;
  struct disk_move m = {
    .vm = x->docs[0][CATALOG_BODY].xml,
    .disk_id = dk->disk_id,
    .is_volatile = dk->is_volatile,
    .cdrom_image = itype && atoi(itype) == 1, /* Image::ImageType CDROM */
    .image = image,
    .from = &from,
    .to = &to,
    .tsys_new = tsys_new,
  };
  if ((r = plan_disk_changes(p, &m, &ch, &n_ch)) < 0)
    goto out;
  for (size_t i = 0; i < n_ch && r == 0; i++) {
    r = vm_put(x, parent, ch[i].name, ch[i].new_value);
    snprintf(path, sizeof path, "%s/%s", parent, ch[i].name);
    if (r == 0 && in_short_body(ch[i].name)) /* short_body writes an absent value as "" */
      r = edit_set_if_present(x, 0, CATALOG_SHORT_BODY, path,
                              ch[i].new_value ? ch[i].new_value : "");
  }
  if (r < 0 || dk->is_volatile)
    goto out;

  /* SOURCE: named by the storage step, else the destination's naming. */
  bool unknown = false;
  char *src = dk->given_source
                  ? strdup(dk->given_source)
                  : source_after(&from, &to, dk->source, dk->image_id, dk->image_moves, &unknown);
  if (dk->given_source && !src) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  free(dk->new_source);
  dk->new_source = src;
  if (unknown
      && (r = plan_note(p,
                        "disk %" PRId64 ": SOURCE '%s' kept: ferry knows Ceph and path SOURCEs, "
                        "not datastore %" PRId64 " (%s)'s; the storage step must name the volume",
                        dk->disk_id, dk->source, to.id, to.name))
             < 0)
    goto out;
  if (src && (r = vm_put(x, parent, "SOURCE", src)) < 0)
    goto out;
  if (!dk->image_moves)
    goto out;

  if (img == (size_t)-1) {
    r = error_set(EINVAL, "image %" PRId64 ": not loaded", dk->image_id);
    goto out;
  }
  char *img_ds = NULL;
  if ((r = doc_get(&x->docs[img][CATALOG_BODY], "/IMAGE/DATASTORE_ID", &img_ds)) < 0)
    goto out;
  int64_t from_ds = img_ds ? strtoll(img_ds, NULL, 10) : -1;
  free(img_ds);
  snprintf(num, sizeof num, "%" PRId64, p->datastore);
  if ((r = edit_set_if_present(x, img, CATALOG_BODY, "/IMAGE/DATASTORE_ID", num)) < 0
      || (r = edit_set_if_present(x, img, CATALOG_BODY, "/IMAGE/DATASTORE", p->datastore_name)) < 0
      || (src && (r = edit_set_if_present(x, img, CATALOG_BODY, "/IMAGE/SOURCE", src)) < 0))
    goto out;
  /* An image's DISK_TYPE is its datastore's (RequestManagerAllocate: ds->get_disk_type()). */
  snprintf(num, sizeof num, "%d", to.disk_type);
  if (from.disk_type != to.disk_type
      && (r = edit_set_if_present(x, img, CATALOG_BODY, "/IMAGE/DISK_TYPE", num)) < 0)
    goto out;
  size_t srow = plan_find_row(p, CATALOG_DATASTORE, from_ds, -1),
         drow = plan_find_row(p, CATALOG_DATASTORE, p->datastore, -1);
  if (srow != (size_t)-1 && srow != drow
      && (r = edit_id_list(x, srow, "/DATASTORE/IMAGES", dk->image_id, false)) < 0)
    goto out;
  if (drow != (size_t)-1)
    r = edit_id_list(x, drow, "/DATASTORE/IMAGES", dk->image_id, true);
out:
  plan_attr_changes_free(ch, n_ch);
  free(itype);
  xmlbody_free(image);
  plan_ds_clear(&from);
  plan_ds_clear(&to);
  return r < 0 ? r : 0;
}

static int automatic_requirement_edits(struct ctx *x, const char *tsys_old, const char *tsys_new);

static int
vm_edits(struct ctx *x)
{
  struct plan *p = x->p;
  struct plan_ds sys = { 0 };
  char num[32], *tsys_old = NULL;
  const char *tsys_new = NULL;
  int r;
  /* TM_MAD_SYSTEM is set at the first deploy and never recomputed by oned
   * (VirtualMachine::check_tm_mad_disks), but AUTOMATIC_DS_REQUIREMENTS asks for it: it
   * follows the destination system datastore's driver. */
  if ((r = doc_get(&x->docs[0][CATALOG_BODY], "/VM/TEMPLATE/TM_MAD_SYSTEM", &tsys_old)) < 0
      || (r = plan_ds(p, p->system_datastore, &sys)) < 0)
    goto out;
  tsys_new = tsys_old && sys.tm_mad ? sys.tm_mad : tsys_old;
  if (tsys_old && tsys_new && strcmp(tsys_old, tsys_new) != 0
      && (r = vm_put(x, "/VM/TEMPLATE", "TM_MAD_SYSTEM", tsys_new)) < 0)
    goto out;
  for (size_t i = 0; i < p->n_disks; i++)
    if ((r = disk_edits(x, &p->disks[i], tsys_new)) < 0)
      goto out;
  /* The history table is authoritative; the VM body (and short_body, body_json) embed the
   * last record, which the scheduler reads: both must name the new system datastore. */
  snprintf(num, sizeof num, "%" PRId64, p->system_datastore);
  size_t h = plan_find_row(p, CATALOG_HISTORY, p->vm_id, -1);
  if (h != (size_t)-1) {
    if ((r = edit_set_if_present(x, h, CATALOG_BODY, "/HISTORY/DS_ID", num)) < 0)
      goto out;
    if ((r = vm_columns_set(x, "/VM/HISTORY_RECORDS/HISTORY/DS_ID", num)) < 0)
      goto out;
  }
  if ((r = json_mirrors_body(x, "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS")) < 0
      || (r = json_mirrors_body(x, "/VM/USER_TEMPLATE/SCHED_REQUIREMENTS")) < 0)
    goto out;
  for (int col = 0; col < CATALOG_NCOLUMNS; col++) {
    if ((r = edit_delete_if_present(x, 0, (enum catalog_column)col,
                                    "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS"))
            < 0
        || (r = edit_delete_if_present(x, 0, (enum catalog_column)col,
                                       "/VM/USER_TEMPLATE/SCHED_REQUIREMENTS"))
               < 0)
      goto out;
  }
  if (p->req.automatic_requirements && (r = automatic_requirement_edits(x, tsys_old, tsys_new)) < 0)
    goto out;
  r = plan_quota_edits(x);
out:
  free(tsys_old);
  plan_ds_clear(&sys);
  return r < 0 ? r : 0;
}

/* Copy of text with the number after every `KEY OP ` (spaces optional) replaced by `to`:
 * KEY CLUSTER_ID with OP "=", and "CLUSTERS/ID" with OP "@>".  NULL on ENOMEM. */
static char *
retarget_cluster_ids(const char *text, int64_t to)
{
  static const struct {
    const char *key, *op;
  } forms[] = { { "CLUSTER_ID", "=" }, { "\"CLUSTERS/ID\"", "@>" } };
  size_t cap = strlen(text) + 64, n = 0;
  char *out = malloc(cap);
  if (!out)
    return NULL;
  for (const char *p = text; *p;) {
    const char *after = NULL;
    for (size_t f = 0; f < sizeof forms / sizeof forms[0] && !after; f++) {
      size_t k = strlen(forms[f].key), o = strlen(forms[f].op);
      if (strncmp(p, forms[f].key, k) != 0)
        continue;
      const char *q = p + k;
      while (*q == ' ')
        q++;
      if (strncmp(q, forms[f].op, o) != 0)
        continue;
      q += o;
      while (*q == ' ')
        q++;
      if (*q >= '0' && *q <= '9')
        after = q;
    }
    size_t keep = after ? (size_t)(after - p) : 1;
    char num[24];
    int len = after ? snprintf(num, sizeof num, "%" PRId64, to) : 0;
    while (n + keep + (size_t)len + 1 > cap) {
      char *bigger = realloc(out, cap *= 2);
      if (!bigger) {
        free(out);
        return NULL;
      }
      out = bigger;
    }
    if (!after) {
      out[n++] = *p++;
      continue;
    }
    memcpy(out + n, p, keep);
    memcpy(out + n + keep, num, (size_t)len);
    n += keep + (size_t)len;
    for (p = after; *p >= '0' && *p <= '9'; p++)
      ;
  }
  out[n] = 0;
  return out;
}

/* Copy of text with TM_MAD = "from" turned into TM_MAD = "to" (NULL on ENOMEM). */
static char *
retarget_tm_mad(const char *text, const char *from, const char *to)
{
  char *pat = NULL, *out = NULL;
  if (asprintf(&pat, "TM_MAD = \"%s\"", from) < 0)
    return NULL;
  const char *at = strstr(text, pat);
  if (!at)
    out = strdup(text);
  else if (asprintf(&out, "%.*sTM_MAD = \"%s\"%s", (int)(at - text), text, to, at + strlen(pat))
           < 0)
    out = NULL;
  free(pat);
  return out;
}

static int
automatic_requirement_edits(struct ctx *x, const char *tsys_old, const char *tsys_new)
{
  static const char *const paths[]
      = { "/VM/TEMPLATE/AUTOMATIC_REQUIREMENTS", "/VM/TEMPLATE/AUTOMATIC_DS_REQUIREMENTS",
          "/VM/TEMPLATE/AUTOMATIC_NIC_REQUIREMENTS" };
  int r = 0;
  for (size_t i = 0; i < sizeof paths / sizeof paths[0] && r == 0; i++) {
    char *old = NULL;
    if ((r = doc_get(&x->docs[0][CATALOG_BODY], paths[i], &old)) <= 0)
      continue; /* absent (r == 0) or an error */
    char *now = retarget_cluster_ids(old, x->p->cluster);
    free(old);
    if (now && tsys_old && tsys_new && strcmp(tsys_old, tsys_new) != 0) {
      char *t = retarget_tm_mad(now, tsys_old, tsys_new);
      free(now);
      now = t;
    }
    if (!now)
      return error_set(ENOMEM, "VM %" PRId64 ": out of memory", x->p->vm_id);
    r = vm_columns_set(x, paths[i], now);
    free(now);
  }
  return r < 0 ? r : 0;
}

static void
clear_edits(struct plan *p)
{
  for (size_t i = 0; i < p->n_edits; i++) {
    free(p->edits[i].path);
    free(p->edits[i].old_value);
    free(p->edits[i].new_value);
  }
  free(p->edits);
  p->edits = NULL;
  p->n_edits = 0;
}

int
plan_compute(struct plan *p)
{
  struct ctx x = { .p = p };
  int r = 0;
  clear_edits(p);
  if (!(x.docs = calloc(p->n_rows, sizeof *x.docs)))
    return error_set(ENOMEM, "out of memory");
  for (size_t i = 0; i < p->n_rows && r == 0; i++)
    for (int col = 0; col < CATALOG_NCOLUMNS && r == 0; col++)
      r = doc_open(&x.docs[i][col], &p->before[i], (enum catalog_column)col);
  if (r == 0)
    r = vm_edits(&x);
  for (size_t i = 0; i < p->n_rows && r == 0; i++) {
    catalog_row_clear(&p->after[i]);
    if ((r = catalog_row_copy(&p->before[i], &p->after[i])) < 0)
      break;
    for (int col = 0; col < CATALOG_NCOLUMNS && r == 0; col++) {
      bool edited = false;
      for (size_t e = 0; e < p->n_edits; e++)
        edited |= p->edits[e].row == i && p->edits[e].column == (enum catalog_column)col;
      if (!edited)
        continue; /* untouched columns keep their exact bytes */
      char *text = doc_text(&x.docs[i][col]);
      if (!text)
        r = -EINVAL;
      else {
        free(p->after[i].value[col]);
        p->after[i].value[col] = text;
      }
    }
  }
  for (size_t i = 0; i < p->n_rows; i++)
    for (int col = 0; col < CATALOG_NCOLUMNS; col++)
      doc_close(&x.docs[i][col]);
  free(x.docs);
  if (r < 0)
    clear_edits(p);
  return r;
}

void
plan_clear_edits(struct plan *p)
{
  clear_edits(p);
}
