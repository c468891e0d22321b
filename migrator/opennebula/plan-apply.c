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

static const char *const op_names[] = { "set", "delete", "add", "remove" };

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

/* After the commit, read the VM the way oned serves it (one.vm.info on xmlrpc) and check
 * every edit of its body is there: a write that oned does not see is not a move. */
static int
verify_served(struct plan *p)
{
  char *body = NULL;
  struct xmlbody *x = NULL;
  int r = catalog_vm_info(p->catalog, p->vm_id, &body);
  if (r == 0)
    r = xmlbody_parse_lenient(body, "VM as served", &x);
  for (size_t i = 0; r == 0 && i < p->n_edits; i++) {
    const struct plan_edit *e = &p->edits[i];
    char *now = NULL;
    if (e->row != 0 || e->column != CATALOG_BODY)
      continue;
    if ((r = xmlbody_get(x, e->path, &now)) < 0)
      break;
    bool ok = e->op == PLAN_DELETE ? !now : now && strcmp(now, e->new_value) == 0;
    free(now);
    if (!ok)
      r = error_set(EIO,
                    "switch committed, but the VM as served lacks %s = %s: check oned, "
                    "and roll back with the journal if needed",
                    e->path, e->new_value ? e->new_value : "(deleted)");
  }
  xmlbody_free(x);
  free(body);
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
