/* ferry-fuse --publish, see publish.h. */
#include "fuse-mount/publish.h"
#include "common/error.h"
#include "common/util.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int
parent_dir(const char *path, char *out, size_t size)
{
  if (snprintf(out, size, "%s", path) >= (int)size)
    return error_set(ENAMETOOLONG, "%s: name too long", path);
  char *d = dirname(out);
  if (d != out)
    memmove(out, d, strlen(d) + 1);
  return 0;
}

int
publish_prepare(struct publish *p, const char *path, const char **volume)
{
  memset(p, 0, sizeof *p);
  p->path = path;
  const char *v = *volume;
  if (strncmp(v, "file://", 7) == 0)
    v += 7;
  else if (strstr(v, "://"))
    return error_set(EINVAL,
                     "--publish: the destination %s is not a file (it is renamed over %s "
                     "at convergence)",
                     *volume, path);
  if (snprintf(p->dest, sizeof p->dest, "%s", v) >= (int)sizeof p->dest)
    return error_set(ENAMETOOLONG, "%s: name too long", v);
  struct stat pst, dst, dirst;
  bool have_path = lstat(path, &pst) == 0;
  if (!have_path && errno != ENOENT)
    return error_set_errno(errno, "--publish %s", path);
  if (stat(p->dest, &dst) < 0) {
    if (errno == ENOENT && have_path && S_ISREG(pst.st_mode)) {
      /* An earlier run converged and renamed the destination over PATH. */
      p->already = true;
      snprintf(p->dest, sizeof p->dest, "%s", path);
      *volume = path;
      return 0;
    }
    return error_set_errno(errno, "%s (the clone's destination)", p->dest);
  }
  if (!S_ISREG(dst.st_mode))
    return error_set(EINVAL, "--publish: the destination %s is not a regular file", p->dest);
  if (have_path && !S_ISLNK(pst.st_mode))
    return error_set(EEXIST, "--publish %s: it exists and is not a symlink: refusing to replace it",
                     path);
  char dir[PATH_MAX];
  if (parent_dir(path, dir, sizeof dir) < 0)
    return -1;
  if (stat(dir, &dirst) < 0)
    return error_set_errno(errno, "--publish %s: directory %s", path, dir);
  if (dirst.st_dev != dst.st_dev)
    return error_set(EXDEV,
                     "--publish %s: the destination %s is on another filesystem (it is "
                     "renamed over %s at convergence)",
                     path, p->dest, path);
  return 0;
}

int
publish_link(struct publish *p, const char *target)
{
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.ferry-link.%d", p->path, (int)getpid()) >= (int)sizeof tmp)
    return error_set(ENAMETOOLONG, "%s: name too long", p->path);
  unlink(tmp);
  if (symlink(target, tmp) < 0)
    return error_set_errno(errno, "--publish %s: symlink", tmp);
  if (rename(tmp, p->path) < 0) {
    int e = errno;
    unlink(tmp);
    return error_set_errno(e, "--publish %s", p->path);
  }
  debug("fuse", "%s -> %s", p->path, target);
  return fsync_parent_dir(p->path);
}

int
publish_finish(struct publish *p)
{
  if (p->already)
    return 0;
  /* The destination's data and the map are durable already (convergence commits them);
   * this makes the name durable. */
  if (rename(p->dest, p->path) < 0)
    return error_set_errno(errno, "--publish: rename %s over %s", p->dest, p->path);
  p->already = true;
  snprintf(p->dest, sizeof p->dest, "%s", p->path);
  log_info("converged: %s is the destination file now", p->path);
  return fsync_parent_dir(p->path);
}
