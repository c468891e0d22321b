/* ferry: the plan of a move — every catalog edit, computed before anything is written.
 *
 * A move runs in three steps, and a storage step fits between the first two:
 *   plan_build()    read the catalog, check the request, compute the edits (read-only);
 *   (storage step)  copy/rename volumes; may call plan_set_disk_source() when the volume's
 *                   name changes on the destination, which recomputes the edits;
 *   plan_apply()    journal (fsynced) then the switch in one transaction (see catalog.h).
 * The edits are those of shared/opennebula/README.md: DISK[DISK_ID=N] DATASTORE/DATASTORE_ID/
 * CLUSTER_ID (+ TM_MAD, SOURCE when they differ), the last history record's DS_ID (history row
 * and the VM body's embedded copy), USER_TEMPLATE SCHED_DS_REQUIREMENTS/SCHED_REQUIREMENTS
 * removed, short_body and 6.10's body_json kept in step, persistent images and the datastores'
 * IMAGES lists; a non-persistent image moves only when no VM left on its datastore uses it.
 */
#ifndef FERRY_PLAN_H
#define FERRY_PLAN_H

#include "migrator/opennebula/catalog.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct plan_request {
  int64_t vm_id;
  const int64_t *disk_ids; /* NULL / 0: every image-backed disk */
  size_t n_disk_ids;
  int64_t to_cluster;          /* -1: the cluster holding both datastores below */
  int64_t to_datastore;        /* -1: the target cluster's only image datastore */
  int64_t to_system_datastore; /* -1: the target cluster's only system datastore */
  bool force;                  /* allow a RUNNING VM (metadata switch under a live VM) */
  bool storage_moves_running;  /* the storage step stops/resumes a RUNNING VM itself */
  /* Also point /VM/TEMPLATE/AUTOMATIC_REQUIREMENTS (CLUSTER_ID = N) and
   * AUTOMATIC_DS_REQUIREMENTS ("CLUSTERS/ID" @> N) at the target cluster: oned recomputes
   * them on create, migrate and release, not on resume.  Opt-in (--automatic-requirements):
   * the manual procedures ferry reproduces leave them alone. */
  bool automatic_requirements;
};

enum plan_op { PLAN_SET, PLAN_DELETE, PLAN_ID_ADD, PLAN_ID_REMOVE };

struct plan_edit {
  size_t row; /* index into plan.before / plan.after */
  enum catalog_column column;
  enum plan_op op;
  char *path;      /* XPath; for body_json the same path over the JSON tree */
  char *old_value; /* NULL: absent */
  char *new_value; /* NULL: deleted */
};

/* What the storage step needs to know about each moving disk. */
struct plan_disk {
  int64_t disk_id;
  int64_t image_id; /* -1: none */
  bool persistent;
  bool image_moves; /* the image row moves to the destination datastore too */
  int64_t src_datastore, dst_datastore;
  char *source;     /* SOURCE now */
  char *new_source; /* SOURCE after the move; NULL: unchanged */
  char *src_tm_mad, *dst_tm_mad;
  char *src_base_path, *dst_base_path;
  uint64_t size_mb;
};

struct plan {
  struct catalog *catalog;
  struct plan_request req;
  int64_t *req_disks; /* owned copy of req.disk_ids */
  int64_t vm_id;
  char *vm_name;
  int state, lcm_state;
  int64_t cluster;
  char *cluster_name;
  int64_t datastore, system_datastore;
  char *datastore_name, *system_datastore_name;
  struct plan_disk *disks;
  size_t n_disks;
  struct catalog_row *before, *after; /* every row the plan may touch */
  size_t n_rows;
  struct plan_edit *edits;
  size_t n_edits;
  char **notes; /* decisions worth printing ("image 10 stays: used by VM 42") */
  size_t n_notes;
};

/* Read-only: loads rows, checks the request (refusals set a message naming the problem). */
int plan_build(struct catalog *c, const struct plan_request *req, struct plan **out);
void plan_free(struct plan *p);
/* The move is already done: nothing to edit. */
bool plan_is_noop(const struct plan *p);
bool plan_row_touched(const struct plan *p, size_t row);
/* Name the destination volume of a disk (storage step); recomputes the edits. */
int plan_set_disk_source(struct plan *p, int64_t disk_id, const char *new_source);

/* Human-readable plan (every edit with old and new value), or one JSON object. */
void plan_print(const struct plan *p, FILE *f);
/* The edits as a JSON array (jansson json_t *, caller decrefs). */
void *plan_edits_json(const struct plan *p);

/* Journal to `journal_path` (fsynced, file and directory), then the switch.  The journal
 * names the rows' before- and after-images; journal_rollback() undoes the switch. */
int plan_apply(struct plan *p, const char *journal_path);

#endif
