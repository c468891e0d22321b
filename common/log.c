/* ferry: logging, see log.h. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <pthread.h>

static const char *program_name = "ferry";
static bool verbose;
static bool to_syslog;
static const char *debug_modules; /* FERRY_DEBUG, read once at init */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void
log_init(const char *program)
{
  const char *slash = strrchr(program, '/');
  program_name = slash ? slash + 1 : program;
  debug_modules = getenv("FERRY_DEBUG");
}

void
log_set_verbose(bool on)
{
  verbose = on;
}

void
log_use_syslog(void)
{
  openlog(program_name, LOG_PID, LOG_DAEMON);
  to_syslog = true;
}

bool
log_debug_enabled(const char *module)
{
  if (verbose)
    return true;
  if (!debug_modules || !*debug_modules)
    return false;
  if (strcmp(debug_modules, "all") == 0)
    return true;
  size_t n = strlen(module);
  for (const char *p = debug_modules; p && *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n && strncmp(p, module, n) == 0)
      return true;
    p = end ? end + 1 : NULL;
  }
  return false;
}

static void
emit(int priority, const char *prefix, const char *fmt, va_list ap)
{
  if (to_syslog) {
    vsyslog(priority, fmt, ap);
    return;
  }
  /* One lock so lines from several threads never interleave. */
  pthread_mutex_lock(&lock);
  fprintf(stderr, "%s: %s", program_name, prefix);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  pthread_mutex_unlock(&lock);
}

void
log_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_ERR, "error: ", fmt, ap);
  va_end(ap);
}

void
log_warning(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_WARNING, "warning: ", fmt, ap);
  va_end(ap);
}

void
log_info(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_INFO, "", fmt, ap);
  va_end(ap);
}

void
log_debug_module(const char *module, const char *fmt, ...)
{
  char prefix[64];
  snprintf(prefix, sizeof prefix, "debug: %s: ", module);
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_DEBUG, prefix, fmt, ap);
  va_end(ap);
}
