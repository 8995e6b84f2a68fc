/*
 * rt_int.h - what the runtime's .c files share (not part of the API).
 */
#ifndef CISTA_RT_INT_H
#define CISTA_RT_INT_H

#include <jansson.h>

#include "runtime/runtime.h"
#include "util/err.h"

#define RT_STATE "state.json"
#define RT_PLAIN_BUNDLE "bundle"
#define RT_PLAIN_RUNC "runc"
#define RT_PLAIN_LOG "container.log"
#define RT_PID_FILE "init.pid"
#define RT_INIT_START_FILE "init.start" /* its start time (/proc/PID/stat field 22) */

/*
 * Confine the config of a Kubernetes pod's sandbox (pause) container, which runs plain without
 * "allow_plain" (see runtime.c): edits @cfg; -EPERM when it joins a pid, mount, user or cgroup
 * namespace by path.
 */
int rt__confine_pod_sandbox(json_t *cfg, const char *id, cista_error **err);

/* Resolve "auto" and check the name: "sim", "tpm", "snp" or "tdx". Caller frees. */
char *rt__resolve_tee(const rt_config *c, const char *want, cista_error **err);

#endif
