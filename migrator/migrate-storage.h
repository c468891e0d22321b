/* ferry: `ferry migrate --storage fs|exec:CMD` — the storage step and the near-live move
 * (move.h) driven by a catalog plan (plan.h).  `ferry demo` runs the very same function.
 *
 * Volumes of a disk, for fs datastores (OpenNebula's shared/qcow2 layout):
 *   persistent image disk:        <image DS>/<basename of SOURCE>  ->  <dest image DS>/same
 *   non-persistent (CLONE=YES):   <system DS>/<vm>/disk.<id>        ->  <dest system DS>/same
 * exec hooks receive the same datastore IDs and volume names.
 *
 * The storage log is "<journal>.storage.json" (the catalog journal has no place for storage
 * actions); `ferry migrate --rollback JOURNAL` undoes it after the catalog rollback.
 */
#ifndef FERRY_MIGRATE_STORAGE_H
#define FERRY_MIGRATE_STORAGE_H

#include "migrator/move.h"
#include "migrator/opennebula/plan.h"

#include <stdbool.h>
#include <stdio.h>

struct migrate_storage_options {
  const char *storage;    /* "fs" or "exec:CMD" */
  const char *datastores; /* fs base directory (NULL: /var/lib/one/datastores) */
  const char *journal;    /* the catalog journal; the storage log goes beside it */
  const char *workdir;    /* maps, sockets, logs (NULL: "<journal>.d") */
  const char *frontend;   /* "nbd" (default) or "fuse" */
  const char *ssh_host;   /* start the destination server through ssh */
  const char *tls_listen, *tls_certificates; /* NBD over TLS TCP (move_options) */
  const char *source_uri; /* the clone reads this instead of the source volume (demo: NBD) */
  long long timestamp;    /* MIGRATED-/RENAMED- names (0: now) */
  bool dry_run, skip_resume, progress;
  bool die_with_parent;   /* demo: servers end with ferry (move_options) */
  FILE *out;              /* step lines (NULL: quiet) */
  /* A RUNNING VM whose qemu monitor is this QMP socket: its disks move live (move-live.h,
   * device "virtio-disk<DISK_ID>", libvirt's alias), no stop; the catalog switch follows
   * the pivots.  NULL: the near-live move. */
  const char *live_qmp;
  void (*on_switched)(void *opaque, const char *image); /* live: see move-live.h */
  void *opaque;
};

/* Plan the storage actions of p's disks; with dry_run print them (and the server command
 * lines) and stop; else run the move (the catalog switch happens inside, via plan_apply).
 * 0 or -errno with a message. */
int migrate_storage(struct plan *p, const struct migrate_storage_options *o,
                    struct move_report *rep);

/* Undeploy the VM through oned (xmlrpc catalogs: one.vm.action undeploy), wait until oned
 * reports it UNDEPLOYED, then rebuild *p: undeploy rewrote the VM's rows, and the switch only
 * writes rows that still hold the images it planned from. */
int migrate_undeploy(struct plan *p);

/* The storage log that belongs to a journal (malloc'd "<journal>.storage.json"). */
char *migrate_storage_log_path(const char *journal);
/* After `--rollback JOURNAL`: undo the storage actions when the journal has a storage log
 * (0 when it has none). */
int migrate_storage_rollback(const char *journal, FILE *out);

#endif
