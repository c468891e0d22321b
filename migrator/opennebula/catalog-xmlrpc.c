/* ferry: catalog backend for a running oned (xmlrpc://host:port/RPC2), the way `onedb
 * change-body` works: reads with one.system.sqlquery (a column whose value starts with '<'
 * comes back base64-encoded as <NAME64>), writes with one.system.sql (the whole column).
 * (src/rm/RequestManagerSystem.cc: SystemSqlQuery, SystemSql.)
 *
 * No transaction spans two calls, so catalog_switch() writes row by row, reads each row back
 * (oned's and onedb's success codes are not proof) and puts back what it wrote on a failure.
 *
 * Values travel inside the SQL text that oned hands to its database unchanged.  At open ferry
 * asks one.system.config for DB/BACKEND and then writes every value as a hex literal of that
 * backend (SQLite CAST(X'..' AS TEXT), MySQL CONVERT(X'..' USING utf8mb4), PostgreSQL
 * convert_from(decode('..', 'hex'), 'UTF8')), which no escaping rule can touch.  When oned does
 * not tell (a session outside the oneadmin group), values go as quoted literals and a value
 * with a backslash is refused before the first write: a MySQL-backed oned would read it as an
 * escape.  oned's sqlquery cuts its answer at a SQL NULL (a null char* in its stream), so every
 * query ferry sends avoids NULLs.
 *
 * Session: --auth USER:PASSWORD, else the first line of the file $ONE_AUTH, else
 * ~/.one/one_auth (OpenNebula's own convention).
 */
#include "migrator/opennebula/catalog-backend.h"
#include "common/error.h"
#include "common/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum db_backend { DB_UNKNOWN, DB_SQLITE, DB_MYSQL, DB_POSTGRESQL };

struct xmlrpc {
  CURL *curl;
  char *url;
  char *session;
  char *config; /* one.system.config's answer, NULL when refused */
  enum db_backend backend;
};

struct text {
  char *p;
  size_t len, cap;
  bool oom;
};

static void
add(struct text *t, const char *s, size_t n)
{
  if (t->oom)
    return;
  if (t->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 1024;
    while (cap < t->len + n + 1)
      cap *= 2;
    char *p = realloc(t->p, cap);
    if (!p) {
      t->oom = true;
      return;
    }
    t->p = p;
    t->cap = cap;
  }
  memcpy(t->p + t->len, s, n);
  t->len += n;
  t->p[t->len] = '\0';
}

static void
add_str(struct text *t, const char *s)
{
  add(t, s, strlen(s));
}

static void
add_escaped(struct text *t, const char *s)
{
  for (; *s; s++) {
    if (*s == '&')
      add_str(t, "&amp;");
    else if (*s == '<')
      add_str(t, "&lt;");
    else if (*s == '>')
      add_str(t, "&gt;");
    else
      add(t, s, 1);
  }
}

static size_t
on_data(char *data, size_t size, size_t n, void *opaque)
{
  add(opaque, data, size * n);
  return size * n;
}

/* ---- base64 (RFC 4648), for the <NAME64> columns ---- */

static int
b64_value(char c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static char *
b64_decode(const char *in, size_t *out_len)
{
  char *out = malloc(strlen(in) / 4 * 3 + 4);
  size_t n = 0;
  unsigned acc = 0;
  int bits = 0;
  if (!out)
    return NULL;
  for (; *in; in++) {
    if (*in == '=' || *in == '\n' || *in == '\r' || *in == ' ')
      continue;
    int v = b64_value(*in);
    if (v < 0) {
      free(out);
      return NULL;
    }
    acc = (acc << 6) | (unsigned)v;
    if ((bits += 6) >= 8) {
      bits -= 8;
      out[n++] = (char)((acc >> bits) & 0xff);
    }
  }
  out[n] = '\0';
  *out_len = n;
  return out;
}

/* ---- calls ---- */

/* Call `method` with the session and `params` (already XML-RPC <param> elements).  On success
 * *doc is the response and *value the second element of oned's [ok, value, code] array. */
static int
call(struct catalog *c, const char *method, const char *params, xmlDocPtr *doc, xmlNodePtr *value)
{
  struct xmlrpc *x = c->priv;
  struct text req = { 0 }, resp = { 0 };
  xmlXPathContextPtr ctx = NULL;
  xmlXPathObjectPtr o = NULL;
  int r = 0;
  long status = 0;

  *doc = NULL;
  add_str(&req, "<?xml version=\"1.0\"?><methodCall><methodName>");
  add_str(&req, method);
  add_str(&req, "</methodName><params><param><value><string>");
  add_escaped(&req, x->session);
  add_str(&req, "</string></value></param>");
  add_str(&req, params);
  add_str(&req, "</params></methodCall>");
  if (req.oom) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: text/xml");
  curl_easy_setopt(x->curl, CURLOPT_URL, x->url);
  curl_easy_setopt(x->curl, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(x->curl, CURLOPT_POSTFIELDS, req.p);
  curl_easy_setopt(x->curl, CURLOPT_POSTFIELDSIZE, (long)req.len);
  curl_easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(x->curl, CURLOPT_WRITEDATA, &resp);
  CURLcode cc = curl_easy_perform(x->curl);
  curl_slist_free_all(hdr);
  curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
  if (cc != CURLE_OK) {
    r = error_set(EIO, "%s: %s: %s", c->uri, method, curl_easy_strerror(cc));
    goto out;
  }
  if (status != 200 || resp.oom || !resp.p) {
    r = error_set(EIO, "%s: %s: HTTP status %ld", c->uri, method, status);
    goto out;
  }
  *doc = xmlReadMemory(resp.p, (int)resp.len, NULL, "UTF-8",
                       XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (!*doc || !(ctx = xmlXPathNewContext(*doc))
      || !(o = xmlXPathEvalExpression(
               (const xmlChar *)"/methodResponse/params/param/value/array/data/value", ctx))
      || !o->nodesetval || o->nodesetval->nodeNr < 2) {
    r = error_set(EPROTO, "%s: %s: not an OpenNebula XML-RPC response", c->uri, method);
    goto out;
  }
  xmlChar *ok = xmlNodeGetContent(o->nodesetval->nodeTab[0]);
  xmlChar *msg = xmlNodeGetContent(o->nodesetval->nodeTab[1]);
  bool success = ok && (strcmp((const char *)ok, "1") == 0);
  if (!success)
    r = error_set(EIO, "%s: %s failed: %s", c->uri, method, msg ? (const char *)msg : "");
  xmlFree(ok);
  xmlFree(msg);
  *value = o->nodesetval->nodeTab[1];
out:
  if (o)
    xmlXPathFreeObject(o);
  if (ctx)
    xmlXPathFreeContext(ctx);
  if (r < 0 && *doc) {
    xmlFreeDoc(*doc);
    *doc = NULL;
  }
  free(req.p);
  free(resp.p);
  return r;
}

static void
string_param(struct text *t, const char *s)
{
  add_str(t, "<param><value><string>");
  add_escaped(t, s);
  add_str(t, "</string></value></param>");
}

static int
x_query(struct catalog *c, const char *sql, size_t ncols, struct catalog_result *res)
{
  struct text params = { 0 };
  xmlDocPtr doc, rdoc = NULL;
  xmlNodePtr value;
  string_param(&params, sql);
  if (params.oom)
    return error_set(ENOMEM, "out of memory");
  int r = call(c, "one.system.sqlquery", params.p, &doc, &value);
  free(params.p);
  if (r < 0)
    return r;
  xmlChar *result = xmlNodeGetContent(value);
  rdoc = result ? xmlReadDoc(result, NULL, "UTF-8",
                             XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)
                : NULL;
  xmlFree(result);
  xmlNodePtr root = rdoc ? xmlDocGetRootElement(rdoc) : NULL, res_node = NULL;
  for (xmlNodePtr n = root ? root->children : NULL; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, "RESULT") == 0)
      res_node = n;
  if (!res_node) {
    r = error_set(EPROTO, "%s: one.system.sqlquery: no <RESULT> in the answer", c->uri);
    goto out;
  }
  for (xmlNodePtr row = res_node->children; row && r == 0; row = row->next) {
    if (row->type != XML_ELEMENT_NODE)
      continue;
    size_t col = 0;
    if ((r = catalog_result_add_row(res)) < 0)
      break;
    for (xmlNodePtr cell = row->children; cell && r == 0; cell = cell->next) {
      if (cell->type != XML_ELEMENT_NODE)
        continue;
      if (col == ncols) {
        r = error_set(EPROTO, "%s: %s: too many columns in the answer", c->uri, sql);
        break;
      }
      xmlChar *v = xmlNodeGetContent(cell);
      size_t nlen = strlen((const char *)cell->name);
      /* Columns ferry reads never end in "64": such a name is oned's base64 marker. */
      if (nlen > 2 && strcmp((const char *)cell->name + nlen - 2, "64") == 0) {
        size_t len;
        char *dec = b64_decode(v ? (const char *)v : "", &len);
        r = dec ? catalog_result_set(res, res->nrows - 1, col, dec, len)
                : error_set(EPROTO, "%s: bad base64 in column %s", c->uri, cell->name);
        free(dec);
      } else
        r = catalog_result_set(res, res->nrows - 1, col, v ? (const char *)v : "",
                               v ? strlen((const char *)v) : 0);
      xmlFree(v);
      col++;
    }
    if (r == 0 && col != ncols)
      r = error_set(EPROTO, "%s: %s: %zu columns in the answer, expected %zu", c->uri, sql, col,
                    ncols);
  }
out:
  if (rdoc)
    xmlFreeDoc(rdoc);
  xmlFreeDoc(doc);
  return r;
}

static int
x_check_value(struct catalog *c, const char *table, const char *column, const char *value)
{
  struct xmlrpc *x = c->priv;
  if (x->backend == DB_UNKNOWN && value && strchr(value, '\\'))
    return error_set(ENOTSUP,
                     "%s.%s: the value holds a backslash and oned did not say which "
                     "database it uses (one.system.config needs a oneadmin-group session): a "
                     "MySQL-backed oned would read it as an escape; use a oneadmin session, or "
                     "a sqlite: or mysql: catalog with oned stopped",
                     table, column);
  return 0;
}

/* `value` as a SQL expression of the backend's dialect. */
static void
add_value(struct text *t, enum db_backend db, const char *value)
{
  static const char hex[] = "0123456789ABCDEF";
  if (!value) {
    add_str(t, "NULL");
    return;
  }
  if (db == DB_UNKNOWN) {
    add_str(t, "'");
    for (const char *s = value; *s; s++) {
      if (*s == '\'')
        add(t, "'", 1); /* SQL quoting: '' inside a '...' literal */
      add(t, s, 1);
    }
    add_str(t, "'");
    return;
  }
  add_str(t, db == DB_SQLITE ? "CAST(X'" : db == DB_MYSQL ? "CONVERT(X'" : "convert_from(decode('");
  for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
    char pair[2] = { hex[*s >> 4], hex[*s & 15] };
    add(t, pair, 2);
  }
  add_str(t, db == DB_SQLITE  ? "' AS TEXT)"
             : db == DB_MYSQL ? "' USING utf8mb4)"
                              : "', 'hex'), 'UTF8')");
}

static int
x_update(struct catalog *c, const char *table, const char *column, const char *value,
         const char *where)
{
  struct xmlrpc *x = c->priv;
  struct text sql = { 0 }, params = { 0 };
  xmlDocPtr doc;
  xmlNodePtr v;
  int r = x_check_value(c, table, column, value);
  if (r < 0)
    return r;
  add_str(&sql, "UPDATE ");
  add_str(&sql, table);
  add_str(&sql, " SET ");
  add_str(&sql, column);
  add_str(&sql, " = ");
  add_value(&sql, x->backend, value);
  add_str(&sql, " WHERE ");
  add_str(&sql, where);
  string_param(&params, sql.p ? sql.p : "");
  add_str(&params, "<param><value><boolean>0</boolean></value></param>"); /* not federated */
  r = sql.oom || params.oom ? error_set(ENOMEM, "out of memory")
                            : call(c, "one.system.sql", params.p, &doc, &v);
  if (r == 0)
    xmlFreeDoc(doc);
  free(sql.p);
  free(params.p);
  return r;
}

static int
x_object_info(struct catalog *c, enum catalog_kind kind, int64_t id, char **xml)
{
  const char *method = kind == CATALOG_VM          ? "one.vm.info"
                       : kind == CATALOG_IMAGE     ? "one.image.info"
                       : kind == CATALOG_DATASTORE ? "one.datastore.info"
                                                   : NULL;
  char params[128];
  xmlDocPtr doc;
  xmlNodePtr v;
  *xml = NULL;
  if (!method)
    return error_set(EINVAL, "%s: no info call for %s", c->uri, catalog_table_name(kind));
  snprintf(params, sizeof params, "<param><value><int>%" PRId64 "</int></value></param>", id);
  int r = call(c, method, params, &doc, &v);
  if (r < 0)
    return r;
  xmlChar *text = xmlNodeGetContent(v);
  *xml = text ? strdup((const char *)text) : NULL;
  xmlFree(text);
  xmlFreeDoc(doc);
  return *xml ? 0 : error_set(ENOMEM, "out of memory");
}

static int
x_oned_config(struct catalog *c, char **xml)
{
  struct xmlrpc *x = c->priv;
  *xml = NULL;
  if (!x->config)
    return error_set(EACCES, "%s: one.system.config was refused", c->uri);
  return (*xml = strdup(x->config)) ? 0 : error_set(ENOMEM, "out of memory");
}

/* one.system.config: keep the answer (INHERIT_DATASTORE_ATTR...) and learn DB/BACKEND. */
static void
learn_config(struct catalog *c)
{
  struct xmlrpc *x = c->priv;
  xmlDocPtr doc, conf;
  xmlNodePtr v;
  if (call(c, "one.system.config", "", &doc, &v) < 0) {
    debug("catalog", "%s: one.system.config: %s", c->uri, error_message());
    error_clear();
    return;
  }
  xmlChar *text = xmlNodeGetContent(v);
  x->config = text ? strdup((const char *)text) : NULL;
  xmlFree(text);
  xmlFreeDoc(doc);
  conf = x->config ? xmlReadMemory(x->config, (int)strlen(x->config), NULL, "UTF-8",
                                   XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)
                   : NULL;
  xmlXPathContextPtr ctx = conf ? xmlXPathNewContext(conf) : NULL;
  xmlXPathObjectPtr o
      = ctx ? xmlXPathEvalExpression((const xmlChar *)"/OPENNEBULA_CONFIGURATION/DB/BACKEND", ctx)
            : NULL;
  if (o && o->nodesetval && o->nodesetval->nodeNr == 1) {
    xmlChar *b = xmlNodeGetContent(o->nodesetval->nodeTab[0]);
    if (b && !strcasecmp((const char *)b, "sqlite"))
      x->backend = DB_SQLITE;
    else if (b && !strcasecmp((const char *)b, "mysql"))
      x->backend = DB_MYSQL;
    else if (b && !strcasecmp((const char *)b, "postgresql"))
      x->backend = DB_POSTGRESQL;
    xmlFree(b);
  }
  debug("catalog", "%s: oned's DB backend: %s", c->uri,
        x->backend == DB_SQLITE       ? "sqlite"
        : x->backend == DB_MYSQL      ? "mysql"
        : x->backend == DB_POSTGRESQL ? "postgresql"
                                      : "not told");
  if (o)
    xmlXPathFreeObject(o);
  if (ctx)
    xmlXPathFreeContext(ctx);
  if (conf)
    xmlFreeDoc(conf);
}

static int
x_vm_action(struct catalog *c, const char *action, int64_t vm)
{
  struct text params = { 0 };
  char id[64];
  xmlDocPtr doc;
  xmlNodePtr v;
  string_param(&params, action);
  snprintf(id, sizeof id, "<param><value><int>%" PRId64 "</int></value></param>", vm);
  add_str(&params, id);
  int r = params.oom ? error_set(ENOMEM, "out of memory")
                     : call(c, "one.vm.action", params.p, &doc, &v);
  if (r == 0)
    xmlFreeDoc(doc);
  free(params.p);
  return r;
}

static char *
read_auth(const char *given)
{
  const char *file = getenv("ONE_AUTH");
  char path[4096], line[1024];
  if (given)
    return strdup(given);
  if (!file || !*file) {
    const char *home = getenv("HOME");
    snprintf(path, sizeof path, "%s/.one/one_auth", home ? home : "");
    file = path;
  }
  FILE *f = fopen(file, "r");
  if (!f) {
    error_set_errno(errno, "xmlrpc: no session: pass --auth USER:PASSWORD or set ONE_AUTH (%s)",
                    file);
    return NULL;
  }
  char *ok = fgets(line, sizeof line, f);
  fclose(f);
  if (!ok || !strchr(line, ':')) {
    error_set(EINVAL, "xmlrpc: %s: expected USER:PASSWORD on its first line", file);
    return NULL;
  }
  line[strcspn(line, "\r\n")] = '\0';
  return strdup(line);
}

static void
x_close(struct catalog *c)
{
  struct xmlrpc *x = c->priv;
  if (!x)
    return;
  if (x->curl) {
    curl_easy_cleanup(x->curl);
    curl_global_cleanup();
  }
  free(x->url);
  free(x->session);
  free(x->config);
  free(x);
  c->priv = NULL;
}

static int
x_open(struct catalog *c, const char *rest, const struct catalog_options *o)
{
  struct xmlrpc *x = calloc(1, sizeof *x);
  if (!x)
    return error_set(ENOMEM, "out of memory");
  c->priv = x;
  if (!*rest || *rest == '/') {
    x_close(c);
    return error_set(EINVAL, "%s: expected xmlrpc://host:port/RPC2", c->uri);
  }
  if (asprintf(&x->url, "http://%s", rest) < 0) {
    x->url = NULL;
    x_close(c);
    return error_set(ENOMEM, "out of memory");
  }
  if (!(x->session = read_auth(o ? o->auth : NULL))) {
    x_close(c);
    return -EINVAL;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (!(x->curl = curl_easy_init())) {
    curl_global_cleanup();
    x_close(c);
    return error_set(ENOMEM, "out of memory");
  }
  curl_easy_setopt(x->curl, CURLOPT_TIMEOUT, 60L);
  curl_easy_setopt(x->curl, CURLOPT_NOSIGNAL, 1L);
  learn_config(c);
  return 0;
}

int
catalog_xmlrpc_probe(const char *endpoint)
{
  static const char body[] = "<?xml version=\"1.0\"?><methodCall><methodName>one.system.version"
                             "</methodName><params><param><value><string>ferry:probe</string>"
                             "</value></param></params></methodCall>";
  struct text resp = { 0 };
  long status = 0;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL *curl = curl_easy_init();
  if (!curl) {
    curl_global_cleanup();
    return error_set(ENOMEM, "out of memory");
  }
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: text/xml");
  curl_easy_setopt(curl, CURLOPT_URL, endpoint);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &resp);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 5L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  CURLcode cc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(hdr);
  curl_easy_cleanup(curl);
  curl_global_cleanup();
  free(resp.p);
  debug("catalog", "probe %s: %s, HTTP %ld", endpoint, curl_easy_strerror(cc), status);
  if (cc == CURLE_OK)
    return 1; /* an answer, whatever it says (even "not authenticated") */
  if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
    return 0;
  return error_set(EIO, "oned endpoint %s: %s", endpoint, curl_easy_strerror(cc));
}

/* No transactions over XML-RPC: catalog_switch() reads back and undoes instead. */
static int
x_nop(struct catalog *c)
{
  (void)c;
  return 0;
}

const struct catalog_backend catalog_xmlrpc_backend = {
  .prefix = "xmlrpc://",
  .transactional = false,
  .needs_oned_stopped = false,
  .open = x_open,
  .query = x_query,
  .update = x_update,
  .begin = x_nop,
  .commit = x_nop,
  .rollback = x_nop,
  .close = x_close,
  .check_value = x_check_value,
  .object_info = x_object_info,
  .vm_action = x_vm_action,
  .oned_config = x_oned_config,
};
