/* ferry: logging.  Errors and warnings always go to stderr (or syslog once a daemon has
 * detached); debug messages are per module and switched on at run time with -v (all
 * modules) or FERRY_DEBUG=clone,nbd,... (a comma list, or "all"). */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdbool.h>

void log_init(const char *program);
/* -v: enable debug output for every module. */
void log_set_verbose(bool on);
/* After daemonizing: send messages to syslog instead of stderr. */
void log_use_syslog(void);
bool log_debug_enabled(const char *module);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug_module(const char *module, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* debug("clone", "fetch %" PRIu64, off): cheap when the module is off. */
#define debug(module, ...)                                                                         \
  do {                                                                                             \
    if (log_debug_enabled(module))                                                                 \
      log_debug_module(module, __VA_ARGS__);                                                       \
  } while (0)

#endif
