/* ferry demo: PLACEHOLDER, being written. */
#include "migrator/commands.h"
#include <stdio.h>

int
cmd_demo(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "ferry demo: not implemented yet\n");
  return EXIT_FAIL;
}
