/* ferry: catalog backend for MariaDB/MySQL (libmariadb), oned stopped.
 *
 *   mysql://user[:password]@host[:port]/db
 *   mysql://user[:password]@localhost/db?socket=/run/mysqld/mysqld.sock
 * (user and password may be %-encoded).  The session runs SERIALIZABLE, so the rows compared
 * at the start of the switch are share-locked until COMMIT; the tables must be InnoDB (a
 * MyISAM table would silently ignore the transaction, so it is refused).
 */
#include "migrator/opennebula/catalog-backend.h"
#include "common/error.h"

#include <ctype.h>
#include <errno.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static MYSQL *
db_of(struct catalog *c)
{
  return c->priv;
}

static int
my_error(struct catalog *c, const char *what)
{
  return error_set(EIO, "%s: %s: %s", c->uri, what, mysql_error(db_of(c)));
}

/* %XX decoding in place. */
static void
unescape(char *s)
{
  char *w = s;
  for (; *s; s++) {
    if (s[0] == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
      char hex[3] = { s[1], s[2], 0 };
      *w++ = (char)strtol(hex, NULL, 16);
      s += 2;
    } else
      *w++ = *s;
  }
  *w = '\0';
}

static int
my_exec(struct catalog *c, const char *sql)
{
  if (mysql_query(db_of(c), sql) != 0)
    return my_error(c, sql);
  return 0;
}

static int
check_engines(struct catalog *c)
{
  struct catalog_result res;
  catalog_result_init(&res, 2);
  int r = c->be->query(c,
                       "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE "
                       "TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('vm_pool', 'history', "
                       "'image_pool', 'datastore_pool')",
                       2, &res);
  if (r < 0) {
    catalog_result_free(&res);
    return r;
  }
  for (size_t i = 0; i < res.nrows && r == 0; i++) {
    const char *engine = catalog_cell(&res, i, 1);
    if (!engine || strcasecmp(engine, "InnoDB") != 0)
      r = error_set(ENOTSUP, "%s: table %s uses engine %s, which has no transactions", c->uri,
                    catalog_cell(&res, i, 0), engine ? engine : "(none)");
  }
  catalog_result_free(&res);
  return r;
}

static int
my_open(struct catalog *c, const char *rest, const struct catalog_options *o)
{
  char *s = strdup(rest), *user, *pass = NULL, *host, *port = NULL, *db, *query, *socket = NULL;
  unsigned port_num = 0;
  int r = 0;
  (void)o;
  if (!s)
    return error_set(ENOMEM, "out of memory");
  char *at = strrchr(s, '@');
  if (!at || !(db = strchr(at, '/')) || !db[1]) {
    r = error_set(EINVAL, "%s: expected mysql://user[:pass]@host[:port]/db[?socket=PATH]", c->uri);
    goto out;
  }
  *at = '\0';
  user = s;
  if ((pass = strchr(user, ':')))
    *pass++ = '\0';
  host = at + 1;
  *db++ = '\0';
  if ((query = strchr(db, '?'))) {
    *query++ = '\0';
    if (strncmp(query, "socket=", 7) != 0 || !query[7]) {
      r = error_set(EINVAL, "%s: unknown parameter '%s' (only socket=PATH)", c->uri, query);
      goto out;
    }
    socket = query + 7;
  }
  if ((port = strchr(host, ':'))) {
    *port++ = '\0';
    char *end;
    long v = strtol(port, &end, 10);
    if (*end || v <= 0 || v > 65535) {
      r = error_set(EINVAL, "%s: bad port '%s'", c->uri, port);
      goto out;
    }
    port_num = (unsigned)v;
  }
  unescape(user);
  if (pass)
    unescape(pass);
  if (!pass)
    pass = getenv("FERRY_MYSQL_PASSWORD");
  MYSQL *m = mysql_init(NULL);
  if (!m) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  c->priv = m;
  /* CLIENT_FOUND_ROWS: affected rows = matched rows, so "changed 1 row" checks hold. */
  if (!mysql_real_connect(m, *host ? host : "localhost", user, pass, db, port_num, socket,
                          CLIENT_FOUND_ROWS)) {
    r = error_set(EIO, "%s: cannot connect: %s", c->uri, mysql_error(m));
    mysql_close(m);
    c->priv = NULL;
    goto out;
  }
  if ((r = my_exec(c, "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")) < 0
      || (r = my_exec(c, "SET autocommit = 1")) < 0 || (r = check_engines(c)) < 0) {
    mysql_close(m);
    c->priv = NULL;
  }
out:
  free(s);
  return r;
}

static int
my_query(struct catalog *c, const char *sql, size_t ncols, struct catalog_result *res)
{
  if (mysql_query(db_of(c), sql) != 0)
    return my_error(c, sql);
  MYSQL_RES *mr = mysql_store_result(db_of(c));
  if (!mr)
    return my_error(c, sql);
  int r = 0;
  if (mysql_num_fields(mr) != ncols)
    r = error_set(EINVAL, "%s: %s: unexpected column count", c->uri, sql);
  MYSQL_ROW row;
  while (r == 0 && (row = mysql_fetch_row(mr))) {
    unsigned long *len = mysql_fetch_lengths(mr);
    if ((r = catalog_result_add_row(res)) < 0)
      break;
    for (size_t i = 0; i < ncols && r == 0; i++)
      r = catalog_result_set(res, res->nrows - 1, i, row[i], row[i] ? len[i] : 0);
  }
  mysql_free_result(mr);
  return r;
}

static int
my_update(struct catalog *c, const char *table, const char *column, const char *value,
          const char *where)
{
  size_t len = value ? strlen(value) : 0;
  char *sql = malloc(2 * len + 256), *p;
  int r = 0;
  if (!sql)
    return error_set(ENOMEM, "out of memory");
  p = sql + sprintf(sql, "UPDATE %s SET %s = ", table, column);
  if (value) {
    *p++ = '\'';
    p += mysql_real_escape_string(db_of(c), p, value, len);
    *p++ = '\'';
  } else
    p += sprintf(p, "NULL");
  sprintf(p, " WHERE %s", where);
  if (mysql_real_query(db_of(c), sql, (unsigned long)strlen(sql)) != 0)
    r = error_set(EIO, "%s: UPDATE %s SET %s WHERE %s: %s", c->uri, table, column, where,
                  mysql_error(db_of(c)));
  else if (mysql_affected_rows(db_of(c)) != 1)
    r = error_set(EIO, "%s: UPDATE %s WHERE %s matched %llu rows, expected 1", c->uri, table, where,
                  (unsigned long long)mysql_affected_rows(db_of(c)));
  free(sql);
  return r;
}

static int
my_begin(struct catalog *c)
{
  return my_exec(c, "START TRANSACTION");
}

static int
my_commit(struct catalog *c)
{
  return my_exec(c, "COMMIT");
}

static int
my_rollback(struct catalog *c)
{
  return my_exec(c, "ROLLBACK");
}

static void
my_close(struct catalog *c)
{
  if (c->priv)
    mysql_close(db_of(c));
}

const struct catalog_backend catalog_mysql_backend = {
  .prefix = "mysql://",
  .transactional = true,
  .needs_oned_stopped = true,
  .open = my_open,
  .query = my_query,
  .update = my_update,
  .begin = my_begin,
  .commit = my_commit,
  .rollback = my_rollback,
  .close = my_close,
};
