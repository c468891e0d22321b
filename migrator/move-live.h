/* ferry: the live move of a running guest's disk (`ferry live-move`, and `ferry demo` and
 * `ferry migrate` for a running VM): the near-live move's sibling, with the guest's own
 * hypervisor in the loop through QMP.
 *
 *   inspect the device (hypervisor/live.h) -> DEST created sparse / checked
 *   -> clone server started on the image, hydrator paused (clone-server.h)
 *   -> switch: stop, the device onto the clone export, cont     (the pause)
 *   -> hydrator resumed; wait for convergence (progress; a server that dies is restarted
 *      on its map, qemu's nbd client reconnects meanwhile)
 *   -> pivot: the device onto DEST; clone server stopped (map committed)
 *   -> verify through QMP: the disk is DEST, nothing of ferry or of the old image is open.
 *
 * The workdir (default "<DEST>.ferry-live") holds state.json (the phase and everything
 * --resume needs), the clone server's files and a lock.  Killed at any point, the guest keeps
 * running (on its image, or on the clone whose server outlives ferry), and
 * live_move_resume() finishes from what QMP shows.  On success the workdir is removed.
 */
#ifndef FERRY_MOVE_LIVE_H
#define FERRY_MOVE_LIVE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct live_move_options {
  const char *qmp;      /* the guest's QMP socket */
  const char *device;   /* qdev id, -drive id or node name */
  const char *dest;     /* DEST path (created when missing) */
  const char *workdir;  /* NULL: "<DEST>.ferry-live" */
  uint64_t region_size; /* 0: the clone's default */
  uint64_t rate;        /* hydrator bytes/s, 0: unlimited */
  int reconnect_delay;  /* seconds qemu holds I/O while the clone server is away (0: 300) */
  bool progress;        /* bar on a tty stderr, else a line a second on out */
  FILE *out;            /* step lines; NULL: quiet */
  const char *program;  /* ferry-nbd; NULL: located next to ferry */
  /* Called once the guest runs on the clone: from then on nothing writes the old image
   * (the demo hashes it here and again at the end).  May be NULL. */
  void (*on_switched)(void *opaque, const char *image);
  void *opaque;
};

struct live_move_report {
  double paused_seconds;    /* stop -> cont at the switch */
  double pivot_seconds;     /* the reopen onto DEST (I/O drained, CPUs running) */
  double converged_seconds; /* switch -> converged */
  double total_seconds;     /* of this run */
  char switched_at[40];     /* ISO 8601 UTC */
  uint64_t size, bytes_copied, bytes_fetched, bytes_skipped;
  unsigned server_restarts;
  char final_image[4096];
  char workdir[4096];
};

/* 0 only when the guest runs on DEST with ferry out of its I/O path (verified). */
int live_move(const struct live_move_options *o, struct live_move_report *rep);
/* Finish the move recorded in workdir; o gives out and progress only (may be NULL). */
int live_move_resume(const char *workdir, const struct live_move_options *o,
                     struct live_move_report *rep);

#endif
