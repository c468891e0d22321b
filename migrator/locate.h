/* ferry: finding the sibling programs (ferry-nbd, ferry-fuse) the migrator starts. */
#ifndef FERRY_LOCATE_H
#define FERRY_LOCATE_H

/* The path of program `name`, looked up in order:
 *   1. the environment variable env_var (e.g. FERRY_NBD), when set and non-empty;
 *   2. the build tree: <dir of this executable>/../<build_subdir>/<name>
 *      (build/migrator/ferry -> build/nbd-server/ferry-nbd);
 *   3. installed side by side: <dir of this executable>/<name>;
 *   4. $PATH.
 * *out is malloc'd.  0, or -ENOENT with a message listing where it looked. */
int locate_program(const char *name, const char *build_subdir, const char *env_var, char **out);

#endif
