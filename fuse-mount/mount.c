/* ferry-fuse: our mount in the mount table, see mount.h. */
#include "fuse-mount/mount.h"
#include "common/error.h"
#include "common/log.h"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

bool
mount_present(dev_t dev)
{
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f)
    return true;
  char line[4096];
  bool found = false;
  unsigned maj, min;
  while (!found && fgets(line, sizeof line, f))
    if (sscanf(line, "%*u %*u %u:%u", &maj, &min) == 2 && maj == major(dev) && min == minor(dev))
      found = true;
  fclose(f);
  return found;
}

/* mountinfo escapes space, tab, newline and backslash in paths as \ooo. */
static void
escape_mount_path(const char *in, char *out, size_t size)
{
  size_t n = 0;
  for (; *in && n + 5 < size; in++) {
    if (*in == ' ' || *in == '\t' || *in == '\n' || *in == '\\')
      n += (size_t)snprintf(out + n, size - n, "\\%03o", (unsigned char)*in);
    else
      out[n++] = *in;
  }
  out[n] = 0;
}

int
mount_find_dev(const char *mountpoint, dev_t *dev)
{
  char want[2 * PATH_MAX];
  escape_mount_path(mountpoint, want, sizeof want);
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f)
    return error_set_errno(errno, "/proc/self/mountinfo");
  static char line[4 * PATH_MAX], path[4 * PATH_MAX];
  unsigned maj, min;
  bool found = false;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%*u %*u %u:%u %*s %s", &maj, &min, path) == 3 && strcmp(path, want) == 0) {
      *dev = makedev(maj, min);
      found = true;
    }
  fclose(f);
  if (!found)
    return error_set(ENOENT, "%s: not in the mount table after mounting", mountpoint);
  return 0;
}

void
mount_unmount(const char *mountpoint, dev_t dev)
{
  if (!mount_present(dev))
    return;
  if (geteuid() == 0) {
    if (umount2(mountpoint, 0) == 0)
      return;
    if (errno == EBUSY) {
      log_warning("%s is busy: detaching it lazily; open files are served until closed",
                  mountpoint);
      if (umount2(mountpoint, MNT_DETACH) == 0)
        return;
    }
    log_error("%s: unmount: %s", mountpoint, strerror(errno));
    return;
  }
  /* Unprivileged: only the setuid helper may unmount. */
  char *argv[] = { "fusermount3", "-u", "-z", "--", (char *)mountpoint, NULL };
  pid_t pid;
  extern char **environ;
  if ((errno = posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ)) != 0) {
    log_error("cannot run fusermount3 to unmount %s: %s", mountpoint, strerror(errno));
    return;
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
}
