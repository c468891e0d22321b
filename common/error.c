/* ferry: thread-local error messages, see error.h. */
#include "common/error.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Messages grow as needed: a long path must never be cut off. */
static _Thread_local char *message;
static _Thread_local int code;

/* A thread that ends with a message set (a worker that failed) must not leak it: the
 * message is also registered under a key whose destructor frees it at thread exit. */
static pthread_key_t message_key;
static pthread_once_t message_key_once = PTHREAD_ONCE_INIT;

static void
make_message_key(void)
{
  pthread_key_create(&message_key, free);
}

static void
replace_message(char *m)
{
  free(message);
  message = m;
  pthread_once(&message_key_once, make_message_key);
  pthread_setspecific(message_key, m);
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
