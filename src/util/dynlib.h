/*
 * dynlib.h - shared libraries opened on first use instead of at process start.
 *
 * Every cista process starts with the libraries it links, and the dynamic loader's work grows
 * with each of them and their own dependencies. Libraries that serve one feature only (libpq for
 * the KBS store on PostgreSQL, which brings krb5, ldap, gnutls, ...) are opened with dlopen()
 * when that feature is first used, so the short-lived processes that never use it (OCI `state`,
 * `kill`, `delete`, ...) do not pay for them.
 *
 * A user declares a `static dynlib` with DYNLIB_INIT and a bind callback that resolves the
 * symbols it calls with dynlib_sym() into its own table of function pointers, declared with the
 * prototypes of the library's header so that calls stay type-checked. dynlib_load() opens the
 * library and runs bind once per process; the outcome, success or the error, is kept and given
 * to every later caller, so a missing library is reported the same way each time.
 *
 * Thread-safe: any number of threads may call dynlib_load() on the same dynlib; bind runs once,
 * under a lock, and its table is complete and visible to a thread once dynlib_load() returned 0
 * to it. Trust: the library is found by soname through the dynamic loader's search path, as a
 * linked library would be; nothing here reads untrusted input.
 */
#ifndef CISTA_DYNLIB_H
#define CISTA_DYNLIB_H

#include <stdatomic.h>

#include "util/err.h"

typedef struct dynlib dynlib;

struct dynlib {
    const char *soname;  /* with its ABI version: "libpq.so.5" */
    const char *user;    /* what needs it, for messages: "PostgreSQL store" */
    const char *package; /* the Debian package that installs it: "libpq5" */
    /*
     * Runs once, after the library was opened: resolve every symbol with dynlib_sym() (and do
     * any one-time library setup). A failure is kept as the outcome of every dynlib_load().
     */
    int (*bind)(dynlib *lib, cista_error **err);
    /* Private to dynlib.c. */
    void *handle;
    _Atomic int state; /* 0: not tried; 1: loaded; < 0: failed with this code */
    char *error;       /* the failure's message, kept for later callers */
};

#define DYNLIB_INIT(soname_, user_, package_, bind_)                                               \
    {                                                                                              \
        .soname = (soname_), .user = (user_), .package = (package_), .bind = (bind_)               \
    }

/*
 * Open @lib (dlopen RTLD_NOW | RTLD_LOCAL) and bind it, on the first call in the process; later
 * calls return the first call's outcome at the cost of one atomic load. A library that cannot be
 * opened is -ELIBACC with the loader's message and the package to install. @lib is a static
 * object owned by its user; the library stays loaded until the process exits.
 */
int dynlib_load(dynlib *lib, cista_error **err) __attribute__((warn_unused_result));

/*
 * For bind callbacks: the address of symbol @name in @lib in *out, or -ELIBACC when the library
 * does not export it (a version older than the headers cista was built with).
 */
int dynlib_sym(void **out, dynlib *lib, const char *name, cista_error **err)
    __attribute__((warn_unused_result));

#endif
