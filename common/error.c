/* ferry: thread-local error messages, see error.h. */
#include "common/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Messages grow as needed: a long path must never be cut off. */
static _Thread_local char *message;
static _Thread_local int code;

static void
replace_message(char *m)
{
  free(message);
  message = m;
}

static char *
format_message(const char *fmt, va_list ap)
{
  char *m = NULL;
  if (vasprintf(&m, fmt, ap) < 0)
    return NULL;
  return m;
}

int
error_set(int err, const char *fmt, ...)
{
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  replace_message(format_message(fmt, ap));
  va_end(ap);
  code = err > 0 ? err : (err < 0 ? -err : EIO);
  errno = saved;
  return -code;
}

int
error_set_errno(int err, const char *fmt, ...)
{
  int saved = errno;
  int e = err > 0 ? err : (err < 0 ? -err : EIO);
  va_list ap;
  va_start(ap, fmt);
  char *m = format_message(fmt, ap);
  va_end(ap);
  char *full = NULL;
  if (m && asprintf(&full, "%s: %s", m, strerror(e)) < 0)
    full = NULL;
  free(m);
  replace_message(full);
  code = e;
  errno = saved;
  return -code;
}

int
error_prefix(const char *fmt, ...)
{
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  char *ctx = format_message(fmt, ap);
  va_end(ap);
  char *full = NULL;
  if (ctx && asprintf(&full, "%s: %s", ctx, message ? message : "unknown error") < 0)
    full = NULL;
  free(ctx);
  if (full)
    replace_message(full);
  if (code == 0)
    code = EIO;
  errno = saved;
  return -code;
}

const char *
error_message(void)
{
  return message ? message : "";
}

int
error_code(void)
{
  return code;
}

void
error_clear(void)
{
  replace_message(NULL);
  code = 0;
}
