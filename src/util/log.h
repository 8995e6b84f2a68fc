/*
 * log.h - leveled logging to stderr (or a file) as text or JSON lines.
 *
 * Library code logs; it never prints results. The CLI picks the level and
 * format. The logger is process-global and serialised by a mutex.
 */
#ifndef CISTA_LOG_H
#define CISTA_LOG_H

#include <stdbool.h>
#include <stdio.h>

typedef enum { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG } log_level;

void log_set_level(log_level lvl);
log_level log_get_level(void);
/* JSON lines ({"time":..,"level":..,"msg":..}) instead of text. */
void log_set_json(bool json);
/* Output stream; NULL means stderr. Not owned. */
void log_set_stream(FILE *f);
/* Parse "error|warn|info|debug"; returns -1 when unknown. */
int log_level_parse(const char *s);

void log_msg(log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
