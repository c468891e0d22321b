/* ferry: the live switch of a running guest's disk, through QMP (see docs/live-move.md).
 *
 * A guest disk in qemu is a device (virtio-blk, scsi-hd, ...) on a *format* node (raw or
 * qcow2) over a *protocol* node (file, host_device, nbd) that holds the image's bytes.  ferry
 * moves the protocol layer only, so a clone copies the image file's bytes and qemu keeps
 * decoding qcow2 on top:
 *
 *   switch:  blockdev-add an nbd node on the clone export (reconnect-delay, open-timeout)
 *            stop                          qemu drains and flushes the guest's I/O
 *            move the device onto the nbd node:
 *              -blockdev disks: blockdev-reopen of the format node with "file" = nbd node
 *              -drive disks (auto-named "#blockN" nodes, which reopen refuses): a raw node
 *              over the nbd node and blockdev-mirror sync=none, block-job-complete at READY
 *            cont                          the pause is stop -> cont
 *            blockdev-del the old protocol node (qemu lets go of the old image)
 *   pivot:   blockdev-add a file/host_device node on DEST, blockdev-reopen onto it (qemu
 *            drains the node meanwhile: no stop), blockdev-del the nbd node.
 *
 * Any failure before cont moves the device back and resumes the guest (only when ferry
 * paused it): a guest is never left paused, nor on a half-built clone.
 */
#ifndef FERRY_LIVE_H
#define FERRY_LIVE_H

#include "hypervisor/qmp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A guest disk as QMP describes it. */
struct live_disk {
  char *device;          /* as the caller named it: qdev id, -drive id or node name */
  char *qdev;            /* "/machine/peripheral/vd0/virtio-backend" ("" for none) */
  char *format_node;     /* the device's root node */
  char *format_driver;   /* "raw" or "qcow2" */
  bool format_named;     /* a user-given node name (reopen), not qemu's "#blockN" (mirror) */
  char *protocol_node;   /* the format node's "file" child */
  char *protocol_driver; /* "file", "host_device", "nbd" */
  char *image;           /* the protocol node's filename: a path or an nbd:// URI */
  uint64_t virtual_size; /* what the guest sees */
  uint64_t image_size;   /* bytes of the image (the protocol node's size) */
  uint64_t cluster_size; /* qcow2 (0 for raw) */
  bool read_only, cache_direct, cache_no_flush;
  char *detect_zeroes; /* "off", "on", "unmap" */
};

/* Find device (a qdev id such as "vd0", a qdev path, a -drive id or a node name) and
 * describe its disk.  Refuses, with a message naming the device, what ferry cannot move:
 * no medium, a filter above the format node, a format other than raw/qcow2, a backing file
 * (named in the message), a qcow2 external data file, a protocol node whose image is not a
 * plain file/device/NBD export.  0 or -errno (-ENODEV for an unknown device, listing the
 * devices there are). */
int live_inspect(struct qmp *q, const char *device, struct live_disk *d);
void live_disk_free(struct live_disk *d);

/* qemu's run state ("running", "paused", "postmigrate", ...) into status. */
int live_run_state(struct qmp *q, char *status, size_t len);

/* The node names ferry adds for one move; tag makes them unique (<= 16 characters). */
struct live_nodes {
  char nbd[32];    /* the clone export */
  char format[32]; /* the raw node over it (-drive disks only) */
  char dest[32];   /* DEST at the pivot */
};
void live_nodes_init(struct live_nodes *n, const char *tag);

struct live_nbd {
  const char *socket;  /* the clone server's unix socket */
  int reconnect_delay; /* seconds qemu holds I/O while the server is away (restart) */
  int open_timeout;    /* seconds qemu retries the first connection */
};

/* What only the caller can do, for the switch (each may be NULL):
 *   before_move: called while the guest is paused, just before the device moves; < 0 aborts
 *                the switch (e.g. the clone server died);
 *   export_up:   make sure the clone server serves again before the nbd node is detached:
 *                qemu's blockdev-del of an nbd node whose server is gone blocks qemu's main
 *                loop until it reconnects or reconnect-delay expires. */
typedef int (*live_check_fn)(void *opaque);
struct live_hooks {
  live_check_fn before_move, export_up;
  void *opaque;
};

/* The switch, as above.  The guest must be running (-EBUSY otherwise: "paused by someone
 * else").  On success d describes the disk on the clone (protocol node n->nbd) and
 * *paused_seconds is stop -> cont; on failure the disk is back on its original node and
 * the guest runs (unless resuming it failed too: then the message says so). */
int live_switch(struct qmp *q, struct live_disk *d, const struct live_nodes *n,
                const struct live_nbd *nbd, const struct live_hooks *h, double *paused_seconds);

/* The pivot home, as above: the disk moves from the nbd node onto dest (a path).  On
 * success d describes the disk on DEST; *drain_seconds is how long the reopen took (the
 * guest's I/O waits that long, its CPUs run). */
int live_pivot(struct qmp *q, struct live_disk *d, const struct live_nodes *n, const char *dest,
               double *drain_seconds);

/* Detach node if it exists and nothing uses it any more (0 also when it is gone). */
int live_detach(struct qmp *q, const char *node);

/* Check through QMP that device's image is dest (and that no node of qemu refers to any of
 * the paths in forbidden: the old image, the clone's socket); with qemu's pid known (the
 * QMP socket's peer) also that qemu has no file descriptor open on them.  0, or -EIO with
 * a message saying what is still there. */
int live_verify(struct qmp *q, const char *device, const char *dest, const char *const *forbidden,
                size_t n_forbidden);

#endif
