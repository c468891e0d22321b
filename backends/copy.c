/* ferry: the copy engine.  PLACEHOLDER: being written (issue 2). */
#include "backends/copy.h"
#include "common/error.h"

#include <errno.h>
#include <string.h>

void
copy_options_init(struct copy_options *o)
{
  memset(o, 0, sizeof *o);
  o->workers = 16;
  o->request_size = 4u << 20;
  o->sparse = true;
}

int
copy_run(struct volume *src, struct volume *dst, const struct copy_work *work,
         const struct copy_options *o, struct copy_stats *stats)
{
  (void)src; (void)dst; (void)work; (void)o; (void)stats;
  return error_set(ENOTSUP, "copy engine not built yet");
}

int
copy_volume(struct volume *src, struct volume *dst, const struct copy_options *o,
            struct copy_stats *stats)
{
  (void)src; (void)dst; (void)o; (void)stats;
  return error_set(ENOTSUP, "copy engine not built yet");
}

int
copy_range(struct volume *src, struct volume *dst, uint64_t off, uint64_t len, void *buf,
           size_t buflen, bool sparse, struct copy_range_result *res)
{
  (void)src; (void)dst; (void)off; (void)len; (void)buf; (void)buflen; (void)sparse; (void)res;
  return error_set(ENOTSUP, "copy engine not built yet");
}
