/* ferry: the nbd driver.  PLACEHOLDER: being written (issue 2); refuses every URI it takes. */
#include "backends/volume.h"
#include "common/error.h"

#include <errno.h>
#include <string.h>

static bool
nbd_matches(const char *uri)
{
  return strncmp(uri, "nbd", 3) == 0 && strstr(uri, "://") != NULL;
}

static int
nbd_open(const char *uri, const struct volume_options *o, struct volume **out)
{
  (void)o;
  *out = NULL;
  return error_set(ENOTSUP, "%s: the nbd driver is not built yet", uri);
}

const struct volume_driver nbd_driver = {
  .name = "nbd",
  .matches = nbd_matches,
  .open = nbd_open,
};
