/* ferry: a plan's output (text, JSON) and its application: journal, switch, verification. */
#include "migrator/opennebula/plan.h"
#include "migrator/opennebula/plan-internal.h"
#include "migrator/opennebula/journal.h"
#include "migrator/opennebula/xmlbody.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- output ---- */

static const char *const op_names[] = { "set", "delete", "add", "remove", "insert" };

void
plan_print(const struct plan *p, FILE *f)
{
  char name[96];
  fprintf(f, "VM %" PRId64 " (%s), %s: disk(s)", p->vm_id, p->vm_name,
          plan_state_name(p->state, p->lcm_state));
  for (size_t i = 0; i < p->n_disks; i++)
    fprintf(f, " %" PRId64, p->disks[i].disk_id);
  fprintf(f,
          " -> cluster %" PRId64 " (%s), datastore %" PRId64 " (%s), system datastore %" PRId64
          " (%s)\n",
          p->cluster, p->cluster_name, p->datastore, p->datastore_name, p->system_datastore,
          p->system_datastore_name);
  for (size_t i = 0; i < p->n_notes; i++)
    fprintf(f, "note: %s\n", p->notes[i]);
  for (size_t i = 0; i < p->n_edits; i++) {
    const struct plan_edit *e = &p->edits[i];
    fprintf(f, "edit: %s %s: %s %s", catalog_row_name(&p->before[e->row], name, sizeof name),
            catalog_column_name(e->column), op_names[e->op], e->path);
    if (e->op == PLAN_SET)
      fprintf(f, " '%s' -> '%s'\n", e->old_value ? e->old_value : "", e->new_value);
    else if (e->op == PLAN_INSERT)
      fprintf(f, " '%s' (new)\n", e->new_value);
    else if (e->op == PLAN_DELETE)
      fprintf(f, " (was '%s')\n", e->old_value ? e->old_value : "");
    else
      fprintf(f, " %s\n", e->op == PLAN_ID_ADD ? e->new_value : e->old_value);
  }
}

void *
plan_edits_json(const struct plan *p)
{
  json_t *a = json_array();
  for (size_t i = 0; a && i < p->n_edits; i++) {
    const struct plan_edit *e = &p->edits[i];
    const struct catalog_row *row = &p->before[e->row];
    json_t *o
        = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s?, s:s?}", "table", catalog_table_name(row->kind),
                    "id", (json_int_t)row->id, "column", catalog_column_name(e->column), "op",
                    op_names[e->op], "path", e->path, "old", e->old_value, "new", e->new_value);
    if (o && row->kind == CATALOG_HISTORY)
      json_object_set_new(o, "seq", json_integer(row->seq));
    json_array_append_new(a, o);
  }
  return a;
}

/* ---- apply ---- */

/* Test hook: FERRY_TEST_CRASH_AFTER_JOURNAL=1 exits right after the journal is durable and
 * before the catalog transaction starts (a crash there must leave the catalog unchanged). */
static void
crash_after_journal(void)
{
  const char *v = getenv("FERRY_TEST_CRASH_AFTER_JOURNAL");
  if (v && strcmp(v, "1") == 0) {
    fprintf(stderr, "ferry: FERRY_TEST_CRASH_AFTER_JOURNAL: simulated crash\n");
    _exit(99);
  }
}

/* The served object's value at `path` (served "as" the row it came from). */
static int
served_check(struct xmlbody *x, const struct plan_edit *e, const char *path, char **msg,
             size_t *len)
{
  char *now = NULL;
  bool ok;
  int r;
  if (e->op == PLAN_ID_ADD || e->op == PLAN_ID_REMOVE) {
    char q[400];
    snprintf(q, sizeof q, "%s[.=%s]", path, e->op == PLAN_ID_ADD ? e->new_value : e->old_value);
    if ((r = xmlbody_count(x, q)) < 0)
      return r;
    ok = (r > 0) == (e->op == PLAN_ID_ADD);
  } else {
    if ((r = xmlbody_get(x, path, &now)) < 0)
      return r;
    ok = e->op == PLAN_DELETE ? !now : now && strcmp(now, e->new_value) == 0;
  }
  if (!ok) {
    char item[512];
    int n = snprintf(item, sizeof item, "%s%s %s %s", *len ? "; " : "", path,
                     e->op == PLAN_ID_REMOVE ? "still lists"
                     : e->op == PLAN_DELETE  ? "still holds"
                                             : "lacks",
                     e->op == PLAN_DELETE      ? (now ? now : "")
                     : e->op == PLAN_ID_REMOVE ? e->old_value
                                               : e->new_value);
    char *m = *msg && strstr(*msg, item + (*len ? 2 : 0)) ? NULL /* said already */
                                                          : realloc(*msg, *len + (size_t)n + 1);
    if (m) {
      memcpy(m + *len, item, (size_t)n + 1);
      *msg = m;
      *len += (size_t)n;
    }
  }
  free(now);
  return 0;
}

/* After the commit, read every edited object the way oned serves it (xmlrpc: one.vm.info with
 * every history record, one.image.info, one.datastore.info; SQL: the rows) and check each edit
 * is there: a write that oned does not see is not a move.  History edits are checked on the
 * served VM's record with the same SEQ (one.vm.info returns them all). */
static int
verify_served(struct plan *p)
{
  char *msg = NULL;
  size_t len = 0;
  int r = 0;
  for (size_t row = 0; row < p->n_rows && r == 0; row++) {
    const struct catalog_row *b = &p->before[row];
    bool edited = false;
    for (size_t i = 0; i < p->n_edits; i++)
      edited |= p->edits[i].row == row && p->edits[i].column == CATALOG_BODY;
    if (!edited
        || (b->kind != CATALOG_VM && b->kind != CATALOG_IMAGE && b->kind != CATALOG_DATASTORE
            && b->kind != CATALOG_HISTORY))
      continue;
    char *text = NULL, what[96];
    struct xmlbody *x = NULL;
    enum catalog_kind kind = b->kind == CATALOG_HISTORY ? CATALOG_VM : b->kind;
    snprintf(what, sizeof what, "%s %" PRId64 " as oned serves it", catalog_table_name(kind),
             b->id);
    if ((r = catalog_object_info(p->catalog, kind, b->id, &text)) < 0
        || (r = xmlbody_parse_lenient(text, what, &x)) < 0) {
      free(text);
      break;
    }
    int64_t seq = b->seq;
    if (b->kind == CATALOG_VM) { /* the embedded record is the table's last */
      size_t h = plan_find_row(p, CATALOG_HISTORY, p->vm_id, -1);
      seq = h != (size_t)-1 ? p->before[h].seq : -1;
    }
    for (size_t i = 0; i < p->n_edits && r == 0; i++) {
      const struct plan_edit *e = &p->edits[i];
      char path[320];
      const char *rest = NULL;
      if (e->row != row || e->column != CATALOG_BODY)
        continue;
      if (b->kind == CATALOG_HISTORY)
        rest = e->path + strlen("/HISTORY");
      else if (b->kind == CATALOG_VM && !strncmp(e->path, "/VM/HISTORY_RECORDS/HISTORY/", 28))
        rest = e->path + strlen("/VM/HISTORY_RECORDS/HISTORY");
      if (rest)
        snprintf(path, sizeof path, "/VM/HISTORY_RECORDS/HISTORY[SEQ=%" PRId64 "]%s", seq, rest);
      else
        snprintf(path, sizeof path, "%s", e->path);
      r = served_check(x, e, path, &msg, &len);
    }
    xmlbody_free(x);
    free(text);
  }
  if (r == 0 && msg)
    r = error_set(EIO,
                  "switch committed, but oned does not serve every edit: %s: check oned, and "
                  "roll back with the journal if needed",
                  msg);
  free(msg);
  return r;
}

int
plan_apply(struct plan *p, const char *journal_path)
{
  struct catalog_change *ch = calloc(p->n_rows ? p->n_rows : 1, sizeof *ch);
  size_t n = 0;
  int r;
  if (!ch)
    return error_set(ENOMEM, "out of memory");
  for (size_t i = 0; i < p->n_rows; i++)
    if (plan_row_touched(p, i)) {
      ch[n].expect = &p->before[i];
      ch[n].next = &p->after[i];
      n++;
    }
  /* Durability order: the journal (before- and after-images) is on disk, file and directory
   * fsynced, BEFORE the first write to the catalog; a crash at any later point can be undone. */
  if ((r = journal_create(journal_path, p)) < 0)
    goto out;
  crash_after_journal();
  if ((r = catalog_switch(p->catalog, ch, n)) < 0)
    goto out;
  if ((r = journal_mark(journal_path, "committed")) < 0)
    goto out;
  r = verify_served(p);
out:
  free(ch);
  return r;
}
