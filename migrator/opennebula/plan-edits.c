/* ferry: computing a plan's edits from the rows' before-images.
 *
 * Pure: it reads plan.before, writes plan.after and plan.edits, and can be re-run (after
 * plan_set_disk_source).  An edit whose old value already equals the new one is not an edit,
 * which is what makes re-running a finished move a no-op.  body_json (6.10+) is edited with the
 * same paths over the JSON tree: the document is {"VM": {...}} (or the VM object itself), an
 * element repeated is an array, a leaf is a string (a number stays a number).
 */
#include "migrator/opennebula/plan.h"
#include "migrator/opennebula/plan-internal.h"
#include "migrator/opennebula/xmlbody.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* One editable column of one row: XML or JSON. */
struct doc {
  struct xmlbody *xml;
  json_t *json;
  size_t json_flags;
};

/* ---- JSON paths ---- */

static bool
json_text(json_t *v, char *buf, size_t len)
{
  if (json_is_string(v))
    snprintf(buf, len, "%s", json_string_value(v));
  else if (json_is_integer(v))
    snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
  else if (json_is_real(v))
    snprintf(buf, len, "%.17g", json_real_value(v));
  else
    return false;
  return true;
}

/* Walk "/VM/TEMPLATE/DISK[DISK_ID=1]/DATASTORE" down to the object holding the last name.
 * Returns 1 found, 0 absent, negative when ambiguous. */
static int
json_resolve(json_t *root, const char *path, json_t **holder, char *key, size_t keylen)
{
  char *copy = strdup(path), *save = NULL, *step, *next;
  json_t *cur = root;
  int r = 1;
  if (!copy)
    return error_set(ENOMEM, "out of memory");
  step = strtok_r(copy, "/", &save);
  /* The root may be {"VM": {...}} or the VM object itself. */
  if (step && !json_object_get(root, step))
    step = strtok_r(NULL, "/", &save);
  for (; step; step = next) {
    next = strtok_r(NULL, "/", &save);
    char *pred = strchr(step, '['), *pkey = NULL, *pval = NULL;
    if (pred) {
      *pred = '\0';
      pkey = pred + 1;
      char *eq = strchr(pkey, '=');
      char *close = strchr(pkey, ']');
      if (!eq || !close) {
        r = error_set(EINVAL, "body_json: bad path %s", path);
        break;
      }
      *eq = *close = '\0';
      pval = eq + 1;
    }
    if (!next) {
      *holder = cur;
      snprintf(key, keylen, "%s", step);
      r = json_object_get(cur, step) ? 1 : 0;
      break;
    }
    json_t *v = json_object_get(cur, step);
    if (!v) {
      r = 0;
      break;
    }
    if (json_is_array(v)) {
      json_t *match = NULL, *e;
      size_t i, n = 0;
      json_array_foreach(v, i, e)
      {
        char t[64];
        if (!pkey || (json_text(json_object_get(e, pkey), t, sizeof t) && !strcmp(t, pval))) {
          match = e;
          n++;
        }
      }
      if (n > 1) {
        r = error_set(EINVAL, "body_json: %s matches %zu nodes", path, n);
        break;
      }
      v = match;
    } else if (pkey) {
      char t[64];
      if (!json_text(json_object_get(v, pkey), t, sizeof t) || strcmp(t, pval))
        v = NULL;
    }
    if (!v || !json_is_object(v)) {
      r = 0;
      break;
    }
    cur = v;
  }
  free(copy);
  return r;
}

/* ---- docs ---- */

static int
doc_open(struct doc *d, const struct catalog_row *row, enum catalog_column col)
{
  char what[128], name[96];
  memset(d, 0, sizeof *d);
  snprintf(what, sizeof what, "%s %s", catalog_row_name(row, name, sizeof name),
           catalog_column_name(col));
  const char *text = row->value[col];
  if (!row->present[col] || !text)
    return 0;
  if (col != CATALOG_BODY_JSON)
    return xmlbody_parse(text, what, &d->xml);
  json_error_t err;
  if (!(d->json = json_loads(text, JSON_DECODE_ANY, &err)))
    return error_set(EINVAL, "%s: not JSON: %s", what, err.text);
  /* Keep oned's layout: use the first dump format that reproduces the column exactly. */
  static const size_t formats[]
      = { JSON_COMPACT,  0, JSON_COMPACT | JSON_ENSURE_ASCII, JSON_ENSURE_ASCII, JSON_INDENT(2),
          JSON_INDENT(4) };
  d->json_flags = JSON_COMPACT;
  for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
    char *again = json_dumps(d->json, formats[i] | JSON_ENCODE_ANY);
    bool same = again && strcmp(again, text) == 0;
    free(again);
    if (same) {
      d->json_flags = formats[i];
      break;
    }
  }
  return 0;
}

static void
doc_close(struct doc *d)
{
  xmlbody_free(d->xml);
  json_decref(d->json);
  memset(d, 0, sizeof *d);
}

static bool
doc_loaded(const struct doc *d)
{
  return d->xml || d->json;
}

static int
doc_get(struct doc *d, const char *path, char **value)
{
  *value = NULL;
  if (d->xml)
    return xmlbody_get(d->xml, path, value);
  json_t *holder;
  char key[64], t[64];
  int r = json_resolve(d->json, path, &holder, key, sizeof key);
  if (r <= 0)
    return r;
  json_t *v = json_object_get(holder, key);
  if (json_is_string(v)) /* any length, no buffer */
    *value = strdup(json_string_value(v));
  else if (json_text(v, t, sizeof t))
    *value = strdup(t);
  else
    return error_set(EINVAL, "body_json: %s is not a scalar", path);
  return *value ? 1 : error_set(ENOMEM, "out of memory");
}

static int
doc_set(struct doc *d, const char *path, const char *value)
{
  if (d->xml)
    return xmlbody_set(d->xml, path, value);
  json_t *holder;
  char key[64];
  int r = json_resolve(d->json, path, &holder, key, sizeof key);
  if (r <= 0)
    return r < 0 ? r : error_set(ENOENT, "body_json: no %s", path);
  char *end;
  long long n = strtoll(value, &end, 10);
  json_t *v = json_is_integer(json_object_get(holder, key)) && *value && !*end ? json_integer(n)
                                                                               : json_string(value);
  return json_object_set_new(holder, key, v) == 0 ? 0 : error_set(ENOMEM, "out of memory");
}

static int
doc_delete(struct doc *d, const char *path)
{
  if (d->xml)
    return xmlbody_delete(d->xml, path);
  json_t *holder;
  char key[64];
  int r = json_resolve(d->json, path, &holder, key, sizeof key);
  if (r <= 0)
    return r;
  return json_object_del(holder, key) == 0 ? 1 : 0;
}

static char *
doc_text(struct doc *d)
{
  if (d->xml)
    return xmlbody_serialize(d->xml);
  char *s = json_dumps(d->json, d->json_flags | JSON_ENCODE_ANY);
  if (!s)
    error_set(ENOMEM, "body_json: cannot serialise");
  return s;
}

/* ---- recording edits ---- */

struct ctx {
  struct plan *p;
  struct doc (*docs)[CATALOG_NCOLUMNS];
};

static int
add_edit(struct plan *p, size_t row, enum catalog_column col, enum plan_op op, const char *path,
         const char *old_value, const char *new_value)
{
  struct plan_edit *e = realloc(p->edits, (p->n_edits + 1) * sizeof *e);
  if (!e)
    return error_set(ENOMEM, "out of memory");
  p->edits = e;
  e = &p->edits[p->n_edits];
  memset(e, 0, sizeof *e);
  e->row = row;
  e->column = col;
  e->op = op;
  e->path = strdup(path);
  e->old_value = old_value ? strdup(old_value) : NULL;
  e->new_value = new_value ? strdup(new_value) : NULL;
  p->n_edits++;
  if (!e->path || (old_value && !e->old_value) || (new_value && !e->new_value))
    return error_set(ENOMEM, "out of memory");
  return 0;
}

/* Set path to value where the element exists ("where present"); no edit when equal. */
static int
set_if_present(struct ctx *x, size_t row, enum catalog_column col, const char *path,
               const char *value)
{
  struct doc *d = &x->docs[row][col];
  char *old = NULL;
  int r;
  if (!doc_loaded(d))
    return 0;
  if ((r = doc_get(d, path, &old)) <= 0)
    return r;
  if (strcmp(old, value) != 0) {
    if ((r = doc_set(d, path, value)) == 0)
      r = add_edit(x->p, row, col, PLAN_SET, path, old, value);
  } else
    r = 0;
  free(old);
  return r;
}

static int
delete_if_present(struct ctx *x, size_t row, enum catalog_column col, const char *path)
{
  struct doc *d = &x->docs[row][col];
  char *old = NULL;
  int r;
  if (!doc_loaded(d))
    return 0;
  if ((r = doc_get(d, path, &old)) <= 0)
    return r;
  if ((r = doc_delete(d, path)) >= 0)
    r = add_edit(x->p, row, col, PLAN_DELETE, path, old, NULL);
  free(old);
  return r;
}

static int
id_list_edit(struct ctx *x, size_t row, int64_t id, bool add)
{
  struct doc *d = &x->docs[row][CATALOG_BODY];
  const char *list = "/DATASTORE/IMAGES";
  char text[32];
  int r;
  snprintf(text, sizeof text, "%" PRId64, id);
  r = add ? xmlbody_id_add(d->xml, list, id) : xmlbody_id_remove(d->xml, list, id);
  if (r <= 0)
    return r;
  return add_edit(x->p, row, CATALOG_BODY, add ? PLAN_ID_ADD : PLAN_ID_REMOVE,
                  "/DATASTORE/IMAGES/ID", add ? NULL : text, add ? text : NULL);
}

static size_t
find_row(const struct plan *p, enum catalog_kind kind, int64_t id)
{
  for (size_t i = 0; i < p->n_rows; i++)
    if (p->before[i].kind == kind && p->before[i].id == id)
      return i;
  return (size_t)-1;
}

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
    r = set_if_present(x, 0, (enum catalog_column)col, path, value);
  return r;
}

static int
disk_edits(struct ctx *x, const struct plan_disk *dk)
{
  struct plan *p = x->p;
  char path[160], num[32];
  int r;
#define DISK_SET(field, value)                                                                     \
  do {                                                                                             \
    snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[DISK_ID=%" PRId64 "]/" field, dk->disk_id);     \
    if ((r = vm_columns_set(x, path, value)) < 0)                                                  \
      return r;                                                                                    \
  } while (0)
  DISK_SET("DATASTORE", p->datastore_name);
  snprintf(num, sizeof num, "%" PRId64, p->datastore);
  DISK_SET("DATASTORE_ID", num);
  snprintf(num, sizeof num, "%" PRId64, p->cluster);
  DISK_SET("CLUSTER_ID", num);
  if (dk->dst_tm_mad && dk->src_tm_mad && strcmp(dk->dst_tm_mad, dk->src_tm_mad) != 0)
    DISK_SET("TM_MAD", dk->dst_tm_mad);
  if (dk->new_source)
    DISK_SET("SOURCE", dk->new_source);
#undef DISK_SET
  if (!dk->image_moves)
    return 0;

  size_t img = find_row(p, CATALOG_IMAGE, dk->image_id);
  char *img_ds = NULL;
  if (img == (size_t)-1)
    return error_set(EINVAL, "image %" PRId64 ": not loaded", dk->image_id);
  if ((r = doc_get(&x->docs[img][CATALOG_BODY], "/IMAGE/DATASTORE_ID", &img_ds)) < 0)
    return r;
  int64_t from = img_ds ? strtoll(img_ds, NULL, 10) : -1;
  free(img_ds);
  snprintf(num, sizeof num, "%" PRId64, p->datastore);
  if ((r = set_if_present(x, img, CATALOG_BODY, "/IMAGE/DATASTORE_ID", num)) < 0
      || (r = set_if_present(x, img, CATALOG_BODY, "/IMAGE/DATASTORE", p->datastore_name)) < 0)
    return r;
  if (dk->new_source
      && (r = set_if_present(x, img, CATALOG_BODY, "/IMAGE/SOURCE", dk->new_source)) < 0)
    return r;
  size_t src = find_row(p, CATALOG_DATASTORE, from),
         dst = find_row(p, CATALOG_DATASTORE, p->datastore);
  if (src != (size_t)-1 && src != dst && (r = id_list_edit(x, src, dk->image_id, false)) < 0)
    return r;
  if (dst != (size_t)-1 && (r = id_list_edit(x, dst, dk->image_id, true)) < 0)
    return r;
  return 0;
}

static int automatic_requirement_edits(struct ctx *x);

static int
vm_edits(struct ctx *x)
{
  struct plan *p = x->p;
  char num[32];
  int r;
  for (size_t i = 0; i < p->n_disks; i++)
    if ((r = disk_edits(x, &p->disks[i])) < 0)
      return r;
  /* The history table is authoritative; the VM body (and short_body, body_json) embed the
   * last record, which the scheduler reads: both must name the new system datastore. */
  snprintf(num, sizeof num, "%" PRId64, p->system_datastore);
  size_t h = find_row(p, CATALOG_HISTORY, p->vm_id);
  if (h != (size_t)-1) {
    if ((r = set_if_present(x, h, CATALOG_BODY, "/HISTORY/DS_ID", num)) < 0)
      return r;
    if ((r = vm_columns_set(x, "/VM/HISTORY_RECORDS/HISTORY/DS_ID", num)) < 0)
      return r;
  }
  if ((r = json_mirrors_body(x, "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS")) < 0
      || (r = json_mirrors_body(x, "/VM/USER_TEMPLATE/SCHED_REQUIREMENTS")) < 0)
    return r;
  for (int col = 0; col < CATALOG_NCOLUMNS; col++) {
    if ((r = delete_if_present(x, 0, (enum catalog_column)col,
                               "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS"))
            < 0
        || (r = delete_if_present(x, 0, (enum catalog_column)col,
                                  "/VM/USER_TEMPLATE/SCHED_REQUIREMENTS"))
               < 0)
      return r;
  }
  return x->p->req.automatic_requirements ? automatic_requirement_edits(x) : 0;
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

static int
automatic_requirement_edits(struct ctx *x)
{
  static const char *const paths[]
      = { "/VM/TEMPLATE/AUTOMATIC_REQUIREMENTS", "/VM/TEMPLATE/AUTOMATIC_DS_REQUIREMENTS" };
  int r = 0;
  for (size_t i = 0; i < sizeof paths / sizeof paths[0] && r == 0; i++) {
    char *old = NULL;
    if ((r = doc_get(&x->docs[0][CATALOG_BODY], paths[i], &old)) <= 0)
      continue; /* absent (r == 0) or an error */
    char *now = retarget_cluster_ids(old, x->p->cluster);
    free(old);
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
