/* ferry: finding sibling programs, see locate.h. */
#include "migrator/locate.h"

#include "common/error.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
try_path(const char *path, char **out)
{
  if (access(path, X_OK) != 0)
    return -1;
  *out = strdup(path);
  return *out ? 0 : error_set(ENOMEM, "out of memory");
}

int
locate_program(const char *name, const char *build_subdir, const char *env_var, char **out)
{
  const char *env = env_var ? getenv(env_var) : NULL;
  if (env && *env) {
    if (try_path(env, out) == 0)
      return 0;
    return error_set(ENOENT, "%s=%s: not an executable program", env_var, env);
  }
  char self[PATH_MAX], path[PATH_MAX + 64];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) {
      *slash = '\0';
      snprintf(path, sizeof path, "%s/../%s/%s", self, build_subdir, name);
      if (try_path(path, out) == 0)
        return 0;
      snprintf(path, sizeof path, "%s/%s", self, name);
      if (try_path(path, out) == 0)
        return 0;
    }
  }
  const char *p = getenv("PATH");
  while (p && *p) {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len > 0 && len < PATH_MAX) {
      snprintf(path, sizeof path, "%.*s/%s", (int)len, p, name);
      if (try_path(path, out) == 0)
        return 0;
    }
    p = end ? end + 1 : NULL;
  }
  return error_set(ENOENT,
                   "%s not found (looked at $%s, %s/../%s/, %s/ and $PATH; build it or set %s)",
                   name, env_var ? env_var : "-", n > 0 ? self : "?", build_subdir,
                   n > 0 ? self : "?", env_var ? env_var : "PATH");
}
