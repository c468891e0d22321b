/* ferry: the near-live move of a VM's disks (`ferry migrate --storage fs|exec:`, `ferry demo`).
 *
 *   storage prepare (create the destination; the VM still runs)
 *   -> VM stopped                        (hook: catalog action, or already undeployed)
 *   -> destination clone started         (ferry-nbd --source --map --control, or ferry-fuse
 *                                         --loop; locally or through ssh)
 *   -> VM's disks switched to it          (hook: the catalog edit, journaled)
 *   -> VM resumed                         (hook; skipped with --skip-resume)
 *   -> first read served on destination   (downtime = now - VM stopped)
 *   -> wait for convergence on the control socket, with progress
 *   -> SIGTERM the server (it commits the map)
 *   -> when the VM has not run since it was stopped: the destination compared with the source
 *      (backends/verify.h); a difference fails the move before the source is touched
 *   -> storage finalize (rename/tag source)
 *
 * The catalog is reached only through the hooks, so the same code runs the demo's SQLite world
 * and a real site.  Downtime does not depend on the disk's size: nothing is copied between
 * "stopped" and "first read"; the clone fetches on demand what the VM reads first.
 */
#ifndef FERRY_MOVE_H
#define FERRY_MOVE_H

#include "migrator/storage/storage.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct move_hooks {
  /* Stop the VM, or confirm it is stopped; *was_running says which (for the message). */
  int (*stop_vm)(void *opaque, bool *was_running);
  /* The catalog edit: point the VM's disks at the destination (journaled). */
  int (*switch_disks)(void *opaque);
  /* Start the VM again on the destination (not called with skip_resume). */
  int (*resume_vm)(void *opaque);
  const char *no_resume_reason; /* printed when resume_vm is NULL */
  void *opaque;
};

/* One disk: the clone reads `source` and writes `dest` (paths or volume URIs). */
struct move_disk {
  int64_t disk_id;
  const char *source;
  const char *dest;
};

struct move_options {
  const char *frontend; /* "nbd" (default) or "fuse" */
  const char *ssh_host; /* start the server through `ssh HOST` ($FERRY_SSH overrides ssh) */
  /* NBD over TLS TCP instead of a forwarded unix socket (ferry-nbd only): the clone server of
   * disk N listens on tls_listen's host at its port + N, with --tls-certificates
   * tls_certificates (a directory on the server's host: server-cert.pem, server-key.pem,
   * ca-cert.pem); this host connects to nbds://HOST:PORT+N/ with tls-certificates= the same
   * path here (ca-cert.pem, client-cert.pem, client-key.pem).  HOST 0.0.0.0 or [::] listens on
   * every address and is reached as the ssh host.  The control socket still uses ssh. */
  const char *tls_listen;
  const char *tls_certificates;
  /* The storage step made the destinations just now: their content may go (--new-map, so a
   * block device, which cannot say it reads as zeroes, is not refused). */
  bool new_map;
  const char *workdir;  /* maps, control sockets, pidfiles, server logs (must exist) */
  const char *program;  /* ferry-nbd / ferry-fuse path; NULL: located next to ferry */
  uint64_t rate;        /* hydrator bytes/s (0: unlimited) */
  bool die_with_parent; /* servers get SIGTERM if ferry dies (the demo; never for a real
                           move, where a resumed VM depends on the server) */
  bool skip_resume;
  bool progress; /* bar on a tty stderr, else a plain line every second on out */
  FILE *out;     /* step lines; NULL: quiet */
};

struct move_report {
  double downtime;        /* seconds from "VM stopped" to "first read served on destination" */
  double hydrate_seconds; /* first read -> converged */
  double total_seconds;
  uint64_t size, bytes_copied, bytes_fetched, bytes_skipped;
};

int move_run(struct storage *st, const struct move_disk *disks, size_t n_disks,
             const struct move_options *o, const struct move_hooks *h, struct move_report *rep);

/* The command line that starts the destination server of disk i (what move_run executes;
 * printed by --dry-run).  NULL-terminated, free with move_argv_free().  */
int move_server_argv(const struct move_options *o, const char *program, const struct move_disk *d,
                     char ***argv);
void move_argv_free(char **argv);
/* argv as one shell-quoted line (malloc'd). */
char *move_argv_string(char *const *argv);

#endif
