/* ferry: internals shared by storage.c (plan, phases, log), storage-fs.c and storage-exec.c. */
#ifndef FERRY_STORAGE_IMPL_H
#define FERRY_STORAGE_IMPL_H

#include "migrator/storage/storage.h"

#include <jansson.h>

/* fs: apply one action object (fields "action", "path", "to_path", "tags", "size").  For tag,
 * *before receives the previous values of the tags it changed (null for absent ones).
 * 0 or -errno with a message naming the path. */
int storage_fs_run(const json_t *act, json_t **before);

/* exec: run `sh -c command` with the action on stdin; *reply gets the hook's JSON object
 * (or NULL when it printed nothing).  0 or -errno with a message quoting the hook's stderr. */
int storage_exec_run(const char *command, const json_t *act, json_t **reply);

/* "datastore:volume" of an action, for messages (static buffer per thread). */
const char *storage_action_target(const json_t *act);

/* Write a JSON document to PATH durably: temp file, fsync, rename, fsync of the directory. */
int storage_write_json_file(const char *path, const json_t *doc);

#endif
