/* frontend-pod IN.pod OUT.pod: copy a man page, replacing each line
 *   =for ferry-options GROUP[,GROUP...]
 * with the =item paragraphs of the shared flags of those groups (frontend/options.c), so a
 * flag's man text has one source, like its --help line.  Run by docs/meson.build. */
#include "frontend/options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char marker[] = "=for ferry-options ";

/* 0, or 1 after a message naming the unknown group. */
static int
splice(const char *in_name, char *groups_text, FILE *out)
{
  unsigned groups = 0;
  for (char *g = strtok(groups_text, ", \n"); g; g = strtok(NULL, ", \n")) {
    unsigned bit = frontend_group_by_name(g);
    if (!bit) {
      fprintf(stderr, "frontend-pod: %s: unknown option group '%s'\n", in_name, g);
      return 1;
    }
    groups |= bit;
  }
  frontend_options_pod(out, groups);
  return 0;
}

int
main(int argc, char **argv)
{
  if (argc != 3) {
    fprintf(stderr, "usage: frontend-pod IN.pod OUT.pod\n");
    return 2;
  }
  FILE *in = fopen(argv[1], "r");
  if (!in) {
    perror(argv[1]);
    return 1;
  }
  FILE *out = fopen(argv[2], "w");
  if (!out) {
    perror(argv[2]);
    fclose(in);
    return 1;
  }
  char line[4096];
  int rc = 0;
  while (rc == 0 && fgets(line, sizeof line, in)) {
    if (strncmp(line, marker, sizeof marker - 1) == 0)
      rc = splice(argv[1], line + sizeof marker - 1, out);
    else
      fputs(line, out);
  }
  fclose(in);
  if (fclose(out) != 0) {
    perror(argv[2]);
    rc = 1;
  }
  return rc;
}
