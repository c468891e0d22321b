/* TEMPORARY: the clone and the control socket are being written on other branches; these
 * stand-ins refuse, so ferry-fuse links on main meanwhile.  Removed when they land. */
#include "backends/clone.h"
#include "common/control.h"
#include "common/error.h"

#include <errno.h>
#include <string.h>

void
clone_options_init(struct clone_options *o)
{
  memset(o, 0, sizeof *o);
}

int
clone_open(const char *source_uri, const char *map_path, const char *dest_uri,
           const struct clone_options *o, struct clone **out)
{
  (void)source_uri, (void)map_path, (void)o;
  *out = NULL;
  return error_set(ENOTSUP, "%s: clones are not available yet", dest_uri);
}

struct volume *
clone_volume(struct clone *c)
{
  (void)c;
  return NULL;
}

int
clone_close(struct clone *c)
{
  (void)c;
  return 0;
}

int
control_server_start(const char *path, const char *program, struct clone *clone,
                     unsigned long long size, const struct control_hooks *hooks,
                     struct control_server **out)
{
  (void)program, (void)clone, (void)size, (void)hooks;
  *out = NULL;
  return error_set(ENOTSUP, "%s: the control socket is not available yet", path);
}

void
control_server_stop(struct control_server *s)
{
  (void)s;
}
