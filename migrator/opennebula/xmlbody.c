/* ferry: OpenNebula object bodies: parse, XPath edits, byte-exact serialisation.
 *
 * libxml2 does not remember whether an empty element was written `<X/>` or `<X></X>`, and oned
 * writes both (`<BACKUP_CONFIG/>` next to `<MONITORING></MONITORING>`).  A first pass with the
 * xmlTextReader records, in document order, which elements were self-closing; the flag is kept
 * in each element's `_private` and honoured by our own small serialiser.
 */
#include "migrator/opennebula/xmlbody.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <libxml/parser.h>
#include <libxml/xmlreader.h>
#include <libxml/xpath.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct xmlbody {
  xmlDocPtr doc;
  char *what;
  char *prefix; /* text before the root element (an XML declaration, if any) */
  char *suffix; /* text after it (a trailing newline, if any) */
  /* XML parsers turn CR and CRLF into LF (XML 1.0 "end-of-line handling"), but oned's templates
   * hold CRLFs inside CDATA (scripts pasted from Windows).  Before parsing, every CR of the text
   * becomes `cr`, a private-use character the text does not contain; the serialiser writes it
   * back as a CR, and get/set translate it, so the bytes survive.  Empty: the text had no CR. */
  char cr[4];
};

/* A growable string. */
struct buf {
  char *p;
  size_t len, cap;
  bool oom;
};

static void
put(struct buf *b, const char *s, size_t n)
{
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void
puts_(struct buf *b, const char *s)
{
  put(b, s, strlen(s));
}

static void
put_escaped(struct buf *b, const char *s, bool attr)
{
  for (; *s; s++) {
    switch (*s) {
    case '&':
      puts_(b, "&amp;");
      break;
    case '<':
      puts_(b, "&lt;");
      break;
    case '>':
      puts_(b, "&gt;");
      break;
    case '\r':
      puts_(b, "&#13;");
      break;
    case '"':
      if (attr) {
        puts_(b, "&quot;");
        break;
      }
      /* fall through */
    default:
      put(b, s, 1);
    }
  }
}

/* Replace, in place, every CR stand-in of `x` by a CR (the text only gets shorter). */
static void
restore_cr(const struct xmlbody *x, char *s)
{
  size_t n = strlen(x->cr);
  char *w = s;
  if (!n)
    return;
  for (const char *r = s; *r;) {
    if (strncmp(r, x->cr, n) == 0) {
      *w++ = '\r';
      r += n;
    } else
      *w++ = *r++;
  }
  *w = '\0';
}

/* A copy of `s` with every CR replaced by x->cr (malloc'd; NULL on ENOMEM). */
static char *
hide_cr(const struct xmlbody *x, const char *s)
{
  size_t n = strlen(x->cr), crs = 0;
  for (const char *r = s; *r; r++)
    crs += *r == '\r';
  char *out = malloc(strlen(s) + crs * (n ? n : 1) + 1), *w = out;
  if (!out)
    return NULL;
  for (const char *r = s; *r; r++) {
    if (*r == '\r' && n) {
      memcpy(w, x->cr, n);
      w += n;
    } else
      *w++ = *r;
  }
  *w = '\0';
  return out;
}

/* Pick a CR stand-in (U+E000.. U+E0FF, 3 bytes of UTF-8) that `a` and `b` do not contain. */
static int
choose_cr(struct xmlbody *x, const char *a, const char *b)
{
  for (int i = 0; i < 256; i++) {
    char c[4] = { (char)0xEE, (char)(0x80 | (i >> 6)), (char)(0x80 | (i & 0x3F)), 0 };
    if (!strstr(a, c) && (!b || !strstr(b, c))) {
      memcpy(x->cr, c, sizeof c);
      return 0;
    }
  }
  return error_set(EINVAL,
                   "%s: holds carriage returns and every stand-in character ferry "
                   "could use for them",
                   x->what);
}

/* Returns false on a node kind oned never writes (we would not reproduce it). */
static bool
serialize_nodes(struct buf *b, xmlNodePtr n)
{
  for (; n; n = n->next) {
    switch (n->type) {
    case XML_ELEMENT_NODE:
      if (n->ns || n->nsDef)
        return false;
      puts_(b, "<");
      puts_(b, (const char *)n->name);
      for (xmlAttrPtr a = n->properties; a; a = a->next) {
        xmlChar *v = xmlNodeListGetString(n->doc, a->children, 0);
        puts_(b, " ");
        puts_(b, (const char *)a->name);
        puts_(b, "=\"");
        put_escaped(b, v ? (const char *)v : "", true);
        puts_(b, "\"");
        xmlFree(v);
      }
      if (!n->children && n->_private) {
        puts_(b, "/>");
        break;
      }
      puts_(b, ">");
      if (!serialize_nodes(b, n->children))
        return false;
      puts_(b, "</");
      puts_(b, (const char *)n->name);
      puts_(b, ">");
      break;
    case XML_TEXT_NODE:
      put_escaped(b, (const char *)n->content, false);
      break;
    case XML_CDATA_SECTION_NODE:
      puts_(b, "<![CDATA[");
      puts_(b, (const char *)n->content);
      puts_(b, "]]>");
      break;
    case XML_COMMENT_NODE:
      puts_(b, "<!--");
      puts_(b, (const char *)n->content);
      puts_(b, "-->");
      break;
    default:
      return false;
    }
  }
  return true;
}

char *
xmlbody_serialize(struct xmlbody *x)
{
  struct buf b = { 0 };
  puts_(&b, x->prefix);
  if (!serialize_nodes(&b, xmlDocGetRootElement(x->doc))) {
    free(b.p);
    error_set(EINVAL, "%s: holds XML that ferry cannot reproduce exactly", x->what);
    return NULL;
  }
  puts_(&b, x->suffix);
  if (b.oom) {
    free(b.p);
    error_set(ENOMEM, "%s: out of memory", x->what);
    return NULL;
  }
  restore_cr(x, b.p);
  return b.p;
}

/* Self-closing flags of every element, in document order. */
static int
empty_flags(const char *text, const char *what, unsigned char **flags, size_t *n)
{
  size_t cap = 64;
  int r;
  *n = 0;
  *flags = malloc(cap);
  xmlTextReaderPtr rd
      = xmlReaderForMemory(text, (int)strlen(text), NULL, NULL,
                           XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (!*flags || !rd) {
    r = error_set(ENOMEM, "%s: out of memory", what);
    goto out;
  }
  while ((r = xmlTextReaderRead(rd)) == 1) {
    if (xmlTextReaderNodeType(rd) != XML_READER_TYPE_ELEMENT)
      continue;
    if (*n == cap) {
      unsigned char *p = realloc(*flags, cap *= 2);
      if (!p) {
        r = error_set(ENOMEM, "%s: out of memory", what);
        goto out;
      }
      *flags = p;
    }
    (*flags)[(*n)++] = xmlTextReaderIsEmptyElement(rd) == 1;
  }
  r = r == 0 ? 0 : error_set(EINVAL, "%s: not well-formed XML", what);
out:
  if (rd)
    xmlFreeTextReader(rd);
  return r;
}

static void
apply_flags(xmlNodePtr n, const unsigned char *flags, size_t n_flags, size_t *i)
{
  for (; n; n = n->next) {
    if (n->type != XML_ELEMENT_NODE)
      continue;
    n->_private = (*i < n_flags && flags[*i]) ? (void *)1 : NULL;
    (*i)++;
    apply_flags(n->children, flags, n_flags, i);
  }
}

/* Split the original text around the root element so the serialiser can put the prolog
 * and trailer back verbatim. */
static int
split_outer(struct xmlbody *x, const char *text)
{
  const char *p = text, *end;
  while ((p = strchr(p, '<')) && (p[1] == '?' || p[1] == '!'))
    p++;
  end = strrchr(text, '>');
  if (!p || !end)
    return error_set(EINVAL, "%s: no root element", x->what);
  x->prefix = strndup(text, (size_t)(p - text));
  x->suffix = strdup(end + 1);
  if (!x->prefix || !x->suffix)
    return error_set(ENOMEM, "%s: out of memory", x->what);
  return 0;
}

static int parse(const char *text, const char *what, bool exact, struct xmlbody **out);

int
xmlbody_parse(const char *text, const char *what, struct xmlbody **out)
{
  return parse(text, what, true, out);
}

int
xmlbody_parse_lenient(const char *text, const char *what, struct xmlbody **out)
{
  return parse(text, what, false, out);
}

static int
parse(const char *text, const char *what, bool exact, struct xmlbody **out)
{
  struct xmlbody *x = calloc(1, sizeof *x);
  unsigned char *flags = NULL;
  size_t n_flags = 0, i = 0;
  char *again = NULL, *hidden = NULL;
  int r;

  *out = NULL;
  if (!x || !(x->what = strdup(what))) {
    free(x);
    return error_set(ENOMEM, "%s: out of memory", what);
  }
  if (!text || !*text) {
    r = error_set(EINVAL, "%s: empty", what);
    goto out;
  }
  if (strchr(text, '\r')) {
    if ((r = choose_cr(x, text, NULL)) < 0)
      goto out;
    if (!(hidden = hide_cr(x, text))) {
      r = error_set(ENOMEM, "%s: out of memory", what);
      goto out;
    }
  }
  const char *input = hidden ? hidden : text;
  if ((r = empty_flags(input, what, &flags, &n_flags)) < 0)
    goto out;
  /* No NOBLANKS, no NOCDATA, no entity substitution tricks: keep the text as written. */
  x->doc = xmlReadMemory(input, (int)strlen(input), NULL, "UTF-8",
                         XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (!x->doc || !xmlDocGetRootElement(x->doc)) {
    r = error_set(EINVAL, "%s: not well-formed XML", what);
    goto out;
  }
  apply_flags(xmlDocGetRootElement(x->doc), flags, n_flags, &i);
  if ((r = split_outer(x, input)) < 0)
    goto out;
  /* The guarantee every edit relies on: an unedited body serialises to the same bytes. */
  if (exact && !(again = xmlbody_serialize(x))) {
    r = -1;
    goto out;
  }
  if (exact && strcmp(again, text) != 0) {
    r = error_set(EINVAL, "%s: does not serialise back to the same bytes; refusing to edit it",
                  what);
    goto out;
  }
  *out = x;
  x = NULL;
  r = 0;
out:
  free(again);
  free(hidden);
  free(flags);
  xmlbody_free(x);
  return r;
}

void
xmlbody_free(struct xmlbody *x)
{
  if (!x)
    return;
  if (x->doc)
    xmlFreeDoc(x->doc);
  free(x->what);
  free(x->prefix);
  free(x->suffix);
  free(x);
}

static xmlXPathObjectPtr
eval(struct xmlbody *x, const char *xpath)
{
  xmlXPathContextPtr ctx = xmlXPathNewContext(x->doc);
  xmlXPathObjectPtr o = ctx ? xmlXPathEvalExpression((const xmlChar *)xpath, ctx) : NULL;
  if (ctx)
    xmlXPathFreeContext(ctx);
  if (!o)
    error_set(EINVAL, "%s: bad XPath %s", x->what, xpath);
  else if (o->type != XPATH_NODESET) {
    xmlXPathFreeObject(o);
    o = NULL;
    error_set(EINVAL, "%s: XPath %s does not select nodes", x->what, xpath);
  }
  return o;
}

static int
nodes(xmlXPathObjectPtr o)
{
  return o->nodesetval ? o->nodesetval->nodeNr : 0;
}

int
xmlbody_count(struct xmlbody *x, const char *xpath)
{
  xmlXPathObjectPtr o = eval(x, xpath);
  if (!o)
    return -EINVAL;
  int n = nodes(o);
  xmlXPathFreeObject(o);
  return n;
}

int
xmlbody_get(struct xmlbody *x, const char *xpath, char **value)
{
  xmlXPathObjectPtr o = eval(x, xpath);
  int r;
  *value = NULL;
  if (!o)
    return -EINVAL;
  if (nodes(o) == 0)
    r = 0;
  else if (nodes(o) > 1)
    r = error_set(EINVAL, "%s: %s matches %d nodes", x->what, xpath, nodes(o));
  else {
    xmlChar *c = xmlNodeGetContent(o->nodesetval->nodeTab[0]);
    *value = strdup(c ? (const char *)c : "");
    xmlFree(c);
    if (*value)
      restore_cr(x, *value);
    r = *value ? 1 : error_set(ENOMEM, "out of memory");
  }
  xmlXPathFreeObject(o);
  return r;
}

static bool
under_template(xmlNodePtr n)
{
  for (; n && n->type == XML_ELEMENT_NODE; n = n->parent)
    if (strcmp((const char *)n->name, "TEMPLATE") == 0
        || strcmp((const char *)n->name, "USER_TEMPLATE") == 0)
      return true;
  return false;
}

/* The content node of a leaf: CDATA (a CR inside stays a CR, through x->cr) or text (a CR is
 * written as &#13; by the serialiser). */
static xmlNodePtr
leaf_content(struct xmlbody *x, const char *value, bool cdata)
{
  if (!cdata || !strchr(value, '\r'))
    return cdata ? xmlNewCDataBlock(x->doc, (const xmlChar *)value, (int)strlen(value))
                 : xmlNewDocText(x->doc, (const xmlChar *)value);
  if (!x->cr[0]) {
    char *now = xmlbody_serialize(x);
    int r = now ? choose_cr(x, now, value) : -ENOMEM;
    free(now);
    if (r < 0)
      return NULL;
  }
  char *hidden = hide_cr(x, value);
  xmlNodePtr c
      = hidden ? xmlNewCDataBlock(x->doc, (const xmlChar *)hidden, (int)strlen(hidden)) : NULL;
  free(hidden);
  return c;
}

int
xmlbody_set(struct xmlbody *x, const char *xpath, const char *value)
{
  xmlXPathObjectPtr o = eval(x, xpath);
  int r = 0;
  if (!o)
    return -EINVAL;
  if (nodes(o) != 1) {
    r = error_set(EINVAL, "%s: %s matches %d nodes, expected 1", x->what, xpath, nodes(o));
    goto out;
  }
  xmlNodePtr n = o->nodesetval->nodeTab[0], c, next;
  if (n->type != XML_ELEMENT_NODE) {
    r = error_set(EINVAL, "%s: %s is not an element", x->what, xpath);
    goto out;
  }
  /* oned writes template values as CDATA and object fields as text: keep whichever it used. */
  bool cdata = n->children ? n->children->type == XML_CDATA_SECTION_NODE : under_template(n);
  for (c = n->children; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE) {
      r = error_set(EINVAL, "%s: %s is not a leaf element", x->what, xpath);
      goto out;
    }
  for (c = n->children; c; c = next) {
    next = c->next;
    xmlUnlinkNode(c);
    xmlFreeNode(c);
  }
  c = leaf_content(x, value, cdata);
  if (!c || !xmlAddChild(n, c)) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
out:
  xmlXPathFreeObject(o);
  return r;
}

int
xmlbody_insert_sorted(struct xmlbody *x, const char *parent_xpath, const char *name,
                      const char *value)
{
  xmlXPathObjectPtr o = eval(x, parent_xpath);
  xmlNodePtr parent, at = NULL, e = NULL, c;
  int r = 1;
  if (!o)
    return -EINVAL;
  if (nodes(o) != 1) {
    r = error_set(EINVAL, "%s: %s matches %d nodes, expected 1", x->what, parent_xpath, nodes(o));
    goto out;
  }
  parent = o->nodesetval->nodeTab[0];
  for (c = parent->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE)
      continue;
    int cmp = strcmp((const char *)c->name, name);
    if (cmp == 0) {
      r = error_set(EEXIST, "%s: %s/%s exists already", x->what, parent_xpath, name);
      goto out;
    }
    if (cmp > 0 && !at)
      at = c;
  }
  /* A vector attribute's values are a std::map: oned writes them sorted by name, as CDATA. */
  if (!(e = xmlNewDocNode(x->doc, NULL, (const xmlChar *)name, NULL))
      || !(c = leaf_content(x, value, true)) || !xmlAddChild(e, c)) {
    xmlFreeNode(e);
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  if (at)
    xmlAddPrevSibling(at, e);
  else
    xmlAddChild(parent, e);
out:
  xmlXPathFreeObject(o);
  return r;
}

int
xmlbody_append_vector(struct xmlbody *x, const char *parent_xpath, const char *name,
                      const char *const *keys, const char *const *values, size_t n)
{
  xmlXPathObjectPtr o = eval(x, parent_xpath);
  int r = 0;
  if (!o)
    return -EINVAL;
  if (nodes(o) != 1) {
    r = error_set(EINVAL, "%s: %s matches %d nodes, expected 1", x->what, parent_xpath, nodes(o));
    goto out;
  }
  xmlNodePtr e = xmlNewDocNode(x->doc, NULL, (const xmlChar *)name, NULL);
  for (size_t i = 0; e && i < n; i++) {
    xmlNodePtr k = xmlNewDocNode(x->doc, NULL, (const xmlChar *)keys[i], NULL),
               c = k ? leaf_content(x, values[i], true) : NULL;
    if (!c || !xmlAddChild(k, c) || !xmlAddChild(e, k)) {
      xmlFreeNode(k);
      xmlFreeNode(e);
      e = NULL;
    }
  }
  if (!e || !xmlAddChild(o->nodesetval->nodeTab[0], e))
    r = error_set(ENOMEM, "out of memory");
out:
  xmlXPathFreeObject(o);
  return r;
}

int
xmlbody_delete(struct xmlbody *x, const char *xpath)
{
  xmlXPathObjectPtr o = eval(x, xpath);
  if (!o)
    return -EINVAL;
  int n = nodes(o);
  for (int i = 0; i < n; i++) {
    xmlNodePtr node = o->nodesetval->nodeTab[i];
    o->nodesetval->nodeTab[i] = NULL;
    xmlUnlinkNode(node);
    xmlFreeNode(node);
  }
  xmlXPathFreeObject(o);
  return n;
}

static bool
has_element_children(xmlNodePtr n)
{
  for (xmlNodePtr c = n->children; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE)
      return true;
  return false;
}

static int
add_leaf(struct xmlbody *x, struct xmlbody_leaf **out, size_t *n, const xmlChar *vector,
         xmlNodePtr e)
{
  struct xmlbody_leaf *l = realloc(*out, (*n + 1) * sizeof *l);
  if (!l)
    return error_set(ENOMEM, "out of memory");
  *out = l;
  l = &l[(*n)++];
  xmlChar *c = xmlNodeGetContent(e);
  l->vector = vector ? strdup((const char *)vector) : NULL;
  l->name = strdup((const char *)e->name);
  l->value = strdup(c ? (const char *)c : "");
  xmlFree(c);
  if ((vector && !l->vector) || !l->name || !l->value)
    return error_set(ENOMEM, "out of memory");
  restore_cr(x, l->value);
  return 0;
}

void
xmlbody_leaves_free(struct xmlbody_leaf *l, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free(l[i].vector);
    free(l[i].name);
    free(l[i].value);
  }
  free(l);
}

static xmlNodePtr single(struct xmlbody *x, const char *xpath);

int
xmlbody_leaves(struct xmlbody *x, const char *xpath, struct xmlbody_leaf **out, size_t *n)
{
  xmlNodePtr node = single(x, xpath);
  int r = 0;
  *out = NULL;
  *n = 0;
  if (!node)
    return -EINVAL;
  for (xmlNodePtr c = node->children; c && r == 0; c = c->next) {
    if (c->type != XML_ELEMENT_NODE)
      continue;
    if (!has_element_children(c)) {
      r = add_leaf(x, out, n, NULL, c);
      continue;
    }
    for (xmlNodePtr g = c->children; g && r == 0; g = g->next)
      if (g->type == XML_ELEMENT_NODE && !has_element_children(g))
        r = add_leaf(x, out, n, c->name, g);
  }
  if (r < 0) {
    xmlbody_leaves_free(*out, *n);
    *out = NULL;
    *n = 0;
  }
  return r;
}

static xmlNodePtr
single(struct xmlbody *x, const char *xpath)
{
  xmlXPathObjectPtr o = eval(x, xpath);
  xmlNodePtr n = NULL;
  if (!o)
    return NULL;
  if (nodes(o) != 1)
    error_set(EINVAL, "%s: %s matches %d nodes, expected 1", x->what, xpath, nodes(o));
  else
    n = o->nodesetval->nodeTab[0];
  xmlXPathFreeObject(o);
  return n;
}

static bool
id_of(xmlNodePtr n, int64_t *id)
{
  if (n->type != XML_ELEMENT_NODE || strcmp((const char *)n->name, "ID") != 0)
    return false;
  xmlChar *c = xmlNodeGetContent(n);
  char *end;
  *id = c ? strtoll((const char *)c, &end, 10) : 0;
  bool ok = c && *c && *end == '\0';
  xmlFree(c);
  return ok;
}

int
xmlbody_ids(struct xmlbody *x, const char *list_xpath, int64_t **ids, size_t *n)
{
  xmlNodePtr list = single(x, list_xpath);
  size_t cap = 0;
  *ids = NULL;
  *n = 0;
  if (!list)
    return -EINVAL;
  for (xmlNodePtr c = list->children; c; c = c->next) {
    int64_t id;
    if (!id_of(c, &id))
      continue;
    if (*n == cap) {
      int64_t *p = realloc(*ids, (cap = cap ? cap * 2 : 8) * sizeof *p);
      if (!p)
        return error_set(ENOMEM, "out of memory");
      *ids = p;
    }
    (*ids)[(*n)++] = id;
  }
  return 0;
}

int
xmlbody_id_add(struct xmlbody *x, const char *list_xpath, int64_t id)
{
  xmlNodePtr list = single(x, list_xpath), c, at = NULL;
  char text[32];
  if (!list)
    return -EINVAL;
  for (c = list->children; c; c = c->next) {
    int64_t v;
    if (!id_of(c, &v))
      continue;
    if (v == id)
      return 0;
    if (v > id && !at)
      at = c;
  }
  snprintf(text, sizeof text, "%" PRId64, id);
  xmlNodePtr e = xmlNewDocNode(x->doc, NULL, (const xmlChar *)"ID", (const xmlChar *)text);
  if (!e)
    return error_set(ENOMEM, "out of memory");
  if (at)
    xmlAddPrevSibling(at, e);
  else
    xmlAddChild(list, e);
  return 1;
}

int
xmlbody_id_remove(struct xmlbody *x, const char *list_xpath, int64_t id)
{
  xmlNodePtr list = single(x, list_xpath), c, next;
  int removed = 0;
  if (!list)
    return -EINVAL;
  for (c = list->children; c; c = next) {
    int64_t v;
    next = c->next;
    if (id_of(c, &v) && v == id) {
      xmlUnlinkNode(c);
      xmlFreeNode(c);
      removed++;
    }
  }
  return removed;
}
