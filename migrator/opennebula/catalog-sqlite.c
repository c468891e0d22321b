/* ferry: catalog backend for oned's SQLite database (sqlite:PATH), oned stopped.
 * The switch runs in BEGIN IMMEDIATE: the write lock is taken before the rows are compared,
 * so nothing can slip in between the check and the writes. */
#include "migrator/opennebula/catalog-backend.h"
#include "common/error.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

static sqlite3 *
db_of(struct catalog *c)
{
  return c->priv;
}

static int
sq_error(struct catalog *c, const char *what)
{
  return error_set(EIO, "%s: %s: %s", c->uri, what, sqlite3_errmsg(db_of(c)));
}

static int
sq_open(struct catalog *c, const char *path, const struct catalog_options *o)
{
  sqlite3 *db = NULL;
  int flags = (o && o->read_only) ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  if (!*path)
    return error_set(EINVAL, "%s: missing path (sqlite:/path/to/one.db)", c->uri);
  /* Never create: a missing file is a typo, not a new catalog. */
  if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
    int r = error_set(ENOENT, "%s: cannot open: %s", c->uri,
                      db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return r;
  }
  sqlite3_busy_timeout(db, 5000);
  c->priv = db;
  return 0;
}

static int
sq_query(struct catalog *c, const char *sql, size_t ncols, struct catalog_result *res)
{
  sqlite3_stmt *st = NULL;
  int rc, r = 0;
  if (sqlite3_prepare_v2(db_of(c), sql, -1, &st, NULL) != SQLITE_OK)
    return sq_error(c, sql);
  if ((size_t)sqlite3_column_count(st) != ncols) {
    sqlite3_finalize(st);
    return error_set(EINVAL, "%s: %s: unexpected column count", c->uri, sql);
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if ((r = catalog_result_add_row(res)) < 0)
      break;
    for (size_t i = 0; i < ncols && r == 0; i++) {
      const char *v = (const char *)sqlite3_column_text(st, (int)i);
      r = catalog_result_set(res, res->nrows - 1, i, v,
                             v ? (size_t)sqlite3_column_bytes(st, (int)i) : 0);
    }
    if (r < 0)
      break;
  }
  if (r == 0 && rc != SQLITE_DONE)
    r = sq_error(c, sql);
  sqlite3_finalize(st);
  return r;
}

static int
sq_update(struct catalog *c, const char *table, const char *column, const char *value,
          const char *where)
{
  char sql[256];
  sqlite3_stmt *st = NULL;
  int r = 0;
  snprintf(sql, sizeof sql, "UPDATE %s SET %s = ?1 WHERE %s", table, column, where);
  if (sqlite3_prepare_v2(db_of(c), sql, -1, &st, NULL) != SQLITE_OK)
    return sq_error(c, sql);
  /* Bound as TEXT: the column keeps its storage class, so a dump stays byte-identical. */
  if (value)
    sqlite3_bind_text(st, 1, value, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 1);
  if (sqlite3_step(st) != SQLITE_DONE)
    r = sq_error(c, sql);
  else if (sqlite3_changes(db_of(c)) != 1)
    r = error_set(EIO, "%s: %s changed %d rows, expected 1", c->uri, sql,
                  sqlite3_changes(db_of(c)));
  sqlite3_finalize(st);
  return r;
}

static int
sq_exec(struct catalog *c, const char *sql)
{
  if (sqlite3_exec(db_of(c), sql, NULL, NULL, NULL) != SQLITE_OK)
    return sq_error(c, sql);
  return 0;
}

static int
sq_begin(struct catalog *c)
{
  return sq_exec(c, "BEGIN IMMEDIATE");
}

static int
sq_commit(struct catalog *c)
{
  return sq_exec(c, "COMMIT");
}

static int
sq_rollback(struct catalog *c)
{
  return sq_exec(c, "ROLLBACK");
}

static void
sq_close(struct catalog *c)
{
  sqlite3_close(db_of(c));
}

const struct catalog_backend catalog_sqlite_backend = {
  .prefix = "sqlite:",
  .transactional = true,
  .needs_oned_stopped = true,
  .open = sq_open,
  .query = sq_query,
  .update = sq_update,
  .begin = sq_begin,
  .commit = sq_commit,
  .rollback = sq_rollback,
  .close = sq_close,
};
