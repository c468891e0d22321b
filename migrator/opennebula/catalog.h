/* ferry: the OpenNebula catalog (oned's database), backend-neutral.
 *
 * URIs:
 *   sqlite:PATH                               oned's SQLite file, oned stopped
 *   mysql://user[:pass]@host[:port]/db        MariaDB/MySQL, oned stopped
 *   mysql://user[:pass]@localhost/db?socket=PATH
 *   xmlrpc://host:port/RPC2                   a running oned (one.system.sqlquery / sql)
 *
 * "oned stopped" is checked like onedb's one_not_running (src/onedb/onedb.rb): oned's lock file
 * (/var/lock/one/one, or catalog_options.one_lock) counts as HELD WHEN THE PATH EXISTS, whatever it
 * holds, and oned's XML-RPC endpoint must not answer (catalog_options.one_endpoint, else
 * $ONE_XMLRPC, ~/.one/one_endpoint, /var/lib/one/.one/one_endpoint, http://localhost:2633/RPC2).
 * A file left by a crashed oned must be removed by the operator after checking that oned is down
 * (a PID inside cannot be trusted: oned may run in another PID namespace).  Neither check can see
 * an oned on another front-end (remote MySQL, HA): a warning says so.  Read-only opens (--dry-run)
 * skip the checks.
 *
 * Everything ferry changes is a row image: the text columns body, short_body and body_json
 * of one row.  catalog_switch() applies a set of row changes in ONE transaction after checking
 * that every row still holds the expected image (compare-and-swap), and reads every write
 * back before committing.  The xmlrpc backend cannot span a transaction across calls: it
 * writes row by row, reads each back, and on a failure puts back the rows already written.
 */
#ifndef FERRY_CATALOG_H
#define FERRY_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct catalog;

struct catalog_options {
  const char *one_lock;     /* oned lock path; NULL: /var/lock/one/one */
  const char *one_endpoint; /* oned's XML-RPC endpoint to probe; NULL: as onedb; "none": skip */
  const char *auth;         /* xmlrpc: "user:password"; NULL: $ONE_AUTH file or ~/.one/one_auth */
  bool read_only;           /* dry-run: open read-only, no lock check */
};

enum catalog_kind {
  CATALOG_VM,
  CATALOG_HISTORY,
  CATALOG_IMAGE,
  CATALOG_DATASTORE,
  CATALOG_USER_QUOTAS,  /* user_quotas(user_oid, body) */
  CATALOG_GROUP_QUOTAS, /* group_quotas(group_oid, body) */
  CATALOG_NKINDS
};
enum catalog_column { CATALOG_BODY, CATALOG_SHORT_BODY, CATALOG_BODY_JSON, CATALOG_NCOLUMNS };

/* The schema as read from local_db_versioning and the vm_pool columns. */
struct catalog_schema {
  char version[64]; /* "6.8.0" */
  int major, minor;
  bool body_json; /* 6.10+: vm_pool.body_json */
  bool resched;   /* 7.x: vm_pool.resched */
};

/* One row's image: key + the text columns ferry may change.  present[c] says whether the
 * table has the column; value[c] is NULL for SQL NULL. */
struct catalog_row {
  enum catalog_kind kind;
  int64_t id;  /* oid (history: vid; quotas: user_oid / group_oid) */
  int64_t seq; /* history only; -1 otherwise */
  bool present[CATALOG_NCOLUMNS];
  char *value[CATALOG_NCOLUMNS];
};

/* A query result: nrows x ncols text cells (NULL for SQL NULL). */
struct catalog_result {
  size_t nrows, ncols;
  char **cell;
};

int catalog_open(const char *uri, const struct catalog_options *opts, struct catalog **out);
void catalog_close(struct catalog *c);
const struct catalog_schema *catalog_schema(const struct catalog *c);
const char *catalog_uri(const struct catalog *c);

/* SELECT returning exactly `ncols` columns.  Callers build SQL from constants and integers
 * only; values travel through catalog_update, which escapes or binds them. */
int catalog_query(struct catalog *c, const char *sql, size_t ncols, struct catalog_result *res);
const char *catalog_cell(const struct catalog_result *res, size_t row, size_t col);
void catalog_result_free(struct catalog_result *res);

/* Read one row image; -ENOENT (message set) when the row does not exist. */
int catalog_read_row(struct catalog *c, enum catalog_kind kind, int64_t id, int64_t seq,
                     struct catalog_row *row);
int catalog_row_copy(const struct catalog_row *from, struct catalog_row *to);
void catalog_row_clear(struct catalog_row *row);
/* Columns present in both are equal: text byte for byte, body_json as JSON values (MySQL 8
 * stores a JSON column normalised). */
bool catalog_row_equal(const struct catalog_row *a, const struct catalog_row *b);
bool catalog_column_equal(enum catalog_column col, const char *a, const char *b);
/* "vm_pool oid 43", "history vid 43 seq 0", "user_quotas user_oid 2" into buf. */
const char *catalog_row_name(const struct catalog_row *row, char *buf, size_t len);
const char *catalog_table_name(enum catalog_kind kind);
/* The key column ("oid", "vid", "user_oid", "group_oid"). */
const char *catalog_key_name(enum catalog_kind kind);
/* Does the catalog have this table (the quota tables may be missing in a test catalog)? */
bool catalog_has_table(struct catalog *c, enum catalog_kind kind);
const char *catalog_column_name(enum catalog_column col);

struct catalog_change {
  const struct catalog_row *expect; /* what the row must hold now */
  const struct catalog_row *next;   /* what it will hold */
};

/* The object as oned serves it: xmlrpc one.vm.info (every history record, monitoring),
 * one.image.info, one.datastore.info; SQL backends: the row's body.  VM, IMAGE, DATASTORE only. */
int catalog_object_info(struct catalog *c, enum catalog_kind kind, int64_t id, char **xml);
int catalog_vm_info(struct catalog *c, int64_t vm, char **body);
/* oned's configuration as one.system.config serves it (xmlrpc only; -ENOTSUP otherwise). */
int catalog_oned_config(struct catalog *c, char **xml);
/* one.vm.action (poweroff, poweroff-hard, undeploy, undeploy-hard, suspend, resume): xmlrpc
 * only; -ENOTSUP with a message on the SQL backends, where oned is stopped. */
int catalog_vm_action(struct catalog *c, const char *action, int64_t vm);

/* Apply all changes atomically (see above).  When a row does not hold its expected image,
 * nothing is written and the message lists every such row.  Every value is checked against
 * what the backend can carry before the first write. */
int catalog_switch(struct catalog *c, const struct catalog_change *changes, size_t n);

#endif
