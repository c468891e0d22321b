/* ferry control: PLACEHOLDER, being written. */
#include "migrator/commands.h"
#include <stdio.h>

int
cmd_status(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "ferry status: not implemented yet\n");
  return EXIT_FAIL;
}

int
cmd_wait(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "ferry wait: not implemented yet\n");
  return EXIT_FAIL;
}

int
cmd_pause(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "ferry pause: not implemented yet\n");
  return EXIT_FAIL;
}

int
cmd_resume(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "ferry resume: not implemented yet\n");
  return EXIT_FAIL;
}
