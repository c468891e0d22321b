/* ferry: the plan of a move — every catalog edit, computed before anything is written.
 *
 * A move runs in three steps, and a storage step fits between the first two:
 *   plan_build()    read the catalog, check the request, compute the edits (read-only);
 *   (storage step)  copy/rename volumes; may call plan_set_disk_source() when the volume's
 *                   name changes on the destination, which recomputes the edits;
 *   plan_apply()    journal (fsynced) then the switch in one transaction (see catalog.h).
 * The edits are those of shared/opennebula/README.md, made the way oned itself would fill the
 * moved DISKs (docs/migrate.md, /work/notes/opennebula-source.md): every attribute
 * Datastore::disk_attribute copies (DATASTORE, DATASTORE_ID, CLUSTER_ID, TM_MAD, CLONE_TARGET,
 * LN_TARGET, INHERIT_DATASTORE_ATTR values, TYPE/DISK_TYPE) recomputed for the destination,
 * SOURCE following the destination's naming, volatile disks with the system datastore, the
 * VM's TM_MAD_SYSTEM, the last history record's DS_ID (history row and the VM body's embedded
 * copy), USER_TEMPLATE SCHED_DS_REQUIREMENTS/SCHED_REQUIREMENTS removed, short_body and 6.10's
 * body_json kept in step, persistent images and the datastores' IMAGES lists, and the owners'
 * datastore quota usage; a non-persistent image moves only when no VM left on its datastore
 * uses it.
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
  /* A POWEROFF VM is undeployed through oned before the switch (xmlrpc catalogs): resuming a
   * powered-off VM restarts it on its old host with a copy of the last history record
   * (LifeCycleManager::trigger_restart), so a POWEROFF VM is refused otherwise. */
  bool undeploys_poweroff;
  /* Also point /VM/TEMPLATE/AUTOMATIC_REQUIREMENTS (CLUSTER_ID = N),
   * AUTOMATIC_DS_REQUIREMENTS ("CLUSTERS/ID" @> N, TM_MAD = "...") and
   * AUTOMATIC_NIC_REQUIREMENTS at the target now.  oned recomputes them itself when an
   * UNDEPLOYED or STOPPED VM is resumed (DispatchManager::resume); opt-in for the VM that is
   * not resumed that way (--automatic-requirements). */
  bool automatic_requirements;
  /* oned.conf to read INHERIT_DATASTORE_ATTR from (NULL: /etc/one/oned.conf when readable;
   * xmlrpc catalogs ask oned). */
  const char *oned_conf;
};

enum plan_op { PLAN_SET, PLAN_DELETE, PLAN_ID_ADD, PLAN_ID_REMOVE, PLAN_INSERT };

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
  bool is_volatile; /* TYPE fs/swap: moves with the system datastore, like a CLONE=YES disk */
  bool image_moves; /* the image row moves to the destination datastore too */
  int64_t src_datastore, dst_datastore; /* image datastores (volatile: system datastores) */
  char *source;                         /* SOURCE now */
  char *new_source;   /* SOURCE after the move; NULL: unchanged (computed by plan_compute) */
  char *given_source; /* named by the storage step (plan_set_disk_source); wins */
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
  int64_t src_system_datastore; /* of the last history record (-1: none) */
  /* INHERIT_DATASTORE_ATTR as oned uses it, and where ferry read it. */
  char **inherit;
  size_t n_inherit;
  char *inherit_source;
  bool vectors_inherited; /* 6.0+: vector attributes are inherited value by value */
  int64_t vm_uid, vm_gid;
};

/* Read-only: loads rows, checks the request (refusals set a message naming the problem). */
int plan_build(struct catalog *c, const struct plan_request *req, struct plan **out);
void plan_free(struct plan *p);
/* The move is already done: nothing to edit. */
bool plan_is_noop(const struct plan *p);
bool plan_row_touched(const struct plan *p, size_t row);
/* Name the destination volume of a disk (its new SOURCE; storage step); recomputes the edits. */
int plan_set_disk_source(struct plan *p, int64_t disk_id, const char *new_source);

/* Human-readable plan (every edit with old and new value), or one JSON object. */
void plan_print(const struct plan *p, FILE *f);
/* The edits as a JSON array (jansson json_t *, caller decrefs). */
void *plan_edits_json(const struct plan *p);

/* Journal to `journal_path` (fsynced, file and directory), then the switch.  The journal
 * names the rows' before- and after-images; journal_rollback() undoes the switch. */
int plan_apply(struct plan *p, const char *journal_path);

#endif
