/* ferry: the editable columns of a plan's rows (XML bodies, 6.10's body_json) and the edit
 * records.  An edit whose old value already equals the new one is not recorded: that is what
 * makes re-running a finished move a no-op. */
#include "migrator/opennebula/plan-internal.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *
plan_row_what(const struct catalog_row *row, enum catalog_column col, char *buf, size_t len)
{
  char name[96];
  snprintf(buf, len, "%s %s", catalog_row_name(row, name, sizeof name), catalog_column_name(col));
  return buf;
}

int
doc_open(struct doc *d, const struct catalog_row *row, enum catalog_column col)
{
  char what[128];
  memset(d, 0, sizeof *d);
  plan_row_what(row, col, what, sizeof what);
  const char *text = row->value[col];
  if (!row->present[col] || !text)
    return 0;
  if (col != CATALOG_BODY_JSON)
    return xmlbody_parse(text, what, &d->xml);
  return jsonbody_parse(text, what, &d->json);
}

void
doc_close(struct doc *d)
{
  xmlbody_free(d->xml);
  jsonbody_free(d->json);
  memset(d, 0, sizeof *d);
}

bool
doc_loaded(const struct doc *d)
{
  return d->xml || d->json;
}

int
doc_get(struct doc *d, const char *path, char **value)
{
  *value = NULL;
  if (d->xml)
    return xmlbody_get(d->xml, path, value);
  if (d->json)
    return jsonbody_get(d->json, path, value);
  return 0;
}

static int
doc_set(struct doc *d, const char *path, const char *value)
{
  return d->xml ? xmlbody_set(d->xml, path, value) : jsonbody_set(d->json, path, value);
}

static int
doc_insert(struct doc *d, const char *parent, const char *name, const char *value)
{
  return d->xml ? xmlbody_insert_sorted(d->xml, parent, name, value)
                : jsonbody_insert_sorted(d->json, parent, name, value);
}

static int
doc_delete(struct doc *d, const char *path)
{
  return d->xml ? xmlbody_delete(d->xml, path) : jsonbody_delete(d->json, path);
}

char *
doc_text(struct doc *d)
{
  if (d->xml)
    return xmlbody_serialize(d->xml);
  char *s = strdup(jsonbody_text(d->json));
  if (!s)
    error_set(ENOMEM, "out of memory");
  return s;
}

size_t
plan_find_row(const struct plan *p, enum catalog_kind kind, int64_t id, int64_t seq)
{
  for (size_t i = 0; i < p->n_rows; i++)
    if (p->before[i].kind == kind && p->before[i].id == id
        && (kind != CATALOG_HISTORY || seq < 0 || p->before[i].seq == seq))
      return i;
  return (size_t)-1;
}

int
plan_add_edit(struct plan *p, size_t row, enum catalog_column col, enum plan_op op,
              const char *path, const char *old_value, const char *new_value)
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

int
edit_set_if_present(struct ctx *x, size_t row, enum catalog_column col, const char *path,
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
      r = plan_add_edit(x->p, row, col, PLAN_SET, path, old, value);
  } else
    r = 0;
  free(old);
  return r;
}

int
edit_delete_if_present(struct ctx *x, size_t row, enum catalog_column col, const char *path)
{
  struct doc *d = &x->docs[row][col];
  char *old = NULL;
  int r;
  if (!doc_loaded(d))
    return 0;
  if ((r = doc_get(d, path, &old)) <= 0)
    return r;
  if ((r = doc_delete(d, path)) >= 0)
    r = plan_add_edit(x->p, row, col, PLAN_DELETE, path, old, NULL);
  free(old);
  return r;
}

int
edit_put(struct ctx *x, size_t row, enum catalog_column col, const char *parent, const char *name,
         const char *value)
{
  struct doc *d = &x->docs[row][col];
  char path[256], *old = NULL;
  int r;
  if (!doc_loaded(d))
    return 0;
  snprintf(path, sizeof path, "%s/%s", parent, name);
  if (!value)
    return edit_delete_if_present(x, row, col, path);
  if ((r = doc_get(d, path, &old)) < 0)
    return r;
  if (r == 1) {
    free(old);
    return edit_set_if_present(x, row, col, path, value);
  }
  if ((r = doc_insert(d, parent, name, value)) < 0)
    return r;
  return plan_add_edit(x->p, row, col, PLAN_INSERT, path, NULL, value);
}

int
edit_id_list(struct ctx *x, size_t row, const char *list, int64_t id, bool add)
{
  struct doc *d = &x->docs[row][CATALOG_BODY];
  char text[32], path[128];
  int r;
  snprintf(text, sizeof text, "%" PRId64, id);
  r = add ? xmlbody_id_add(d->xml, list, id) : xmlbody_id_remove(d->xml, list, id);
  if (r <= 0)
    return r;
  snprintf(path, sizeof path, "%s/ID", list);
  return plan_add_edit(x->p, row, CATALOG_BODY, add ? PLAN_ID_ADD : PLAN_ID_REMOVE, path,
                       add ? NULL : text, add ? text : NULL);
}
