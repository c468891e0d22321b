/* ferry: shared between plan.c, plan-*.c (not a public interface). */
#ifndef FERRY_PLAN_INTERNAL_H
#define FERRY_PLAN_INTERNAL_H

#include "migrator/opennebula/jsonbody.h"
#include "migrator/opennebula/plan.h"
#include "migrator/opennebula/xmlbody.h"

/* (Re)compute plan.after and plan.edits from plan.before (plan-edits.c). */
int plan_compute(struct plan *p);
void plan_clear_edits(struct plan *p);
/* "RUNNING", "POWEROFF", ... (plan.c). */
const char *plan_state_name(int state, int lcm_state);
/* "image_pool oid 10 body" into buf (names the object in parse messages). */
const char *plan_row_what(const struct catalog_row *row, enum catalog_column col, char *buf,
                          size_t len);
int plan_note(struct plan *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Load a row into plan.before (once; *index its position). */
int plan_add_row(struct plan *p, enum catalog_kind kind, int64_t id, int64_t seq, size_t *index);

/* ---- plan-disks.c ---- */
int plan_load_inherit(struct plan *p);
int plan_select_disks(struct plan *p, struct xmlbody *vm, int64_t **ids, size_t *n);
int plan_load_disk(struct plan *p, struct xmlbody *vm, int64_t disk_id, struct plan_disk *dk);
int plan_load_owners(struct plan *p);

/* ---- one editable column of one row (plan-doc.c) ---- */

struct doc {
  struct xmlbody *xml;
  struct jsonbody *json;
};

struct ctx {
  struct plan *p;
  struct doc (*docs)[CATALOG_NCOLUMNS];
};

int doc_open(struct doc *d, const struct catalog_row *row, enum catalog_column col);
void doc_close(struct doc *d);
bool doc_loaded(const struct doc *d);
int doc_get(struct doc *d, const char *path, char **value);
char *doc_text(struct doc *d);

size_t plan_find_row(const struct plan *p, enum catalog_kind kind, int64_t id, int64_t seq);
/* Record an edit (old/new copied). */
int plan_add_edit(struct plan *p, size_t row, enum catalog_column col, enum plan_op op,
                  const char *path, const char *old_value, const char *new_value);
/* Set path to value where the element exists ("where present"); no edit when equal. */
int edit_set_if_present(struct ctx *x, size_t row, enum catalog_column col, const char *path,
                        const char *value);
/* Set path (parent/name) to value, adding the element (sorted, as oned's vector attributes)
 * when absent; with value NULL delete it.  No edit when nothing changes. */
int edit_put(struct ctx *x, size_t row, enum catalog_column col, const char *parent,
             const char *name, const char *value);
int edit_delete_if_present(struct ctx *x, size_t row, enum catalog_column col, const char *path);
int edit_id_list(struct ctx *x, size_t row, const char *list, int64_t id, bool add);

/* ---- datastores (plan-inherit.c) ---- */

/* What ferry needs of a datastore body (loaded from a plan row). */
struct plan_ds {
  int64_t id;
  char *name, *tm_mad, *base_path, *clusters; /* clusters: "100" or "0,100" (CLUSTERS/ID) */
  int type;                                   /* 0 image, 1 system, 2 file */
  int disk_type;                              /* Image::DiskType of the datastore */
  struct xmlbody_leaf *tmpl;                  /* /DATASTORE/TEMPLATE */
  size_t n;
};

int plan_ds_parse(const char *body, const char *what, int64_t id, struct plan_ds *ds);
/* A datastore of the plan: its row is loaded into plan.before (once) and parsed. */
int plan_ds_load(struct plan *p, int64_t id, struct plan_ds *ds);
void plan_ds_clear(struct plan_ds *ds);
/* A template value (simple attribute), or NULL. */
const char *plan_ds_attr(const struct plan_ds *ds, const char *name);
/* Is `name` a vector attribute of the template? */
bool plan_ds_is_vector(const struct plan_ds *ds, const char *name);
const char *plan_disk_type_name(int disk_type);

/* The changes Datastore::disk_attribute (and Image::disk_attribute's TYPE) make to a DISK moving
 * from datastore `from` to `to`, as name -> new value (NULL: removed). */
struct attr_change {
  char *name;
  char *old_value; /* NULL: absent */
  char *new_value; /* NULL: removed */
};

struct disk_move {
  struct xmlbody *vm; /* the VM body, to read the DISK */
  int64_t disk_id;
  bool is_volatile;
  bool cdrom_image;      /* the image is a CDROM (TYPE mapping) */
  struct xmlbody *image; /* the image body (NULL: none), to spot image-inherited values */
  const struct plan_ds *from, *to;
  const char *tsys_new; /* the VM's TM_MAD_SYSTEM after the move (NULL: none) */
};

int plan_disk_changes(struct plan *p, const struct disk_move *m, struct attr_change **out,
                      size_t *n);
void plan_attr_changes_free(struct attr_change *c, size_t n);

/* ---- quotas (plan-quota.c) ---- */

int plan_quota_edits(struct ctx *x);

#endif
