/* ferry: body_json edited in place (see jsonbody.h).
 *
 * The text is scanned into a small tree that remembers where each value and member starts and
 * ends; an edit splices the text and scans it again (bodies are a few KiB).
 */
#include "migrator/opennebula/jsonbody.h"
#include "common/error.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum jtype { J_OBJECT, J_ARRAY, J_STRING, J_NUMBER, J_LITERAL };

struct jmember;

struct jnode {
  enum jtype type;
  size_t start, end; /* the value's bytes: text[start, end) */
  struct jmember *m; /* object members / array items (key NULL) */
  size_t n;
  char *str; /* J_STRING: the decoded value */
};

struct jmember {
  char *key;
  size_t key_start; /* the opening quote of the key */
  struct jnode value;
};

struct jsonbody {
  char *what;
  char *text;
  struct jnode root;
};

enum { MAX_DEPTH = 64 };

/* ---- scanning ---- */

struct scan {
  const char *s;
  size_t pos;
  const char *what;
};

static void
node_clear(struct jnode *n)
{
  for (size_t i = 0; i < n->n; i++) {
    free(n->m[i].key);
    node_clear(&n->m[i].value);
  }
  free(n->m);
  free(n->str);
  memset(n, 0, sizeof *n);
}

static void
skip_ws(struct scan *sc)
{
  while (sc->s[sc->pos] == ' ' || sc->s[sc->pos] == '\t' || sc->s[sc->pos] == '\n'
         || sc->s[sc->pos] == '\r')
    sc->pos++;
}

static int
bad(struct scan *sc, const char *why)
{
  return error_set(EINVAL, "%s: not JSON: %s at byte %zu", sc->what, why, sc->pos);
}

static void
put_utf8(char **w, uint32_t c)
{
  if (c < 0x80)
    *(*w)++ = (char)c;
  else if (c < 0x800) {
    *(*w)++ = (char)(0xC0 | (c >> 6));
    *(*w)++ = (char)(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    *(*w)++ = (char)(0xE0 | (c >> 12));
    *(*w)++ = (char)(0x80 | ((c >> 6) & 0x3F));
    *(*w)++ = (char)(0x80 | (c & 0x3F));
  } else {
    *(*w)++ = (char)(0xF0 | (c >> 18));
    *(*w)++ = (char)(0x80 | ((c >> 12) & 0x3F));
    *(*w)++ = (char)(0x80 | ((c >> 6) & 0x3F));
    *(*w)++ = (char)(0x80 | (c & 0x3F));
  }
}

static int
hex4(const char *p, uint32_t *v)
{
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0)
      return -1;
    *v = *v << 4 | (uint32_t)d;
  }
  return 0;
}

/* A string at sc->pos (the opening quote): decoded into *out. */
static int
scan_string(struct scan *sc, char **out)
{
  const char *s = sc->s;
  size_t i = sc->pos + 1;
  char *buf = malloc(strlen(s + sc->pos) + 1), *w = buf;
  if (!buf)
    return error_set(ENOMEM, "out of memory");
  for (;;) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"')
      break;
    if (c == '\0' || c < 0x20) {
      free(buf);
      sc->pos = i;
      return bad(sc, c ? "control character in a string" : "unterminated string");
    }
    if (c != '\\') {
      *w++ = (char)c;
      i++;
      continue;
    }
    char e = s[i + 1];
    uint32_t u, lo;
    i += 2;
    switch (e) {
    case '"':
      *w++ = '"';
      break;
    case '\\':
      *w++ = '\\';
      break;
    case '/':
      *w++ = '/';
      break;
    case 'b':
      *w++ = '\b';
      break;
    case 'f':
      *w++ = '\f';
      break;
    case 'n':
      *w++ = '\n';
      break;
    case 'r':
      *w++ = '\r';
      break;
    case 't':
      *w++ = '\t';
      break;
    case 'u':
      if (hex4(s + i, &u) < 0)
        goto bad_escape;
      i += 4;
      if (u >= 0xD800 && u < 0xDC00 && s[i] == '\\' && s[i + 1] == 'u' && hex4(s + i + 2, &lo) == 0
          && lo >= 0xDC00 && lo < 0xE000) {
        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        i += 6;
      }
      put_utf8(&w, u);
      break;
    default:
    bad_escape:
      free(buf);
      sc->pos = i;
      return bad(sc, "bad escape");
    }
  }
  *w = '\0';
  sc->pos = i + 1;
  *out = buf;
  return 0;
}

static int scan_value(struct scan *sc, struct jnode *n, int depth);

static int
add_member(struct jnode *n, struct jmember **m)
{
  struct jmember *v = realloc(n->m, (n->n + 1) * sizeof *v);
  if (!v)
    return error_set(ENOMEM, "out of memory");
  n->m = v;
  *m = &n->m[n->n++];
  memset(*m, 0, sizeof **m);
  return 0;
}

static int
scan_container(struct scan *sc, struct jnode *n, int depth)
{
  bool object = sc->s[sc->pos] == '{';
  char close = object ? '}' : ']';
  int r;
  n->type = object ? J_OBJECT : J_ARRAY;
  sc->pos++;
  skip_ws(sc);
  if (sc->s[sc->pos] == close) {
    sc->pos++;
    return 0;
  }
  for (;;) {
    struct jmember *m = NULL;
    if ((r = add_member(n, &m)) < 0)
      return r;
    skip_ws(sc);
    if (object) {
      if (sc->s[sc->pos] != '"')
        return bad(sc, "expected a member name");
      m->key_start = sc->pos;
      if ((r = scan_string(sc, &m->key)) < 0)
        return r;
      skip_ws(sc);
      if (sc->s[sc->pos] != ':')
        return bad(sc, "expected ':'");
      sc->pos++;
    } else
      m->key_start = sc->pos;
    if ((r = scan_value(sc, &m->value, depth + 1)) < 0)
      return r;
    skip_ws(sc);
    if (sc->s[sc->pos] == ',') {
      sc->pos++;
      continue;
    }
    if (sc->s[sc->pos] != close)
      return bad(sc, object ? "expected ',' or '}'" : "expected ',' or ']'");
    sc->pos++;
    return 0;
  }
}

static int
scan_value(struct scan *sc, struct jnode *n, int depth)
{
  int r = 0;
  if (depth > MAX_DEPTH)
    return bad(sc, "nested too deeply");
  skip_ws(sc);
  n->start = sc->pos;
  char c = sc->s[sc->pos];
  if (c == '{' || c == '[')
    r = scan_container(sc, n, depth);
  else if (c == '"') {
    n->type = J_STRING;
    r = scan_string(sc, &n->str);
  } else if (c == '-' || (c >= '0' && c <= '9')) {
    n->type = J_NUMBER;
    char *end;
    strtod(sc->s + sc->pos, &end);
    sc->pos = (size_t)(end - sc->s);
  } else if (!strncmp(sc->s + sc->pos, "true", 4) || !strncmp(sc->s + sc->pos, "null", 4)) {
    n->type = J_LITERAL;
    sc->pos += 4;
  } else if (!strncmp(sc->s + sc->pos, "false", 5)) {
    n->type = J_LITERAL;
    sc->pos += 5;
  } else
    r = bad(sc, "unexpected character");
  n->end = sc->pos;
  return r;
}

static int
rescan(struct jsonbody *j)
{
  struct scan sc = { .s = j->text, .pos = 0, .what = j->what };
  node_clear(&j->root);
  int r = scan_value(&sc, &j->root, 0);
  if (r == 0) {
    skip_ws(&sc);
    if (sc.s[sc.pos])
      r = bad(&sc, "trailing characters");
  }
  return r;
}

int
jsonbody_parse(const char *text, const char *what, struct jsonbody **out)
{
  struct jsonbody *j = calloc(1, sizeof *j);
  int r;
  *out = NULL;
  if (!j || !(j->what = strdup(what)) || !(j->text = strdup(text ? text : ""))) {
    jsonbody_free(j);
    return error_set(ENOMEM, "out of memory");
  }
  if ((r = rescan(j)) < 0) {
    jsonbody_free(j);
    return r;
  }
  *out = j;
  return 0;
}

void
jsonbody_free(struct jsonbody *j)
{
  if (!j)
    return;
  node_clear(&j->root);
  free(j->what);
  free(j->text);
  free(j);
}

const char *
jsonbody_text(const struct jsonbody *j)
{
  return j->text;
}

/* ---- paths ---- */

static struct jmember *
member(struct jnode *obj, const char *key)
{
  if (obj->type != J_OBJECT)
    return NULL;
  for (size_t i = 0; i < obj->n; i++)
    if (strcmp(obj->m[i].key, key) == 0)
      return &obj->m[i];
  return NULL;
}

/* The text of a scalar (string decoded, number as written) into buf. */
static bool
scalar_text(const struct jsonbody *j, const struct jnode *n, char *buf, size_t len)
{
  if (n->type == J_STRING)
    snprintf(buf, len, "%s", n->str);
  else if (n->type == J_NUMBER)
    snprintf(buf, len, "%.*s", (int)(n->end - n->start), j->text + n->start);
  else
    return false;
  return true;
}

/* An element step applied to a value: an array picks its one item matching the predicate (or
 * its only item), an object must match the predicate.  NULL when nothing matches; *ambiguous
 * when several do. */
static struct jnode *
pick(const struct jsonbody *j, struct jnode *v, const char *pkey, const char *pval, size_t *n)
{
  char t[128];
  *n = 0;
  if (v->type == J_ARRAY) {
    struct jnode *match = NULL;
    for (size_t i = 0; i < v->n; i++) {
      struct jnode *e = &v->m[i].value;
      struct jmember *k = pkey ? member(e, pkey) : NULL;
      if (!pkey || (k && scalar_text(j, &k->value, t, sizeof t) && !strcmp(t, pval))) {
        match = e;
        (*n)++;
      }
    }
    return *n == 1 ? match : NULL;
  }
  if (pkey) {
    struct jmember *k = member(v, pkey);
    if (!k || !scalar_text(j, &k->value, t, sizeof t) || strcmp(t, pval))
      return NULL;
  }
  *n = 1;
  return v;
}

/* Walk path.  The last step names a member of *obj (index *idx) when the result is 1; with
 * `last_node` the last step is applied like the others and *node is its value.  0: absent. */
static int
walk(struct jsonbody *j, const char *path, bool last_node, struct jnode **obj, size_t *idx,
     struct jnode **node)
{
  char *copy = strdup(path), *save = NULL, *step, *next;
  struct jnode *cur = &j->root;
  int r = 0;
  if (!copy)
    return error_set(ENOMEM, "out of memory");
  step = strtok_r(copy, "/", &save);
  /* The root may be {"VM": {...}} or the VM object itself. */
  if (step && !member(cur, step))
    step = strtok_r(NULL, "/", &save);
  for (; step; step = next) {
    next = strtok_r(NULL, "/", &save);
    char *pkey = NULL, *pval = NULL, *pred = strchr(step, '[');
    if (pred) {
      char *eq = strchr(pred, '='), *close = strchr(pred, ']');
      if (!eq || !close || close < eq) {
        r = error_set(EINVAL, "%s: bad path %s", j->what, path);
        break;
      }
      *pred = *eq = *close = '\0';
      pkey = pred + 1;
      pval = eq + 1;
    }
    struct jmember *m = member(cur, step);
    if (!m)
      break;
    if (!next && !last_node) {
      if (pkey) {
        r = error_set(EINVAL, "%s: bad path %s", j->what, path);
        break;
      }
      *obj = cur;
      *idx = (size_t)(m - cur->m);
      r = 1;
      break;
    }
    size_t n;
    struct jnode *v = pick(j, &m->value, pkey, pval, &n);
    if (n > 1) {
      r = error_set(EINVAL, "%s: %s matches %zu nodes", j->what, path, n);
      break;
    }
    if (!v)
      break;
    if (!next) {
      *node = v;
      r = 1;
      break;
    }
    cur = v;
  }
  free(copy);
  return r;
}

/* ---- edits ---- */

static int
splice(struct jsonbody *j, size_t from, size_t to, const char *with)
{
  size_t len = strlen(j->text), add = strlen(with);
  char *t = malloc(len - (to - from) + add + 1);
  if (!t)
    return error_set(ENOMEM, "out of memory");
  memcpy(t, j->text, from);
  memcpy(t + from, with, add);
  memcpy(t + from + add, j->text + to, len - to + 1);
  free(j->text);
  j->text = t;
  return rescan(j);
}

/* `s` as a JSON string the way oned's one_util::escape_json writes it (malloc'd). */
static char *
quote(const char *s)
{
  char *out = malloc(strlen(s) * 6 + 3), *w = out;
  if (!out)
    return NULL;
  *w++ = '"';
  for (; *s; s++) {
    const char *e = NULL;
    switch (*s) {
    case '\\':
      e = "\\\\";
      break;
    case '"':
      e = "\\\"";
      break;
    case '/':
      e = "\\/";
      break;
    case '\b':
      e = "\\b";
      break;
    case '\f':
      e = "\\f";
      break;
    case '\n':
      e = "\\n";
      break;
    case '\r':
      e = "\\r";
      break;
    case '\t':
      e = "\\t";
      break;
    default:
      break;
    }
    if (e) {
      strcpy(w, e);
      w += strlen(e);
    } else if ((unsigned char)*s < 0x20) /* oned writes these raw, which is not JSON */
      w += sprintf(w, "\\u%04x", (unsigned char)*s);
    else
      *w++ = *s;
  }
  *w++ = '"';
  *w = '\0';
  return out;
}

int
jsonbody_get(struct jsonbody *j, const char *path, char **value)
{
  struct jnode *obj = NULL;
  size_t idx = 0;
  char t[64];
  *value = NULL;
  int r = walk(j, path, false, &obj, &idx, NULL);
  if (r <= 0)
    return r;
  struct jnode *v = &obj->m[idx].value;
  if (v->type == J_STRING)
    *value = strdup(v->str);
  else if (v->type == J_NUMBER && v->end - v->start < sizeof t && scalar_text(j, v, t, sizeof t))
    *value = strdup(t);
  else
    return error_set(EINVAL, "%s: %s is not a scalar", j->what, path);
  return *value ? 1 : error_set(ENOMEM, "out of memory");
}

static bool
is_number(const char *s)
{
  char *end;
  if (!*s)
    return false;
  strtod(s, &end);
  return *end == '\0' && (s[0] == '-' || (s[0] >= '0' && s[0] <= '9'));
}

int
jsonbody_set(struct jsonbody *j, const char *path, const char *value)
{
  struct jnode *obj = NULL;
  size_t idx = 0;
  int r = walk(j, path, false, &obj, &idx, NULL);
  if (r <= 0)
    return r < 0 ? r : error_set(ENOENT, "%s: no %s", j->what, path);
  struct jnode *v = &obj->m[idx].value;
  if (v->type != J_STRING && v->type != J_NUMBER)
    return error_set(EINVAL, "%s: %s is not a scalar", j->what, path);
  char *text = v->type == J_NUMBER && is_number(value) ? strdup(value) : quote(value);
  if (!text)
    return error_set(ENOMEM, "out of memory");
  r = splice(j, v->start, v->end, text);
  free(text);
  return r;
}

int
jsonbody_insert_sorted(struct jsonbody *j, const char *parent_path, const char *name,
                       const char *value)
{
  struct jnode *obj = NULL;
  int r = walk(j, parent_path, true, NULL, NULL, &obj);
  if (r <= 0)
    return r < 0 ? r : error_set(ENOENT, "%s: no %s", j->what, parent_path);
  if (obj->type != J_OBJECT)
    return error_set(EINVAL, "%s: %s is not an object", j->what, parent_path);
  if (member(obj, name))
    return error_set(EEXIST, "%s: %s/%s exists already", j->what, parent_path, name);
  /* Separators as the object already writes them (oned: `"K": "v"` joined by `,`). */
  char colon[8] = ": ", comma[8] = ",";
  if (obj->n) {
    const struct jmember *m = &obj->m[0];
    size_t a = m->key_start + 1;
    while (j->text[a] != '"')
      a += j->text[a] == '\\' ? 2 : 1;
    snprintf(colon, sizeof colon, "%.*s", (int)(m->value.start - a - 1), j->text + a + 1);
    if (obj->n > 1)
      snprintf(comma, sizeof comma, "%.*s", (int)(obj->m[1].key_start - m->value.end),
               j->text + m->value.end);
  }
  size_t at = (size_t)-1;
  bool before = false;
  for (size_t i = 0; i < obj->n && at == (size_t)-1; i++)
    if (strcmp(obj->m[i].key, name) > 0) {
      at = obj->m[i].key_start;
      before = true;
    }
  if (at == (size_t)-1)
    at = obj->n ? obj->m[obj->n - 1].value.end : obj->start + 1;
  char *k = quote(name), *v = quote(value), *text = NULL;
  if (k && v
      && asprintf(&text, "%s%s%s%s%s", !before && obj->n ? comma : "", k, colon, v,
                  before ? comma : "")
             < 0)
    text = NULL;
  r = text ? splice(j, at, at, text) : error_set(ENOMEM, "out of memory");
  free(k);
  free(v);
  free(text);
  return r < 0 ? r : 1;
}

int
jsonbody_delete(struct jsonbody *j, const char *path)
{
  struct jnode *obj = NULL;
  size_t idx = 0;
  int r = walk(j, path, false, &obj, &idx, NULL);
  if (r <= 0)
    return r;
  size_t from, to;
  if (obj->n == 1) {
    from = obj->m[0].key_start;
    to = obj->m[0].value.end;
  } else if (idx + 1 < obj->n) { /* the member and the separator after it */
    from = obj->m[idx].key_start;
    to = obj->m[idx + 1].key_start;
  } else { /* the last one: the separator before it and the member */
    from = obj->m[idx - 1].value.end;
    to = obj->m[idx].value.end;
  }
  r = splice(j, from, to, "");
  return r < 0 ? r : 1;
}
