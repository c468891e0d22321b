/* ferry: the clone volume, see clone.h.  SKELETON: being filled in (issue 3); every entry point
 * links, clone_open refuses until the implementation lands. */
#include "backends/clone.h"
#include "backends/regionmap.h"
#include "common/error.h"

#include <errno.h>
#include <string.h>

void
clone_options_init(struct clone_options *o)
{
  memset(o, 0, sizeof *o);
  o->hydrate = true;
  volume_options_init(&o->source);
  volume_options_init(&o->dest);
  o->source.readonly = true;
}

int
clone_open(const char *source_uri, const char *map_path, const char *dest_uri,
           const struct clone_options *o, struct clone **out)
{
  (void)source_uri; (void)dest_uri; (void)o;
  *out = NULL;
  return error_set(ENOTSUP, "%s: the clone is not built yet", map_path);
}

struct volume *clone_volume(struct clone *c) { (void)c; return NULL; }
void clone_pause(struct clone *c) { (void)c; }
void clone_resume(struct clone *c) { (void)c; }
void clone_set_rate(struct clone *c, uint64_t r) { (void)c; (void)r; }

const char *
clone_state_name(enum clone_state s)
{
  switch (s) {
  case CLONE_HYDRATING: return "hydrating";
  case CLONE_PAUSED: return "paused";
  case CLONE_CONVERGED: return "converged";
  case CLONE_FAILED: return "failed";
  }
  return "unknown";
}

void clone_get_status(struct clone *c, struct clone_status *st) { (void)c; memset(st, 0, sizeof *st); }
int clone_wait(struct clone *c, double t) { (void)c; (void)t; return error_set(ENOTSUP, "clone not built yet"); }
int
clone_hydrated_extents(struct clone *c, uint64_t len, uint64_t off, struct extent_list *out)
{
  (void)c; (void)len; (void)off; (void)out;
  return error_set(ENOTSUP, "clone not built yet");
}
int clone_close(struct clone *c) { (void)c; return 0; }
