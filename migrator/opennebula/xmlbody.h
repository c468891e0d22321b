/* ferry: OpenNebula object bodies (the XML in the `body` / `short_body` columns).
 *
 * A body is parsed with libxml2, edited by XPath and serialised back the way oned wrote it:
 * same element order, CDATA kept as CDATA, `<X/>` and `<X></X>` kept as they were, no XML
 * declaration unless the original had one, carriage returns (CRLF inside CDATA) kept as they
 * are.  xmlbody_parse() refuses a body that would not serialise back to the very same bytes, so
 * an edit never changes anything but its target.
 */
#ifndef FERRY_XMLBODY_H
#define FERRY_XMLBODY_H

#include <stddef.h>
#include <stdint.h>

struct xmlbody;

/* Parse `text`; `what` names the body in messages ("vm_pool 43 body"). */
int xmlbody_parse(const char *text, const char *what, struct xmlbody **out);
/* The same without the byte-exact check: for reading only (e.g. what oned serves). */
int xmlbody_parse_lenient(const char *text, const char *what, struct xmlbody **out);
void xmlbody_free(struct xmlbody *b);
/* The body as text (malloc'd), or NULL with an error set. */
char *xmlbody_serialize(struct xmlbody *b);

/* Number of nodes matching xpath (negative on a bad expression). */
int xmlbody_count(struct xmlbody *b, const char *xpath);
/* Text of the single element matching xpath into *value (malloc'd).  Returns 1 when found,
 * 0 when absent (*value = NULL), negative when the xpath matches several nodes. */
int xmlbody_get(struct xmlbody *b, const char *xpath, char **value);
/* Replace the text of the single element matching xpath (CDATA stays CDATA). */
int xmlbody_set(struct xmlbody *b, const char *xpath, const char *value);
/* Add the leaf <name>value</name> (CDATA) under the single element matching parent_xpath,
 * before the first child whose name sorts after `name` (oned keeps a vector attribute's values
 * in a std::map).  1 when added; -EEXIST when the parent has such a child. */
int xmlbody_insert_sorted(struct xmlbody *b, const char *parent_xpath, const char *name,
                          const char *value);
/* Append <name><k1>v1</k1>...</name> (values as CDATA) as the last child of the single element
 * matching parent_xpath (a vector attribute, as Quota::check_quota adds one). */
int xmlbody_append_vector(struct xmlbody *b, const char *parent_xpath, const char *name,
                          const char *const *keys, const char *const *values, size_t n);
/* Remove every element matching xpath; returns how many were removed. */
int xmlbody_delete(struct xmlbody *b, const char *xpath);
/* The leaves under the single element matching xpath: each child element without element
 * children is a simple value (vector NULL); a child with element children is a vector attribute
 * and each of its leaves is listed with vector = its name.  Values are the text content. */
struct xmlbody_leaf {
  char *vector;
  char *name;
  char *value;
};
int xmlbody_leaves(struct xmlbody *b, const char *xpath, struct xmlbody_leaf **out, size_t *n);
void xmlbody_leaves_free(struct xmlbody_leaf *l, size_t n);
/* ID lists (`<IMAGES><ID>10</ID><ID>11</ID></IMAGES>`, kept sorted like oned's std::set). */
int xmlbody_ids(struct xmlbody *b, const char *list_xpath, int64_t **ids, size_t *n);
int xmlbody_id_add(struct xmlbody *b, const char *list_xpath, int64_t id);
int xmlbody_id_remove(struct xmlbody *b, const char *list_xpath, int64_t id);

#endif
