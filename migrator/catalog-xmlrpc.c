/* ferry: xmlrpc catalog backend (placeholder, replaced below). */
#include "migrator/catalog-backend.h"
#include "common/error.h"
#include <errno.h>

static int
x_open(struct catalog *c, const char *rest, const struct catalog_options *o)
{
  (void)rest;
  (void)o;
  return error_set(ENOTSUP, "%s: not implemented yet", c->uri);
}

const struct catalog_backend catalog_xmlrpc_backend = {
  .prefix = "xmlrpc://",
  .open = x_open,
};
