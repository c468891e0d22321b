/* ferry-fuse: loop devices, see loop.h. */
#include "fuse-mount/loop.h"
#include "common/error.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define ATTACH_ATTEMPTS 16

int
loop_attach(const char *file, bool readonly, struct loop_device *out)
{
  int r = 0, file_fd = -1, ctl = -1, dev = -1;
  out->fd = -1;
  /* Opening the file is a FUSE LOOKUP + OPEN answered by our workers (not this thread). */
  /* Direct I/O (O_DIRECT and LO_FLAGS_DIRECT_IO): the loop driver then submits its requests
   * to the FUSE file asynchronously, as many at once as the device queue holds, instead of
   * one buffered read or write at a time per worker — and no second page cache sits
   * between the device and ours. */
  file_fd = open(file, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_DIRECT);
  if (file_fd < 0) {
    r = error_set_errno(errno, "%s: cannot open for the loop device", file);
    goto out;
  }
  ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) {
    r = error_set_errno(errno, "/dev/loop-control");
    goto out;
  }
  struct loop_config config;
  memset(&config, 0, sizeof config);
  config.fd = (unsigned)file_fd;
  /* Autoclear while we hold our fd: if this process dies, the device goes with it. */
  config.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO | (readonly ? LO_FLAGS_READ_ONLY : 0);
  snprintf((char *)config.info.lo_file_name, sizeof config.info.lo_file_name, "%s", file);

  /* Another process may take the free device between GET_FREE and CONFIGURE: retry. */
  for (int attempt = 0; attempt < ATTACH_ATTEMPTS; attempt++) {
    int n = ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      r = error_set_errno(errno, "/dev/loop-control: no free loop device");
      goto out;
    }
    snprintf(out->path, sizeof out->path, "/dev/loop%d", n);
    dev = open(out->path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (dev < 0) {
      r = error_set_errno(errno, "%s", out->path);
      goto out;
    }
    if (ioctl(dev, LOOP_CONFIGURE, &config) == 0) {
      out->fd = dev;
      out->number = n;
      dev = -1;
      debug("loop", "%s attached to %s%s", out->path, file, readonly ? " (read-only)" : "");
      r = 0;
      goto out;
    }
    int e = errno;
    close(dev);
    dev = -1;
    if (e != EBUSY) {
      r = error_set_errno(e, "%s: cannot attach to %s", out->path, file);
      goto out;
    }
  }
  r = error_set(EBUSY, "%s: every free loop device was taken by someone else", file);
out:
  if (dev >= 0)
    close(dev);
  if (ctl >= 0)
    close(ctl);
  /* The loop device holds its own reference to the file now. */
  if (file_fd >= 0)
    close(file_fd);
  return r;
}

int
loop_adopt(const char *file, bool readonly, struct loop_device *out)
{
  out->fd = -1;
  DIR *d = opendir("/sys/block");
  if (!d)
    return error_set_errno(errno, "/sys/block");
  struct dirent *e;
  int r = -ENOENT;
  while (r == -ENOENT && (e = readdir(d))) {
    int n;
    if (sscanf(e->d_name, "loop%d", &n) != 1)
      continue;
    char path[300], bound[4096];
    snprintf(path, sizeof path, "/sys/block/%s/loop/backing_file", e->d_name);
    FILE *f = fopen(path, "re");
    if (!f)
      continue;
    bool same = fgets(bound, sizeof bound, f) && (bound[strcspn(bound, "\n")] = 0, 1)
                && strcmp(bound, file) == 0;
    fclose(f);
    if (!same)
      continue;
    snprintf(out->path, sizeof out->path, "/dev/loop%d", n);
    out->fd = open(out->path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (out->fd < 0)
      r = error_set_errno(errno, "%s", out->path);
    else {
      out->number = n;
      debug("loop", "%s: still attached to %s: kept", out->path, file);
      r = 0;
    }
  }
  closedir(d);
  return r;
}

static bool
still_bound(int number)
{
  char path[96];
  snprintf(path, sizeof path, "/sys/block/loop%d/loop/backing_file", number);
  return access(path, F_OK) == 0;
}

int
loop_detach(struct loop_device *d, bool *still_in_use)
{
  int r = 0;
  *still_in_use = false;
  if (d->fd < 0)
    return 0;
  if (ioctl(d->fd, LOOP_CLR_FD) < 0 && errno != ENXIO)
    r = error_set_errno(errno, "%s: detach", d->path);
  /* The kernel tears the device down on the last close, ours when no one else holds it: it
   * waits for in-flight I/O and closes MOUNTPOINT/disk, both served by our FUSE workers. */
  close(d->fd);
  d->fd = -1;
  if (r == 0 && still_bound(d->number))
    *still_in_use = true;
  debug("loop", "%s %s", d->path,
        *still_in_use ? "still in use: detaches on last close" : "detached");
  return r;
}
