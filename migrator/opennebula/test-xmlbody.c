/* Unit test of xmlbody: byte-exact round trips, XPath edits, ID lists, refusals. */
#include "migrator/opennebula/xmlbody.h"
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

static struct xmlbody *
parse_ok(const char *text)
{
  struct xmlbody *b = NULL;
  CHECK(xmlbody_parse(text, "test", &b) == 0);
  return b;
}

static void
expect_text(struct xmlbody *b, const char *want)
{
  char *got = b ? xmlbody_serialize(b) : NULL;
  CHECK(got && strcmp(got, want) == 0);
  if (got && strcmp(got, want) != 0)
    fprintf(stderr, "  got:  %s\n  want: %s\n", got, want);
  free(got);
}

static void
round_trips(void)
{
  static const char *const bodies[] = {
    "<VM><ID>1</ID><MONITORING></MONITORING><BACKUP_CONFIG/><T><A><![CDATA[x<y]]></A></T></VM>",
    "<?xml version=\"1.0\"?>\n<VM><NAME>a &amp; b &lt;c&gt;</NAME></VM>\n",
    "<VM><E attr=\"v&quot;\"/><C><![CDATA[]]></C><!--note--></VM>",
  };
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    struct xmlbody *b = parse_ok(bodies[i]);
    expect_text(b, bodies[i]);
    xmlbody_free(b);
  }
  printf("ok: round trips\n");
}

static void
edits(void)
{
  struct xmlbody *b = parse_ok("<VM><TEMPLATE><DISK><DISK_ID><![CDATA[0]]></DISK_ID><DATASTORE_ID>"
                               "<![CDATA[1]]></DATASTORE_ID></DISK><DISK><DISK_ID><![CDATA[1]]>"
                               "</DISK_ID><DATASTORE_ID><![CDATA[1]]></DATASTORE_ID><E></E></DISK>"
                               "</TEMPLATE><H><DS_ID>0</DS_ID></H><U><S>x</S><S>y</S></U></VM>");
  char *v = NULL;
  /* Only DISK[DISK_ID=1]: the bare path would match both disks and is refused. */
  CHECK(xmlbody_set(b, "/VM/TEMPLATE/DISK/DATASTORE_ID", "9") < 0);
  CHECK(xmlbody_set(b, "/VM/TEMPLATE/DISK[DISK_ID=1]/DATASTORE_ID", "101") == 0);
  CHECK(xmlbody_set(b, "/VM/TEMPLATE/DISK[DISK_ID=1]/E", "new") == 0); /* empty, in TEMPLATE */
  CHECK(xmlbody_set(b, "/VM/H/DS_ID", "100") == 0);                    /* text stays text */
  CHECK(xmlbody_get(b, "/VM/TEMPLATE/DISK[DISK_ID=0]/DATASTORE_ID", &v) == 1 && !strcmp(v, "1"));
  free(v);
  CHECK(xmlbody_get(b, "/VM/NOPE", &v) == 0 && v == NULL);
  CHECK(xmlbody_get(b, "/VM/U/S", &v) < 0);
  CHECK(xmlbody_set(b, "/VM/TEMPLATE", "x") < 0); /* not a leaf */
  CHECK(xmlbody_delete(b, "/VM/U/S") == 2);
  expect_text(b, "<VM><TEMPLATE><DISK><DISK_ID><![CDATA[0]]></DISK_ID><DATASTORE_ID><![CDATA[1]]>"
                 "</DATASTORE_ID></DISK><DISK><DISK_ID><![CDATA[1]]></DISK_ID><DATASTORE_ID>"
                 "<![CDATA[101]]></DATASTORE_ID><E><![CDATA[new]]></E></DISK></TEMPLATE><H><DS_ID>"
                 "100</DS_ID></H><U></U></VM>");
  xmlbody_free(b);
  printf("ok: edits\n");
}

static void
id_lists(void)
{
  struct xmlbody *b
      = parse_ok("<DATASTORE><IMAGES><ID>10</ID><ID>12</ID></IMAGES><E/></DATASTORE>");
  int64_t *ids = NULL;
  size_t n = 0;
  CHECK(xmlbody_id_add(b, "/DATASTORE/IMAGES", 11) == 1);
  CHECK(xmlbody_id_add(b, "/DATASTORE/IMAGES", 11) == 0);
  CHECK(xmlbody_id_add(b, "/DATASTORE/IMAGES", 2) == 1);
  CHECK(xmlbody_id_add(b, "/DATASTORE/IMAGES", 99) == 1);
  CHECK(xmlbody_ids(b, "/DATASTORE/IMAGES", &ids, &n) == 0 && n == 5 && ids[0] == 2 && ids[2] == 11
        && ids[4] == 99);
  free(ids);
  expect_text(b, "<DATASTORE><IMAGES><ID>2</ID><ID>10</ID><ID>11</ID><ID>12</ID><ID>99</ID>"
                 "</IMAGES><E/></DATASTORE>");
  static const int64_t added[] = { 2, 10, 11, 12, 99 };
  for (size_t i = 0; i < sizeof added / sizeof added[0]; i++)
    CHECK(xmlbody_id_remove(b, "/DATASTORE/IMAGES", added[i]) == 1);
  CHECK(xmlbody_id_remove(b, "/DATASTORE/IMAGES", 5) == 0);
  CHECK(xmlbody_id_add(b, "/DATASTORE/NOPE", 1) < 0);
  /* Emptied, oned writes <IMAGES></IMAGES>; <E/> keeps its form. */
  expect_text(b, "<DATASTORE><IMAGES></IMAGES><E/></DATASTORE>");
  xmlbody_free(b);
  printf("ok: id lists\n");
}

/* Real templates hold CRLFs inside CDATA (START_SCRIPT pasted from Windows): byte-exact. */
static void
carriage_returns(void)
{
  const char *text = "<VM><TEMPLATE><CONTEXT><START_SCRIPT><![CDATA[echo a\r\necho b\r\n]]>"
                     "</START_SCRIPT></CONTEXT><X><![CDATA[lone\rcr]]></X></TEMPLATE>"
                     "<N>a&#13;b</N></VM>";
  struct xmlbody *b = parse_ok(text);
  char *v = NULL;
  expect_text(b, text);
  CHECK(xmlbody_get(b, "/VM/TEMPLATE/CONTEXT/START_SCRIPT", &v) == 1
        && !strcmp(v, "echo a\r\necho b\r\n"));
  free(v);
  CHECK(xmlbody_get(b, "/VM/N", &v) == 1 && !strcmp(v, "a\rb"));
  free(v);
  CHECK(xmlbody_set(b, "/VM/TEMPLATE/X", "two\r\nlines") == 0);
  expect_text(b, "<VM><TEMPLATE><CONTEXT><START_SCRIPT><![CDATA[echo a\r\necho b\r\n]]>"
                 "</START_SCRIPT></CONTEXT><X><![CDATA[two\r\nlines]]></X></TEMPLATE>"
                 "<N>a&#13;b</N></VM>");
  xmlbody_free(b);
  /* A CR set into a body that had none. */
  b = parse_ok("<VM><TEMPLATE><X><![CDATA[a]]></X></TEMPLATE></VM>");
  CHECK(xmlbody_set(b, "/VM/TEMPLATE/X", "a\r\n") == 0);
  expect_text(b, "<VM><TEMPLATE><X><![CDATA[a\r\n]]></X></TEMPLATE></VM>");
  CHECK(xmlbody_get(b, "/VM/TEMPLATE/X", &v) == 1 && !strcmp(v, "a\r\n"));
  free(v);
  xmlbody_free(b);
  printf("ok: carriage returns\n");
}

static void
insert_sorted(void)
{
  struct xmlbody *b = parse_ok("<VM><TEMPLATE><DISK><B><![CDATA[b]]></B><D><![CDATA[d]]></D>"
                               "</DISK></TEMPLATE></VM>");
  CHECK(xmlbody_insert_sorted(b, "/VM/TEMPLATE/DISK", "C", "c") == 1);
  CHECK(xmlbody_insert_sorted(b, "/VM/TEMPLATE/DISK", "A", "a") == 1);
  CHECK(xmlbody_insert_sorted(b, "/VM/TEMPLATE/DISK", "E", "e") == 1);
  CHECK(xmlbody_insert_sorted(b, "/VM/TEMPLATE/DISK", "C", "x") == -EEXIST);
  expect_text(b, "<VM><TEMPLATE><DISK><A><![CDATA[a]]></A><B><![CDATA[b]]></B><C><![CDATA[c]]>"
                 "</C><D><![CDATA[d]]></D><E><![CDATA[e]]></E></DISK></TEMPLATE></VM>");
  xmlbody_free(b);
  printf("ok: sorted insert\n");
}

static void
refusals(void)
{
  struct xmlbody *b = NULL;
  CHECK(xmlbody_parse("<VM><A>", "t", &b) < 0 && !b);
  CHECK(xmlbody_parse("", "t", &b) < 0 && !b);
  /* Would come back as <E a="1"/>: not byte-exact, so not editable. */
  CHECK(xmlbody_parse("<VM><E a='1'/></VM>", "t", &b) < 0 && !b);
  CHECK(strstr(error_message(), "does not serialise back to the same bytes") != NULL);
  CHECK(xmlbody_parse("<VM><x:E xmlns:x=\"u\"/></VM>", "t", &b) < 0 && !b);
  CHECK(xmlbody_parse_lenient("<VM><E a='1'/></VM>", "t", &b) == 0 && b);
  xmlbody_free(b);
  printf("ok: refusals\n");
}

int
main(void)
{
  round_trips();
  edits();
  id_lists();
  carriage_returns();
  insert_sorted();
  refusals();
  return failures ? 1 : 0;
}
