/* Unit test of jsonbody: in-place edits of oned's body_json keep every other byte. */
#include "migrator/opennebula/jsonbody.h"
#include "common/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: FAILED: %s (%s)\n", __FILE__, __LINE__, #cond, error_message());     \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static void
expect_text(struct jsonbody *j, const char *want)
{
  const char *got = j ? jsonbody_text(j) : "";
  CHECK(strcmp(got, want) == 0);
  if (strcmp(got, want) != 0)
    fprintf(stderr, "  got:  %s\n  want: %s\n", got, want);
}

/* The layout of VirtualMachine::to_json (6.10, 7.0). */
static const char oned[]
    = "{\"VM\":{\"ID\": \"42\",\"NAME\": \"web-01\",\"TEMPLATE\": {\"AUTOMATIC_DS_REQUIREMENTS\": "
      "\"(\\\"CLUSTERS\\/ID\\\" @> 0)\",\"DISK\": [ {\"CEPH_HOST\": \"a\",\"DATASTORE_ID\": \"1\","
      "\"DISK_ID\": \"0\"},{\"DATASTORE_ID\": \"1\",\"DISK_ID\": \"1\"}]},\"USER_TEMPLATE\": "
      "{\"SCHED_DS_REQUIREMENTS\": \"ID=\\\"0\\\"\"},\"HISTORY_RECORDS\": { \"HISTORY\": "
      "[{\"SEQ\": "
      "\"1\",\"DS_ID\": \"0\"}] }}}";

static void
edits(void)
{
  struct jsonbody *j = NULL;
  char *v = NULL;
  CHECK(jsonbody_parse(oned, "t", &j) == 0);
  expect_text(j, oned);
  CHECK(jsonbody_get(j, "/VM/TEMPLATE/AUTOMATIC_DS_REQUIREMENTS", &v) == 1
        && !strcmp(v, "(\"CLUSTERS/ID\" @> 0)"));
  free(v);
  CHECK(jsonbody_get(j, "/VM/TEMPLATE/DISK[DISK_ID=1]/DATASTORE_ID", &v) == 1 && !strcmp(v, "1"));
  free(v);
  CHECK(jsonbody_get(j, "/VM/TEMPLATE/DISK/DATASTORE_ID", &v) < 0); /* two disks */
  CHECK(jsonbody_get(j, "/VM/TEMPLATE/DISK[DISK_ID=7]/DATASTORE_ID", &v) == 0 && !v);
  CHECK(jsonbody_get(j, "/VM/HISTORY_RECORDS/HISTORY/DS_ID", &v) == 1 && !strcmp(v, "0"));
  free(v);
  CHECK(jsonbody_set(j, "/VM/HISTORY_RECORDS/HISTORY/DS_ID", "100") == 0);
  CHECK(jsonbody_set(j, "/VM/TEMPLATE/DISK[DISK_ID=0]/CEPH_HOST", "b/c \"d\"") == 0);
  CHECK(jsonbody_delete(j, "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS") == 1);
  CHECK(jsonbody_delete(j, "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS") == 0);
  CHECK(jsonbody_delete(j, "/VM/TEMPLATE/DISK[DISK_ID=0]/DATASTORE_ID") == 1); /* middle */
  CHECK(jsonbody_delete(j, "/VM/TEMPLATE/DISK[DISK_ID=1]/DISK_ID") == 1);      /* first */
  CHECK(jsonbody_insert_sorted(j, "/VM/TEMPLATE/DISK[DISK_ID=0]", "CLUSTER_ID", "100") == 1);
  CHECK(jsonbody_insert_sorted(j, "/VM/TEMPLATE/DISK[DISK_ID=0]", "A", "x") == 1);
  CHECK(jsonbody_insert_sorted(j, "/VM/TEMPLATE/DISK[DISK_ID=0]", "Z", "z") == 1);
  CHECK(jsonbody_insert_sorted(j, "/VM/USER_TEMPLATE", "N", "1") == 1); /* empty object */
  CHECK(jsonbody_insert_sorted(j, "/VM/TEMPLATE/DISK[DISK_ID=0]", "Z", "z") == -EEXIST);
  expect_text(j, "{\"VM\":{\"ID\": \"42\",\"NAME\": \"web-01\",\"TEMPLATE\": "
                 "{\"AUTOMATIC_DS_REQUIREMENTS\": \"(\\\"CLUSTERS\\/ID\\\" @> 0)\",\"DISK\": [ "
                 "{\"A\": \"x\",\"CEPH_HOST\": \"b\\/c \\\"d\\\"\",\"CLUSTER_ID\": \"100\","
                 "\"DISK_ID\": \"0\",\"Z\": \"z\"},{\"DATASTORE_ID\": \"1\"}]},\"USER_TEMPLATE\": "
                 "{\"N\": \"1\"},\"HISTORY_RECORDS\": { \"HISTORY\": [{\"SEQ\": \"1\",\"DS_ID\": "
                 "\"100\"}] }}}");
  jsonbody_free(j);

  /* Another layout (jansson's default): its separators are kept and reused. */
  CHECK(jsonbody_parse("{\"A\": 1, \"C\": \"x\\u00e9\\ud83d\\ude00\"}", "t", &j) == 0);
  CHECK(jsonbody_get(j, "/C", &v) == 1 && !strcmp(v, "x\xc3\xa9\xf0\x9f\x98\x80"));
  free(v);
  CHECK(jsonbody_set(j, "/A", "7") == 0);
  CHECK(jsonbody_insert_sorted(j, "/", "B", "b") == -ENOENT); /* no parent named */
  CHECK(jsonbody_delete(j, "/C") == 1);                       /* the last member */
  expect_text(j, "{\"A\": 7}");
  CHECK(jsonbody_delete(j, "/A") == 1); /* the only one */
  expect_text(j, "{}");
  jsonbody_free(j);
  printf("ok: edits keep every other byte\n");
}

static void
refusals(void)
{
  struct jsonbody *j = NULL;
  static const char *const bad[]
      = { "", "{", "{\"a\" 1}", "{\"a\": \"x}", "[1,]x", "{\"a\": tru}", "{\"a\": \"\\q\"}" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK(jsonbody_parse(bad[i], "vm_pool oid 1 body_json", &j) < 0 && !j);
    CHECK(strstr(error_message(), "vm_pool oid 1 body_json: not JSON") != NULL);
  }
  printf("ok: refusals\n");
}

int
main(void)
{
  edits();
  refusals();
  return failures ? 1 : 0;
}
