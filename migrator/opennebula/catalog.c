/* ferry: the OpenNebula catalog: backend dispatch, schema check, row images, the switch. */
#include "migrator/opennebula/catalog-backend.h"
#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_ONE_LOCK "/var/lock/one/one"
#define DEFAULT_ONE_ENDPOINT "http://localhost:2633/RPC2"

static const struct catalog_backend *const backends[] = {
  &catalog_sqlite_backend,
#ifdef HAVE_MARIADB
  &catalog_mysql_backend,
#endif
  &catalog_xmlrpc_backend,
};

static const char *const table_names[] = {
  [CATALOG_VM] = "vm_pool",
  [CATALOG_HISTORY] = "history",
  [CATALOG_IMAGE] = "image_pool",
  [CATALOG_DATASTORE] = "datastore_pool",
  [CATALOG_USER_QUOTAS] = "user_quotas",
  [CATALOG_GROUP_QUOTAS] = "group_quotas",
};
static const char *const key_names[] = {
  [CATALOG_VM] = "oid",
  [CATALOG_HISTORY] = "vid",
  [CATALOG_IMAGE] = "oid",
  [CATALOG_DATASTORE] = "oid",
  [CATALOG_USER_QUOTAS] = "user_oid",
  [CATALOG_GROUP_QUOTAS] = "group_oid",
};
static const char *const column_names[] = {
  [CATALOG_BODY] = "body",
  [CATALOG_SHORT_BODY] = "short_body",
  [CATALOG_BODY_JSON] = "body_json",
};

const char *
catalog_table_name(enum catalog_kind kind)
{
  return table_names[kind];
}

const char *
catalog_key_name(enum catalog_kind kind)
{
  return key_names[kind];
}

const char *
catalog_column_name(enum catalog_column col)
{
  return column_names[col];
}

/* ---- results ---- */

int
catalog_result_init(struct catalog_result *res, size_t ncols)
{
  memset(res, 0, sizeof *res);
  res->ncols = ncols;
  return 0;
}

int
catalog_result_add_row(struct catalog_result *res)
{
  char **p = realloc(res->cell, (res->nrows + 1) * res->ncols * sizeof *p);
  if (!p && res->ncols)
    return error_set(ENOMEM, "out of memory");
  res->cell = p;
  for (size_t i = 0; i < res->ncols; i++)
    res->cell[res->nrows * res->ncols + i] = NULL;
  res->nrows++;
  return 0;
}

int
catalog_result_set(struct catalog_result *res, size_t row, size_t col, const char *v, size_t len)
{
  char **slot = &res->cell[row * res->ncols + col];
  free(*slot);
  *slot = NULL;
  if (v && !(*slot = strndup(v, len)))
    return error_set(ENOMEM, "out of memory");
  return 0;
}

const char *
catalog_cell(const struct catalog_result *res, size_t row, size_t col)
{
  return res->cell[row * res->ncols + col];
}

void
catalog_result_free(struct catalog_result *res)
{
  for (size_t i = 0; i < res->nrows * res->ncols; i++)
    free(res->cell[i]);
  free(res->cell);
  memset(res, 0, sizeof *res);
}

int
catalog_query(struct catalog *c, const char *sql, size_t ncols, struct catalog_result *res)
{
  debug("catalog", "query: %s", sql);
  catalog_result_init(res, ncols);
  int r = c->be->query(c, sql, ncols, res);
  if (r < 0)
    catalog_result_free(res);
  return r;
}

/* ---- open: lock, schema ---- */

/* The endpoint onedb's OpenNebula::Client would use (src/oca/ruby/opennebula/client.rb). */
static char *
one_endpoint(const struct catalog_options *o)
{
  const char *env = getenv("ONE_XMLRPC"), *home = getenv("HOME");
  char path[4096], line[1024];
  if (o && o->one_endpoint)
    return strdup(o->one_endpoint);
  if (env && *env)
    return strdup(env);
  for (int i = 0; i < 2; i++) {
    if (i == 0 && !home)
      continue;
    snprintf(path, sizeof path, "%s", i == 0 ? home : "/var/lib/one");
    strncat(path, "/.one/one_endpoint", sizeof path - strlen(path) - 1);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    char *ok = fgets(line, sizeof line, f);
    fclose(f);
    if (ok) {
      line[strcspn(line, " \t\r\n")] = '\0';
      return strdup(line);
    }
  }
  return strdup(DEFAULT_ONE_ENDPOINT);
}

/* onedb's one_not_running: the lock file, then oned's XML-RPC endpoint. */
static int
check_oned_stopped(const struct catalog_options *o)
{
  const char *lock = o && o->one_lock ? o->one_lock : DEFAULT_ONE_LOCK;
  struct stat st;
  if (lstat(lock, &st) == 0)
    return error_set(EBUSY,
                     "oned lock %s exists: oned seems to be running; stop oned first (or, if it "
                     "crashed, check it is down and remove the stale lock)",
                     lock);
  if (errno != ENOENT)
    return error_set_errno(errno, "oned lock %s", lock);
  char *url = one_endpoint(o);
  if (!url)
    return error_set(ENOMEM, "out of memory");
  int r = 0;
  if (strcmp(url, "none") != 0) {
    int answers = catalog_xmlrpc_probe(url);
    if (answers < 0)
      r = error_prefix("cannot tell whether oned runs (pass --one-endpoint none to skip this "
                       "check)");
    else if (answers)
      r = error_set(EBUSY, "oned answers on %s: stop oned first (onedb refuses too)", url);
  }
  if (r == 0 && strcmp(url, "none") != 0)
    log_warning("oned looks stopped here (no lock %s, nothing answers on %s); with a remote "
                "MySQL or an HA setup oned must be stopped on every front-end: ferry cannot "
                "see the others",
                lock, url);
  free(url);
  return r;
}

bool
catalog_has_table(struct catalog *c, enum catalog_kind kind)
{
  struct catalog_result res;
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT COUNT(%s) AS n FROM %s WHERE 1 = 0", key_names[kind],
           table_names[kind]);
  if (catalog_query(c, sql, 1, &res) < 0) {
    error_clear();
    return false;
  }
  catalog_result_free(&res);
  return true;
}

static bool
has_column(struct catalog *c, const char *table, const char *column)
{
  struct catalog_result res;
  char sql[128];
  /* COUNT: never a NULL cell (a 7.x resched may be NULL, and oned's sqlquery cuts its answer
   * at one), and no row is read. */
  snprintf(sql, sizeof sql, "SELECT COUNT(%s) AS n FROM %s WHERE 1 = 0", column, table);
  if (catalog_query(c, sql, 1, &res) < 0) {
    error_clear();
    return false;
  }
  catalog_result_free(&res);
  return true;
}

static int
read_version(struct catalog *c)
{
  static const char *const tables[] = { "local_db_versioning", "db_versioning" };
  struct catalog_schema *s = &c->schema;
  char *first_error = NULL;
  for (size_t i = 0; i < 2; i++) {
    struct catalog_result res;
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT version FROM %s ORDER BY oid DESC LIMIT 1", tables[i]);
    if (catalog_query(c, sql, 1, &res) < 0) {
      if (!first_error)
        first_error = strdup(error_message());
      continue;
    }
    if (res.nrows == 1 && catalog_cell(&res, 0, 0))
      snprintf(s->version, sizeof s->version, "%s", catalog_cell(&res, 0, 0));
    catalog_result_free(&res);
    if (s->version[0]) {
      free(first_error);
      return 0;
    }
  }
  /* Both tables missing is "not OpenNebula"; anything else (auth, network) says itself. */
  int r;
  if (first_error && !strstr(first_error, "no such table") && !strstr(first_error, "doesn't exist")
      && !strstr(first_error, "SQL error"))
    r = error_set(EIO, "%s", first_error);
  else
    r = error_set(EINVAL,
                  "%s: no local_db_versioning/db_versioning version: not an OpenNebula "
                  "database?",
                  c->uri);
  free(first_error);
  return r;
}

static int
check_schema(struct catalog *c)
{
  struct catalog_schema *s = &c->schema;
  int r = read_version(c);
  if (r < 0)
    return r;
  if (sscanf(s->version, "%d.%d", &s->major, &s->minor) != 2)
    return error_set(EINVAL, "%s: cannot parse schema version '%s'", c->uri, s->version);
  bool known = (s->major == 5 && s->minor == 12) || (s->major == 6 && s->minor <= 8)
               || (s->major == 6 && s->minor == 10) || s->major == 7;
  if (!known)
    return error_set(ENOTSUP,
                     "%s: catalog schema version %s is not one ferry knows (5.12, 6.0-6.8, "
                     "6.10, 7.x)",
                     c->uri, s->version);
  s->body_json = has_column(c, "vm_pool", "body_json");
  s->resched = has_column(c, "vm_pool", "resched");
  bool want_json = s->major > 6 || (s->major == 6 && s->minor >= 10);
  if (want_json != s->body_json)
    return error_set(EINVAL, "%s: schema version %s but vm_pool %s a body_json column", c->uri,
                     s->version, s->body_json ? "has" : "lacks");
  if ((s->major >= 7) != s->resched)
    return error_set(EINVAL, "%s: schema version %s but vm_pool %s a resched column", c->uri,
                     s->version, s->resched ? "has" : "lacks");
  debug("catalog", "%s: schema %s body_json=%d resched=%d", c->uri, s->version, s->body_json,
        s->resched);
  return 0;
}

/* The URI for messages and journals: a password in it (mysql://user:pass@...) becomes "***". */
static char *
redact(const char *uri)
{
  const char *scheme = strstr(uri, "://"), *at, *colon;
  if (!scheme || !(at = strchr(scheme + 3, '@'))
      || !(colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3))))
    return strdup(uri);
  char *out = NULL;
  if (asprintf(&out, "%.*s:***%s", (int)(colon - uri), uri, at) < 0)
    return NULL;
  return out;
}

int
catalog_open(const char *uri, const struct catalog_options *opts, struct catalog **out)
{
  const struct catalog_backend *be = NULL;
  struct catalog *c;
  int r;

  *out = NULL;
  for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
    if (strncmp(uri, backends[i]->prefix, strlen(backends[i]->prefix)) == 0)
      be = backends[i];
  if (!be) {
#ifndef HAVE_MARIADB
    if (strncmp(uri, "mysql://", 8) == 0)
      return error_set(ENOTSUP, "%s: ferry was built without MariaDB support (libmariadb)", uri);
#endif
    return error_set(EINVAL,
                     "%s: unknown catalog URI (sqlite:PATH, mysql://user@host/db, "
                     "xmlrpc://host:port/RPC2)",
                     uri);
  }
  if (be->needs_oned_stopped && !(opts && opts->read_only) && (r = check_oned_stopped(opts)) < 0)
    return r;
  if (!(c = calloc(1, sizeof *c)) || !(c->uri = redact(uri))) {
    free(c);
    return error_set(ENOMEM, "out of memory");
  }
  c->be = be;
  if ((r = be->open(c, uri + strlen(be->prefix), opts)) < 0) {
    free(c->uri);
    free(c);
    return r;
  }
  if ((r = check_schema(c)) < 0) {
    catalog_close(c);
    return r;
  }
  *out = c;
  return 0;
}

void
catalog_close(struct catalog *c)
{
  if (!c)
    return;
  c->be->close(c);
  free(c->uri);
  free(c);
}

const struct catalog_schema *
catalog_schema(const struct catalog *c)
{
  return &c->schema;
}

const char *
catalog_uri(const struct catalog *c)
{
  return c->uri;
}

/* ---- row images ---- */

const char *
catalog_row_name(const struct catalog_row *row, char *buf, size_t len)
{
  if (row->kind == CATALOG_HISTORY)
    snprintf(buf, len, "history vid %" PRId64 " seq %" PRId64, row->id, row->seq);
  else
    snprintf(buf, len, "%s %s %" PRId64, table_names[row->kind], key_names[row->kind], row->id);
  return buf;
}

static void
row_where(const struct catalog_row *row, char *buf, size_t len)
{
  if (row->kind == CATALOG_HISTORY)
    snprintf(buf, len, "vid = %" PRId64 " AND seq = %" PRId64, row->id, row->seq);
  else
    snprintf(buf, len, "%s = %" PRId64, key_names[row->kind], row->id);
}

int
catalog_read_row(struct catalog *c, enum catalog_kind kind, int64_t id, int64_t seq,
                 struct catalog_row *row)
{
  struct catalog_result res;
  char sql[256], where[96], name[96];
  enum catalog_column cols[CATALOG_NCOLUMNS];
  size_t n = 0;
  int r;

  memset(row, 0, sizeof *row);
  row->kind = kind;
  row->id = id;
  row->seq = kind == CATALOG_HISTORY ? seq : -1;
  cols[n++] = CATALOG_BODY;
  if (kind == CATALOG_VM) {
    cols[n++] = CATALOG_SHORT_BODY;
    if (c->schema.body_json)
      cols[n++] = CATALOG_BODY_JSON;
  }
  row_where(row, where, sizeof where);
  int len = snprintf(sql, sizeof sql, "SELECT ");
  for (size_t i = 0; i < n; i++)
    len += snprintf(sql + len, sizeof sql - (size_t)len, "%s%s", i ? ", " : "",
                    column_names[cols[i]]);
  snprintf(sql + len, sizeof sql - (size_t)len, " FROM %s WHERE %s", table_names[kind], where);
  if ((r = catalog_query(c, sql, n, &res)) < 0)
    return r;
  if (res.nrows != 1) {
    catalog_result_free(&res);
    return error_set(ENOENT, "%s: no such row", catalog_row_name(row, name, sizeof name));
  }
  for (size_t i = 0; i < n; i++) {
    row->present[cols[i]] = true;
    row->value[cols[i]] = res.cell[i];
    res.cell[i] = NULL;
  }
  catalog_result_free(&res);
  return 0;
}

int
catalog_row_copy(const struct catalog_row *from, struct catalog_row *to)
{
  *to = *from;
  for (int i = 0; i < CATALOG_NCOLUMNS; i++)
    if (from->value[i] && !(to->value[i] = strdup(from->value[i]))) {
      while (--i >= 0)
        free(to->value[i]);
      return error_set(ENOMEM, "out of memory");
    }
  return 0;
}

void
catalog_row_clear(struct catalog_row *row)
{
  for (int i = 0; i < CATALOG_NCOLUMNS; i++)
    free(row->value[i]);
  memset(row, 0, sizeof *row);
}

static bool
same_text(const char *a, const char *b)
{
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool
catalog_column_equal(enum catalog_column col, const char *a, const char *b)
{
  if (same_text(a, b))
    return true;
  if (col != CATALOG_BODY_JSON || !a || !b)
    return false;
  /* MySQL 8 keeps a JSON column in a binary form and returns its own text of it. */
  json_t *ja = json_loads(a, JSON_DECODE_ANY, NULL), *jb = json_loads(b, JSON_DECODE_ANY, NULL);
  bool same = ja && jb && json_equal(ja, jb);
  json_decref(ja);
  json_decref(jb);
  return same;
}

bool
catalog_row_equal(const struct catalog_row *a, const struct catalog_row *b)
{
  for (int i = 0; i < CATALOG_NCOLUMNS; i++)
    if (a->present[i] && b->present[i]
        && !catalog_column_equal((enum catalog_column)i, a->value[i], b->value[i]))
      return false;
  return true;
}

/* ---- the switch ---- */

/* Test hook: FERRY_TEST_CRASH_BEFORE_COMMIT=1 kills the process after every row is written and
 * read back but before COMMIT, to prove a crash there leaves the catalog unchanged. */
static void
crash_hook(const char *name)
{
  const char *v = getenv(name);
  if (v && strcmp(v, "1") == 0) {
    fprintf(stderr, "ferry: %s: simulated crash\n", name);
    _exit(99);
  }
}

static int
write_row(struct catalog *c, const struct catalog_row *from, const struct catalog_row *to)
{
  char where[96];
  row_where(to, where, sizeof where);
  for (int i = 0; i < CATALOG_NCOLUMNS; i++) {
    if (!to->present[i] || same_text(from->value[i], to->value[i]))
      continue;
    int r = c->be->update(c, table_names[to->kind], column_names[i], to->value[i], where);
    if (r < 0)
      return r;
  }
  return 0;
}

/* Read the row back and compare with what we wrote (onedb's exit code lies; so may others). */
static int
verify_row(struct catalog *c, const struct catalog_row *want)
{
  struct catalog_row now;
  char name[96];
  int r = catalog_read_row(c, want->kind, want->id, want->seq, &now);
  if (r < 0)
    return r;
  bool same = catalog_row_equal(&now, want);
  catalog_row_clear(&now);
  if (!same)
    return error_set(EIO, "%s: read back differs from what was written",
                     catalog_row_name(want, name, sizeof name));
  return 0;
}

static int
check_expected(struct catalog *c, const struct catalog_change *ch, size_t n)
{
  char *list = NULL;
  size_t len = 0;
  int r = 0;
  for (size_t i = 0; i < n; i++) {
    struct catalog_row now;
    char name[96];
    if ((r = catalog_read_row(c, ch[i].expect->kind, ch[i].expect->id, ch[i].expect->seq, &now))
        < 0)
      goto out;
    for (int col = 0; col < CATALOG_NCOLUMNS; col++) {
      if (!ch[i].expect->present[col]
          || catalog_column_equal((enum catalog_column)col, now.value[col],
                                  ch[i].expect->value[col]))
        continue;
      catalog_row_name(&now, name, sizeof name);
      size_t add = strlen(name) + strlen(column_names[col]) + 8;
      char *p = realloc(list, len + add);
      if (!p) {
        catalog_row_clear(&now);
        r = error_set(ENOMEM, "out of memory");
        goto out;
      }
      list = p;
      len += (size_t)snprintf(list + len, add, "%s%s (%s)", len ? ", " : "", name,
                              column_names[col]);
    }
    catalog_row_clear(&now);
  }
  if (list)
    r = error_set(ESTALE, "rows differ from the expected images: %s", list);
out:
  free(list);
  return r;
}

/* Every value the switch will write must be one the backend can carry: refused before the
 * first write, never halfway. */
static int
check_values(struct catalog *c, const struct catalog_change *ch, size_t n)
{
  if (!c->be->check_value)
    return 0;
  for (size_t i = 0; i < n; i++)
    for (int col = 0; col < CATALOG_NCOLUMNS; col++) {
      const struct catalog_row *to = ch[i].next;
      int r;
      if (!to->present[col] || same_text(ch[i].expect->value[col], to->value[col]))
        continue;
      if ((r = c->be->check_value(c, table_names[to->kind], column_names[col], to->value[col]))
          < 0) {
        char name[96];
        return error_prefix("%s %s: nothing written", catalog_row_name(to, name, sizeof name),
                            column_names[col]);
      }
    }
  return 0;
}

/* Put one row back to `want`, writing only the columns that differ now (a failed write may
 * have landed or not).  Returns how many columns it wrote once the row reads back as `want`. */
static int
put_back(struct catalog *c, const struct catalog_row *want)
{
  struct catalog_row now;
  char where[96];
  int r = catalog_read_row(c, want->kind, want->id, want->seq, &now), n = 0;
  if (r < 0)
    return r;
  row_where(want, where, sizeof where);
  for (int i = 0; i < CATALOG_NCOLUMNS && r == 0; i++)
    if (want->present[i]
        && !catalog_column_equal((enum catalog_column)i, now.value[i], want->value[i])) {
      r = c->be->update(c, table_names[want->kind], column_names[i], want->value[i], where);
      n++;
    }
  catalog_row_clear(&now);
  if (r == 0)
    r = verify_row(c, want);
  return r < 0 ? r : n;
}

int
catalog_switch(struct catalog *c, const struct catalog_change *ch, size_t n)
{
  const bool tx = c->be->transactional;
  size_t written = 0;
  int r;

  if ((r = check_values(c, ch, n)) < 0)
    return error_prefix("%s", c->uri);
  /* BEGIN first, so the comparison and the writes see one snapshot under the write lock. */
  if (tx && (r = c->be->begin(c)) < 0)
    return r;
  if ((r = check_expected(c, ch, n)) < 0)
    goto fail;
  for (; written < n; written++) {
    if ((r = write_row(c, ch[written].expect, ch[written].next)) < 0
        || (r = verify_row(c, ch[written].next)) < 0) {
      if (!tx)
        written++; /* a partial write may have landed: include it in the undo below */
      goto fail;
    }
  }
  crash_hook("FERRY_TEST_CRASH_BEFORE_COMMIT");
  if (tx && (r = c->be->commit(c)) < 0)
    goto fail;
  return 0;

fail:
  if (tx) {
    error_prefix("%s", c->uri);
    c->be->rollback(c);
    return r;
  }
  /* No transaction: put back, newest first, what was written; then say exactly what holds. */
  error_prefix("%s", c->uri);
  int saved = r < 0 ? -r : EIO;
  char *msg = strdup(error_message()), *left = NULL;
  size_t undone = 0, left_len = 0;
  while (written-- > 0) {
    char name[96];
    int put = put_back(c, ch[written].expect);
    undone += put > 0;
    if (put >= 0)
      continue;
    catalog_row_name(ch[written].expect, name, sizeof name);
    char *p = realloc(left, left_len + strlen(name) + 3);
    if (p) {
      left = p;
      left_len += (size_t)sprintf(left + left_len, "%s%s", left_len ? ", " : "", name);
    }
    error_clear();
  }
  if (left)
    r = error_set(EIO,
                  "%s; and these rows could not be put back: %s: run `ferry migrate --rollback` "
                  "with the journal",
                  msg ? msg : "", left);
  else if (undone)
    r = error_set(saved, "%s; the %zu row(s) changed were put back: the catalog is as before",
                  msg ? msg : "switch failed", undone);
  else
    r = error_set(saved, "%s; no row was changed: the catalog is as before",
                  msg ? msg : "switch failed");
  free(msg);
  free(left);
  return r;
}

/* ---- oned's API (xmlrpc only) ---- */

int
catalog_object_info(struct catalog *c, enum catalog_kind kind, int64_t id, char **xml)
{
  struct catalog_row row;
  *xml = NULL;
  if (c->be->object_info)
    return c->be->object_info(c, kind, id, xml);
  int r = catalog_read_row(c, kind, id, -1, &row);
  if (r < 0)
    return r;
  *xml = row.value[CATALOG_BODY];
  row.value[CATALOG_BODY] = NULL;
  catalog_row_clear(&row);
  return *xml ? 0 : error_set(ENOENT, "%s %" PRId64 ": empty body", table_names[kind], id);
}

int
catalog_vm_info(struct catalog *c, int64_t vm, char **body)
{
  return catalog_object_info(c, CATALOG_VM, vm, body);
}

int
catalog_vm_action(struct catalog *c, const char *action, int64_t vm)
{
  if (!c->be->vm_action)
    return error_set(ENOTSUP, "%s: VM actions need a running oned (xmlrpc:// catalog)", c->uri);
  return c->be->vm_action(c, action, vm);
}

int
catalog_oned_config(struct catalog *c, char **xml)
{
  *xml = NULL;
  if (!c->be->oned_config)
    return error_set(ENOTSUP, "%s: oned's configuration needs a running oned", c->uri);
  return c->be->oned_config(c, xml);
}
