/* dynlib.c - shared libraries opened on first use (see dynlib.h). */
#include "util/dynlib.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "util/util.h"

/*
 * One lock for all libraries: loads are rare (once per library and process) and a bind callback
 * never loads another library, so there is nothing to gain from a lock per dynlib, and one lock
 * needs no initialisation in DYNLIB_INIT.
 */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static int outcome(const dynlib *lib, int state, cista_error **err)
{
    if (state > 0)
        return 0;
    return err_set(err, state, "%s", lib->error);
}

int dynlib_load(dynlib *lib, cista_error **err)
{
    /* Acquire pairs with the release below: a thread that sees 1 also sees the bound table. */
    int state = atomic_load_explicit(&lib->state, memory_order_acquire);
    if (state != 0)
        return outcome(lib, state, err);
    pthread_mutex_lock(&g_lock);
    state = atomic_load_explicit(&lib->state, memory_order_relaxed);
    if (state == 0) {
        cista_error *e = NULL;
        dlerror();
        lib->handle = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
        if (!lib->handle) {
            const char *why = dlerror();
            state = err_set(&e, -ELIBACC, "%s needs %s (apt-get install %s): %s", lib->user,
                            lib->soname, lib->package, why ? why : "dlopen failed");
        } else if ((state = lib->bind(lib, &e)) >= 0) {
            state = 1;
        }
        if (state < 0) {
            if (!e) /* a bind callback that failed without saying why */
                err_set(&e, state, "%s: setting up %s failed", lib->user, lib->soname);
            /* Kept in full ("context: message"), as the first caller would have seen it. */
            lib->error = err_str(e);
            state = e->code;
        }
        err_free(e);
        atomic_store_explicit(&lib->state, state, memory_order_release);
    }
    pthread_mutex_unlock(&g_lock);
    return outcome(lib, state, err);
}

int dynlib_sym(void **out, dynlib *lib, const char *name, cista_error **err)
{
    dlerror();
    void *p = dlsym(lib->handle, name);
    if (!p) {
        const char *why = dlerror();
        return err_set(err, -ELIBACC,
                       "%s: %s has no symbol %s (%s); it is older than the headers cista was "
                       "built with: install the current %s",
                       lib->user, lib->soname, name, why ? why : "NULL", lib->package);
    }
    *out = p;
    return 0;
}
