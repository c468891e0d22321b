/* ferry-fuse: attach and detach a loop device over a file (LOOP_CTL_GET_FREE + LOOP_CONFIGURE).
 *
 * The file here is MOUNTPOINT/disk, served by this very process: every open, read and close
 * the kernel's loop driver does on it is a FUSE request that our worker threads must answer.
 * So loop_attach and loop_detach must run on a thread that is NOT a FUSE worker, while the
 * FUSE session is still being served (see the shutdown order in ferry-fuse.c).
 */
#ifndef FERRY_LOOP_H
#define FERRY_LOOP_H

#include <stdbool.h>

struct loop_device {
  int fd; /* kept open: with autoclear, a crash of ours detaches the device */
  int number;
  char path[32]; /* "/dev/loopN" */
};

/* Attach a free loop device to file (read-only when asked).  0 or -errno with a message. */
int loop_attach(const char *file, bool readonly, struct loop_device *out);

/* A loop device already bound to file (an earlier server of the same mount attached it and
 * died while someone held it open): open and keep it as ours.  0, -ENOENT when there is
 * none, or another -errno with a message. */
int loop_adopt(const char *file, bool readonly, struct loop_device *out);

/* Ask the kernel to detach and drop our reference.  The detach happens at once when nobody
 * else holds the device open; otherwise when its last user closes it (*still_in_use is then
 * set).  0 or -errno with a message. */
int loop_detach(struct loop_device *d, bool *still_in_use);

#endif
