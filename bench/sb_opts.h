/*
 * sb_opts: the command line of sealpush-bench: "sealpush-bench SCENARIO [OPTIONS]", the
 * --help text, and the checks and per-scenario defaults that follow from the options.
 * Called once, from main, before anything else.
 */
#ifndef SB_OPTS_H
#define SB_OPTS_H

#include "sb.h"

#include <stdio.h>

/* The scenario names, indexed by enum sb_scenario (as on the command line and in the JSON). */
extern const char *const sb_scenario_names[];

/* Prints the --help text to f. */
void sb_opts_usage(FILE *f);

/*
 * Fills *o from argv (argv[1] is the scenario), defaults first; resolves --server into
 * o->addr. Strings point into argv, except o->host (strdup'ed, kept for the process's life).
 * Returns 0, or -1 after printing why (or the usage) on stderr; exits 0 after printing the
 * help for -h / --help.
 */
int sb_opts_parse(sb_opts_t *o, int argc, char **argv);

#endif
