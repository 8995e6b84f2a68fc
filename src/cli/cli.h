/*
 * cli.h - what the `cista` subcommands share: global options, error
 * reporting, progress on a terminal, and the exit codes of docs/cli.md.
 *
 * Only src/cli prints to stdout or exits. Subcommand entry points take the
 * argv that follows their name (argv[0] is the subcommand itself).
 */
#ifndef CISTA_CLI_H
#define CISTA_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

/* Exit codes (documented in docs/cli.md). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1, /* the operation failed (bad input, I/O, verification) */
    CLI_EXIT_USAGE = 2,   /* bad command line */
    CLI_EXIT_DENIED = 3,  /* refused by a security check (digest, HMAC, key, policy) */
};

typedef struct {
    bool json; /* --json: machine-readable output on stdout */
    bool quiet;
    bool progress; /* stderr is a terminal and not --quiet */
    /* OCI runtime globals (as runc takes them) */
    const char *root;     /* --root DIR: container state */
    const char *log_file; /* --log FILE: log (and the delegate's) goes there */
    bool log_json;        /* --log-format json */
    bool systemd_cgroup;  /* --systemd-cgroup: accepted, cgroupfs is used */
    bool debug;           /* --debug */
} cli_globals;

extern cli_globals g_cli;

/* Print "cista: <error chain>" (or a JSON error object with --json) and
 * return the exit code that fits the error code. Frees nothing. */
int cli_report(const cista_error *e);

/* Progress bar on stderr, only when g_cli.progress. @total 0 = unknown. */
typedef struct cli_progress cli_progress;
cli_progress *cli_progress_new(const char *label, uint64_t total);
void cli_progress_update(cli_progress *p, uint64_t done);
void cli_progress_done(cli_progress *p);

/* Subcommands. */
int cli_image(int argc, char **argv);
int cli_evidence(int argc, char **argv);
int cli_sim(int argc, char **argv);
int cli_policy(int argc, char **argv);
int cli_kbs(int argc, char **argv);
int cli_volume(int argc, char **argv);
/* run, ps, exec, logs, stop, rm and the OCI runtime verbs (create, start, state, kill,
 * delete, pause, resume, features, spec): dispatched by argv[0]. */
int cli_run(int argc, char **argv);

#endif
