/* ferry-nbd: stand-ins for backends/clone.c until the clone lands (see meson.build). */
#include "backends/clone.h"
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
  return error_set(ENOTSUP, "%s: clones are not available in this build", dest_uri);
}

struct volume *
clone_volume(struct clone *c)
{
  (void)c;
  return NULL;
}

int
clone_hydrated_extents(struct clone *c, uint64_t len, uint64_t off, struct extent_list *out)
{
  (void)c, (void)out;
  return extent_list_add(out, off, len, CLONE_EXTENT_HYDRATED);
}

int
clone_close(struct clone *c)
{
  (void)c;
  return 0;
}
