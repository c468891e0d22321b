/* ferry: the storage step of a move — what happens to the volumes themselves, beside the
 * catalog edits.  Three kinds (`ferry migrate --storage ...`):
 *
 *   fs        OpenNebula filesystem datastores: a volume is a file DATASTORES/<ds_id>/<volume>
 *             (DATASTORES defaults to /var/lib/one/datastores).  The destination file is created
 *             (sparse, the source's size) for the clone to fill; an existing destination file is
 *             first renamed RENAMED-<volume>-<timestamp>; after convergence the source is renamed
 *             MIGRATED-<volume>-<timestamp>; tags go to a sidecar JSON file <file>.ferry.json
 *             ({"tags":{"nvm":"42","mvts":"1763767045"}}).  A sidecar rather than user xattrs:
 *             it works on every filesystem a datastore lives on (NFS without xattr support, tmpfs
 *             with user xattrs off), survives cp/rsync without -X, and is readable with cat.
 *   exec:CMD  a site hook (StorPool, 3PAR, Ceph...): `sh -c CMD` runs once per action with the
 *             action as one JSON object on stdin (one line), FERRY_ACTION=<action> in its
 *             environment, and answers with its exit code (0 = done) and, optionally, one JSON
 *             object on stdout.  A non-zero exit stops the move; the hook's stderr is quoted in
 *             the message.
 *   none      no storage action (the storage already holds the data at the destination).
 *
 * Actions (the JSON a hook receives; fs records the same objects, plus "path"/"to_path"):
 *   {"action":"create","vm":42,"disk":0,"datastore":101,"volume":"one-10","size":N,
 *    "source":{"datastore":1,"volume":"one-10"}}
 *        reply (optional): {"path":DEST,"source":SRC} — where the clone writes/reads, as a path
 *        or volume URI (a hook that returns no path leaves the orchestration to refuse).
 *   {"action":"rename","vm":42,"disk":0,"datastore":1,"volume":"one-10",
 *    "to":"MIGRATED-one-10-1763767045"}
 *   {"action":"tag","vm":42,"disk":0,"datastore":101,"volume":"one-10",
 *    "tags":{"nvm":"42","mvts":"1763767045"}}          (a null value removes a tag)
 *   {"action":"remove","vm":42,"disk":0,"datastore":101,"volume":"one-10"}
 *
 * Phases: storage_prepare() runs the actions needed before the clone starts (set existing
 * destination aside, create the destination); storage_finalize() those after convergence
 * (rename the source MIGRATED-..., tag destination and source).  Every executed action is
 * written, before and after it runs, to the storage log (set with storage_set_log(), fsynced) so
 * storage_rollback_file() can undo the renames later; storage_abort() undoes a move that failed
 * before the VM ran on the destination.
 */
#ifndef FERRY_STORAGE_H
#define FERRY_STORAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum storage_kind { STORAGE_NONE, STORAGE_FS, STORAGE_EXEC };

struct storage;

/* The default base directory of fs datastores. */
#define STORAGE_DEFAULT_DATASTORES "/var/lib/one/datastores"

/* Parse a --storage value ("none", "fs", "exec:CMD"); 0 or -EINVAL with a message. */
int storage_new(const char *spec, struct storage **out);
void storage_free(struct storage *s);
enum storage_kind storage_get_kind(const struct storage *s);
const char *storage_kind_name(enum storage_kind k);

/* fs: base directory holding one directory per datastore ID. */
void storage_set_datastores(struct storage *s, const char *dir);
/* The <timestamp> in MIGRATED-/RENAMED- names and the mvts tag (default: time of storage_new). */
void storage_set_timestamp(struct storage *s, long long unix_seconds);
/* Where executed actions are logged (usually "<journal>.storage.json"); NULL: not logged. */
void storage_set_log(struct storage *s, const char *path);

/* One disk moving from (src_ds, src_volume) to (dst_ds, dst_volume).  Volumes are names inside
 * their datastore ("one-10", or "42/disk.0" in a system datastore). */
struct storage_disk {
  int vm, disk;
  int src_ds, dst_ds;
  const char *src_volume, *dst_volume;
  uint64_t size; /* 0: fs takes the source file's size */
};

/* Add the actions of one disk to the plan.  fs checks now what it can (the source exists, the
 * destination datastore directory exists, whether a destination file must be set aside):
 * refusals name the path and change nothing. */
int storage_plan_disk(struct storage *s, const struct storage_disk *d);

/* The plan, for --dry-run and --json: one line per action / an array of action objects. */
void storage_print_plan(const struct storage *s, FILE *f);
json_t *storage_plan_json(const struct storage *s);

/* Paths or URIs of a disk's destination and source once prepared: fs paths, or what the hook's
 * create reply said.  NULL when unknown (none, or a hook that returned no path). */
const char *storage_dest_path(const struct storage *s, int vm, int disk);
const char *storage_source_path(const struct storage *s, int vm, int disk);

/* Run the phases.  On failure the actions already done in that phase stay done (and logged):
 * the caller decides between storage_abort() and leaving things for a retry. */
int storage_prepare(struct storage *s);
int storage_finalize(struct storage *s);
/* Undo every executed action in reverse (rename back, remove what was created, restore tags). */
int storage_abort(struct storage *s);

/* Undo what a storage log records (after `ferry migrate --rollback`).  A created destination is
 * never deleted here — the VM may have written to it — it is renamed ROLLEDBACK-<volume>-<ts>
 * (printed on out) so the original names can be restored.  0 or -errno with a message. */
int storage_rollback_file(const char *log_path, FILE *out);

/* fs helpers, exported for the demo and tests. */
int storage_fs_volume_path(const char *datastores, int ds, const char *volume, char **out);

#endif
