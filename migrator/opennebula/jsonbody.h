/* ferry: vm_pool.body_json (OpenNebula 6.10+), edited in place.
 *
 * oned writes body_json with its own layout (VirtualMachine::to_json: `"KEY": "value"` members
 * joined by `,`, `[ ` arrays, `\/` escapes) that no JSON library reproduces, so the text is not
 * re-serialised: an edit replaces, removes or inserts exactly the bytes of one member and every
 * other byte stays as it was.  New strings are escaped the way oned's one_util::escape_json does.
 *
 * Paths are the XPaths of the body over the JSON tree: "/VM/TEMPLATE/DISK[DISK_ID=1]/SIZE".  The
 * document is {"VM": {...}} (or the VM object itself); an array stands for a repeated element
 * and a [KEY=VALUE] predicate picks its item; a leaf is a string (a number stays a number).
 */
#ifndef FERRY_JSONBODY_H
#define FERRY_JSONBODY_H

struct jsonbody;

/* Parse `text` (strict JSON); `what` names it in messages ("vm_pool oid 42 body_json"). */
int jsonbody_parse(const char *text, const char *what, struct jsonbody **out);
void jsonbody_free(struct jsonbody *j);
/* The current text (owned by j, valid until the next edit). */
const char *jsonbody_text(const struct jsonbody *j);

/* The scalar at path into *value (malloc'd, string unescaped): 1 found, 0 absent, negative on
 * an ambiguous path or a non-scalar. */
int jsonbody_get(struct jsonbody *j, const char *path, char **value);
/* Replace the scalar at path (a string stays a string, a number a number when `value` is one). */
int jsonbody_set(struct jsonbody *j, const char *path, const char *value);
/* Add the string member `name` to the object at parent_path, before the first member whose name
 * sorts after it (oned's std::map order).  1 when added, -EEXIST when present. */
int jsonbody_insert_sorted(struct jsonbody *j, const char *parent_path, const char *name,
                           const char *value);
/* Remove the member at path: 1 removed, 0 absent. */
int jsonbody_delete(struct jsonbody *j, const char *path);

#endif
