/* ferry-nbd: stand-in for common/control.c until it lands (see meson.build). */
#include "common/control.h"
#include "common/error.h"

#include <errno.h>
#include <stddef.h>

int
control_server_start(const char *path, const char *program, struct clone *clone,
                     unsigned long long size, const struct control_hooks *hooks,
                     struct control_server **out)
{
  (void)program, (void)clone, (void)size, (void)hooks;
  *out = NULL;
  return error_set(ENOTSUP, "--control %s: the control socket is not available in this build",
                   path);
}

void
control_server_stop(struct control_server *s)
{
  (void)s;
}
