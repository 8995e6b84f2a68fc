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
#include <stdio.h>

#include <jansson.h>

#include "util/err.h"
#include "util/util.h"

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

/* Print "cista: <error chain>" as cli_report() does, free @e (owned), return the exit
 * code. */
int cli_fail(cista_error *e);

/* The standard outcome of -h/--help or of a bad option in a getopt loop: with @help the
 * usage goes to stdout and the result is CLI_EXIT_OK, otherwise to stderr with
 * CLI_EXIT_USAGE. cli_usage() takes a function printing the usage, cli_usage_text() the
 * text itself. */
int cli_usage(void (*usage)(FILE *out), bool help);
int cli_usage_text(const char *text, bool help);

/* Usage errors; all return CLI_EXIT_USAGE except cli_usage_report (see there).
 * cli_usage_error: "cista: CMD: MSG" and "Try `cista CMD --help`." on stderr.
 * cli_usage_see:   "cista CMD: MSG; see `cista CMD --help`" on stderr. */
int cli_usage_error(const char *cmd, const char *fmt, ...) CISTA_PRINTF(2, 3);
int cli_usage_see(const char *cmd, const char *fmt, ...) CISTA_PRINTF(2, 3);
/* An error "usage: MSGARG (see --help)" (@arg may be NULL) through cli_report(), so it
 * also comes out as JSON with --json; returns cli_report()'s exit code. */
int cli_usage_report(const char *msg, const char *arg);

/* A JSON document on stdout: indented (ends with a newline), or compact on one line. */
void cli_print_json(const json_t *doc);
void cli_print_json_line(const json_t *doc);

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
