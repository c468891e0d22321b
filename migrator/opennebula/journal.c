/* ferry: the move journal (see journal.h). */
#include "migrator/opennebula/journal.h"
#include "migrator/opennebula/plan.h"
#include "common/error.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define JOURNAL_VERSION 1

static const struct {
  const char *name;
  enum catalog_kind kind;
} kinds[] = {
  { "vm_pool", CATALOG_VM },
  { "history", CATALOG_HISTORY },
  { "image_pool", CATALOG_IMAGE },
  { "datastore_pool", CATALOG_DATASTORE },
  { "user_quotas", CATALOG_USER_QUOTAS },
  { "group_quotas", CATALOG_GROUP_QUOTAS },
};

static json_t *
image_json(const struct catalog_row *row)
{
  json_t *o = json_object();
  for (int c = 0; o && c < CATALOG_NCOLUMNS; c++)
    if (row->present[c])
      json_object_set_new(o, catalog_column_name((enum catalog_column)c),
                          row->value[c] ? json_string(row->value[c]) : json_null());
  return o;
}

/* Write `text` to `path` and fsync it; `excl` refuses an existing file. */
static int
write_durably(const char *path, const char *text, bool excl)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), 0600);
  if (fd < 0)
    return error_set_errno(errno, "journal %s", path);
  size_t len = strlen(text), done = 0;
  while (done < len) {
    ssize_t n = write(fd, text + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      return error_set_errno(e, "journal %s: write", path);
    }
    done += (size_t)n;
  }
  if (fsync(fd) < 0) {
    int e = errno;
    close(fd);
    return error_set_errno(e, "journal %s: fsync", path);
  }
  if (close(fd) < 0)
    return error_set_errno(errno, "journal %s: close", path);
  return 0;
}

static int
dump(json_t *j, const char *path, bool create)
{
  char *text = json_dumps(j, JSON_INDENT(2));
  int r;
  if (!text)
    return error_set(ENOMEM, "journal %s: cannot serialise", path);
  size_t len = strlen(text);
  char *withnl = realloc(text, len + 2);
  if (!withnl) {
    free(text);
    return error_set(ENOMEM, "out of memory");
  }
  strcpy(withnl + len, "\n");
  if (create)
    r = write_durably(path, withnl, true);
  else {
    /* Atomic replace: a crash leaves the old or the new journal, never a torn one. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    r = write_durably(tmp, withnl, false);
    if (r == 0 && rename(tmp, path) < 0)
      r = error_set_errno(errno, "journal %s: rename", path);
  }
  free(withnl);
  if (r == 0)
    r = fsync_parent_dir(path);
  return r;
}

int
journal_create(const char *path, const struct plan *p)
{
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);

  json_t *disks = json_array(), *rows = json_array();
  for (size_t i = 0; i < p->n_disks; i++)
    json_array_append_new(disks, json_integer(p->disks[i].disk_id));
  for (size_t i = 0; i < p->n_rows; i++) {
    if (!plan_row_touched(p, i))
      continue;
    const struct catalog_row *b = &p->before[i];
    json_t *o
        = json_pack("{s:s, s:I, s:o, s:o}", "table", catalog_table_name(b->kind), "id",
                    (json_int_t)b->id, "before", image_json(b), "after", image_json(&p->after[i]));
    if (o && b->kind == CATALOG_HISTORY)
      json_object_set_new(o, "seq", json_integer(b->seq));
    json_array_append_new(rows, o);
  }
  json_t *j = json_pack(
      "{s:i, s:s, s:s, s:s, s:s, s:I, s:o, s:I, s:I, s:I, s:o, s:o}", "ferry_journal",
      JOURNAL_VERSION, "state", "prepared", "created", stamp, "catalog", catalog_uri(p->catalog),
      "schema", catalog_schema(p->catalog)->version, "vm", (json_int_t)p->vm_id, "disks", disks,
      "cluster", (json_int_t)p->cluster, "datastore", (json_int_t)p->datastore, "system_datastore",
      (json_int_t)p->system_datastore, "rows", rows, "edits", (json_t *)plan_edits_json(p));
  if (!j)
    return error_set(ENOMEM, "journal %s: out of memory", path);
  int r = dump(j, path, true);
  json_decref(j);
  return r;
}

static int
load(const char *path, json_t **out)
{
  json_error_t err;
  json_t *j = json_load_file(path, 0, &err);
  *out = NULL;
  if (!j)
    return error_set(EINVAL, "journal %s: %s (line %d)", path, err.text, err.line);
  json_t *v = json_object_get(j, "ferry_journal");
  if (!json_is_integer(v) || json_integer_value(v) != JOURNAL_VERSION
      || !json_is_array(json_object_get(j, "rows"))) {
    json_decref(j);
    return error_set(EINVAL, "journal %s: not a ferry journal (version %d)", path, JOURNAL_VERSION);
  }
  *out = j;
  return 0;
}

int
journal_mark(const char *path, const char *state)
{
  json_t *j;
  int r = load(path, &j);
  if (r < 0)
    return r;
  json_object_set_new(j, "state", json_string(state));
  r = dump(j, path, false);
  json_decref(j);
  return r;
}

char *
journal_default_path(int64_t vm_id)
{
  const char *state = getenv("FERRY_STATE_DIR");
  char dir[4096], *path = NULL, stamp[32];
  if (!state || !*state)
    state = "/var/lib/ferry";
  snprintf(dir, sizeof dir, "%s/journal", state);
  if ((mkdir(state, 0700) < 0 && errno != EEXIST) || (mkdir(dir, 0700) < 0 && errno != EEXIST)) {
    error_set_errno(errno, "state directory %s", dir);
    return NULL;
  }
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
  if (asprintf(&path, "%s/vm-%" PRId64 "-%s.%03ldZ.json", dir, vm_id, stamp, ts.tv_nsec / 1000000)
      < 0) {
    error_set(ENOMEM, "out of memory");
    return NULL;
  }
  return path;
}

int
journal_catalog_uri(const char *path, char **uri)
{
  json_t *j;
  int r = load(path, &j);
  if (r < 0)
    return r;
  const char *s = json_string_value(json_object_get(j, "catalog"));
  if (!s)
    r = error_set(EINVAL, "journal %s: no catalog URI", path);
  else if (!(*uri = strdup(s)))
    r = error_set(ENOMEM, "out of memory");
  json_decref(j);
  return r;
}

/* One journal row into two row images. */
static int
parse_row(const char *path, json_t *o, struct catalog_row *before, struct catalog_row *after)
{
  const char *table = json_string_value(json_object_get(o, "table"));
  json_t *id = json_object_get(o, "id"), *seq = json_object_get(o, "seq");
  json_t *imgs[2] = { json_object_get(o, "before"), json_object_get(o, "after") };
  struct catalog_row *rows[2] = { before, after };
  size_t k;
  memset(before, 0, sizeof *before);
  memset(after, 0, sizeof *after);
  for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
    if (table && strcmp(table, kinds[k].name) == 0)
      break;
  if (k == sizeof kinds / sizeof kinds[0] || !json_is_integer(id) || !json_is_object(imgs[0])
      || !json_is_object(imgs[1]))
    return error_set(EINVAL, "journal %s: malformed row", path);
  for (int i = 0; i < 2; i++) {
    rows[i]->kind = kinds[k].kind;
    rows[i]->id = json_integer_value(id);
    rows[i]->seq = kinds[k].kind == CATALOG_HISTORY ? json_integer_value(seq) : -1;
    for (int c = 0; c < CATALOG_NCOLUMNS; c++) {
      json_t *v = json_object_get(imgs[i], catalog_column_name((enum catalog_column)c));
      if (!v)
        continue;
      if (!json_is_string(v) && !json_is_null(v))
        return error_set(EINVAL, "journal %s: malformed row image", path);
      rows[i]->present[c] = true;
      if (json_is_string(v) && !(rows[i]->value[c] = strdup(json_string_value(v))))
        return error_set(ENOMEM, "out of memory");
    }
  }
  return 0;
}

int
journal_rollback(struct catalog *c, const char *path, FILE *out)
{
  json_t *j, *rows;
  struct catalog_row *before = NULL, *after = NULL;
  struct catalog_change *ch = NULL;
  size_t n = 0, n_ch = 0, restored_already = 0;
  char *differ = NULL;
  size_t differ_len = 0;
  int r = load(path, &j);
  if (r < 0)
    return r;
  rows = json_object_get(j, "rows");
  n = json_array_size(rows);
  before = calloc(n ? n : 1, sizeof *before);
  after = calloc(n ? n : 1, sizeof *after);
  ch = calloc(n ? n : 1, sizeof *ch);
  if (!before || !after || !ch) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    struct catalog_row now;
    char name[96];
    if ((r = parse_row(path, json_array_get(rows, i), &before[i], &after[i])) < 0)
      goto out;
    if ((r = catalog_read_row(c, before[i].kind, before[i].id, before[i].seq, &now)) < 0) {
      error_prefix("journal %s does not match the catalog", path);
      goto out;
    }
    if (catalog_row_equal(&now, &after[i])) {
      ch[n_ch].expect = &after[i];
      ch[n_ch].next = &before[i];
      n_ch++;
    } else if (catalog_row_equal(&now, &before[i]))
      restored_already++;
    else {
      /* Neither image: someone changed the row after the switch; never overwrite that. */
      catalog_row_name(&now, name, sizeof name);
      size_t add = strlen(name) + 3;
      char *p = realloc(differ, differ_len + add);
      if (!p) {
        catalog_row_clear(&now);
        r = error_set(ENOMEM, "out of memory");
        goto out;
      }
      differ = p;
      differ_len
          += (size_t)snprintf(differ + differ_len, add, "%s%s", differ_len ? ", " : "", name);
    }
    catalog_row_clear(&now);
  }
  if (differ) {
    r = error_set(ESTALE,
                  "journal %s does not match the catalog: these rows hold neither the "
                  "journal's after- nor its before-image: %s; nothing restored",
                  path, differ);
    goto out;
  }
  if (n_ch == 0) {
    fprintf(out, "nothing to roll back: the %zu row(s) of %s already hold their before-images\n",
            restored_already, path);
    r = 0;
    goto out;
  }
  if ((r = catalog_switch(c, ch, n_ch)) < 0)
    goto out;
  fprintf(out, "rolled back %zu row(s) from %s\n", n_ch, path);
  r = journal_mark(path, "rolled-back");
out:
  for (size_t i = 0; i < n && before && after; i++) {
    catalog_row_clear(&before[i]);
    catalog_row_clear(&after[i]);
  }
  free(before);
  free(after);
  free(ch);
  free(differ);
  json_decref(j);
  return r;
}
