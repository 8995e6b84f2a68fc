/*
 * common.c - what the subcommands share once their getopt loop is done: the
 * standard help / usage outcome, the three usage-error styles, reporting a
 * library error, printing a JSON document. Not thread-safe (stdio, exits
 * through return codes only); trusts nothing it prints beyond what jansson
 * escapes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "util/json.h"
#include "util/util.h"

int cli_usage(void (*usage)(FILE *out), bool help)
{
    usage(help ? stdout : stderr);
    return help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
}

int cli_usage_text(const char *text, bool help)
{
    fputs(text, help ? stdout : stderr);
    return help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cista: %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry `cista %s --help`.\n", cmd);
    return CLI_EXIT_USAGE;
}

int cli_usage_see(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "cista %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; see `cista %s --help`\n", cmd);
    return CLI_EXIT_USAGE;
}

int cli_usage_report(const char *msg, const char *arg)
{
    cista_error *e = NULL;
    err_set(&e, -EINVAL, "usage: %s%s (see --help)", msg, arg ? arg : "");
    return cli_fail(e);
}

int cli_fail(cista_error *e)
{
    int rc = cli_report(e);
    err_free(e);
    return rc;
}

void cli_print_json(const json_t *doc)
{
    _cleanup_free_ char *s = js_dump_pretty(doc);
    fputs(s, stdout);
}

void cli_print_json_line(const json_t *doc)
{
    _cleanup_free_ char *s = js_dump_compact(doc);
    printf("%s\n", s);
}
