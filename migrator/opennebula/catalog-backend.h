/* ferry: the catalog backend vtable (private to catalog*.c).  A backend runs SQL; catalog.c
 * knows the OpenNebula tables and the switch protocol. */
#ifndef FERRY_CATALOG_BACKEND_H
#define FERRY_CATALOG_BACKEND_H

#include "migrator/opennebula/catalog.h"

struct catalog_backend {
  const char *prefix; /* URI prefix: "sqlite:", "mysql://", "xmlrpc://" */
  bool transactional; /* false: no transaction spans calls (xmlrpc) */
  bool needs_oned_stopped;
  int (*open)(struct catalog *c, const char *rest, const struct catalog_options *o);
  int (*query)(struct catalog *c, const char *sql, size_t ncols, struct catalog_result *res);
  /* UPDATE table SET column = value WHERE where (where: integers and constants only). */
  int (*update)(struct catalog *c, const char *table, const char *column, const char *value,
                const char *where);
  int (*begin)(struct catalog *c);
  int (*commit)(struct catalog *c);
  int (*rollback)(struct catalog *c);
  void (*close)(struct catalog *c);
  /* Optional: can `value` be written by update()?  Checked for every value before the first
   * write of a switch, so a refusal never leaves half a switch behind. */
  int (*check_value)(struct catalog *c, const char *table, const char *column, const char *value);
  /* Optional (a running oned only): an object as oned serves it (kind VM, IMAGE, DATASTORE),
   * a VM action, oned's configuration. */
  int (*object_info)(struct catalog *c, enum catalog_kind kind, int64_t id, char **xml);
  int (*vm_action)(struct catalog *c, const char *action, int64_t vm);
  int (*oned_config)(struct catalog *c, char **xml);
};

/* oned's XML-RPC endpoint answers (catalog-xmlrpc.c): 1 it answers, 0 nothing listens there,
 * negative with a message when it cannot tell (a timeout). */
int catalog_xmlrpc_probe(const char *endpoint);

struct catalog {
  const struct catalog_backend *be;
  void *priv;
  char *uri;
  struct catalog_schema schema;
};

extern const struct catalog_backend catalog_sqlite_backend;
extern const struct catalog_backend catalog_xmlrpc_backend;
#ifdef HAVE_MARIADB
extern const struct catalog_backend catalog_mysql_backend;
#endif

/* Helpers for backends filling a result. */
int catalog_result_init(struct catalog_result *res, size_t ncols);
int catalog_result_add_row(struct catalog_result *res); /* appends a row of NULL cells */
int catalog_result_set(struct catalog_result *res, size_t row, size_t col, const char *v,
                       size_t len);

#endif
