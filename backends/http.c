/* ferry: the http driver.  PLACEHOLDER: being written (issue 2); refuses every URI it takes. */
#include "backends/volume.h"
#include "common/error.h"

#include <errno.h>
#include <string.h>

static bool
http_matches(const char *uri)
{
  return strncmp(uri, "http", 4) == 0 && strstr(uri, "://") != NULL;
}

static int
http_open(const char *uri, const struct volume_options *o, struct volume **out)
{
  (void)o;
  *out = NULL;
  return error_set(ENOTSUP, "%s: the http driver is not built yet", uri);
}

const struct volume_driver http_driver = {
  .name = "http",
  .matches = http_matches,
  .open = http_open,
};
