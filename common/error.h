/* ferry: thread-local error messages.
 *
 * Functions that fail return a negative errno (or -1) and describe the failure with
 * error_set(); the caller adds context with error_prefix() and only main() prints
 * error_message() and exits.  Messages name the thing that failed:
 *   "map.bin: region size 65536 does not match 131072".
 */
#ifndef FERRY_ERROR_H
#define FERRY_ERROR_H

#include <stdarg.h>

/* Set the calling thread's message and return -err (err > 0 is an errno value).
 * errno is left unchanged, so "return error_set(errno, "open %s", path)" is safe. */
int error_set(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like error_set, appending ": strerror(err)". */
int error_set_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepend "context: " to the current message; returns the last error code (negative). */
int error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The current message ("" when none) and the errno given to the last error_set. */
const char *error_message(void);
int error_code(void);
void error_clear(void);

#endif
