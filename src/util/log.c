/* log.c - leveled text / JSON-lines logging (see log.h). */
#include "util/log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static log_level g_level = LOG_LVL_WARN;
static bool g_json;
static FILE *g_stream;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(log_level lvl)
{
    g_level = lvl;
}

log_level log_get_level(void)
{
    return g_level;
}

void log_set_json(bool json)
{
    g_json = json;
}

void log_set_stream(FILE *f)
{
    g_stream = f;
}

int log_level_parse(const char *s)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (!strcmp(s, level_names[i]))
            return (int)i;
    if (!strcmp(s, "warning"))
        return LOG_LVL_WARN;
    return -1;
}

void log_msg(log_level lvl, const char *fmt, ...)
{
    if (lvl > g_level)
        return;
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (!msg)
        return;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    FILE *out = g_stream ? g_stream : stderr;
    pthread_mutex_lock(&g_lock);
    if (g_json) {
        json_t *o = json_pack("{s:s,s:s,s:s}", "time", when, "level", level_names[lvl], "msg", msg);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (line)
            fprintf(out, "%s\n", line);
        free(line);
        json_decref(o);
    } else {
        fprintf(out, "cista: %s: %s\n", level_names[lvl], msg);
    }
    fflush(out);
    pthread_mutex_unlock(&g_lock);
    free(msg);
}
