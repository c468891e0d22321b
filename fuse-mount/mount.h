/* ferry-fuse: our mount in the mount table — find it, watch it, unmount it. */
#ifndef FERRY_FUSE_MOUNT_H
#define FERRY_FUSE_MOUNT_H

#include <stdbool.h>
#include <sys/types.h>

/* The device number of the newest mount at `mountpoint` (absolute, as realpath gives it):
 * it identifies our filesystem in /proc/self/mountinfo.  0 or -errno with a message. */
int mount_find_dev(const char *mountpoint, dev_t *dev);

/* Is the filesystem with this device number still in the mount table?  (true when the
 * table cannot be read: never unmount on a guess) */
bool mount_present(dev_t dev);

/* Unmount: plainly when nothing holds it, else lazily (the kernel keeps it for those who
 * have it open, and the server serves them until they let go).  Unprivileged: through
 * fusermount3 -u -z.  Errors are logged. */
void mount_unmount(const char *mountpoint, dev_t dev);

#endif
