/*
 * test_dynlib.c - util/dynlib.h: a library opened on first use and bound once (zlib, which cista
 * links anyway, so the test needs nothing new), the kept outcome of a library that is missing or
 * lacks a symbol, and one bind under concurrent first calls.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "util/dynlib.h"
#include "util/err.h"
#include "util/util.h"

static struct {
    __typeof__(zlibVersion) *zlibVersion;
} g_z;
static atomic_int g_binds;

static int bind_z(dynlib *lib, cista_error **err)
{
    void *p = NULL;
    int r = dynlib_sym(&p, lib, "zlibVersion", err);
    if (r < 0)
        return r;
    g_z.zlibVersion = (__typeof__(g_z.zlibVersion))p;
    atomic_fetch_add(&g_binds, 1);
    return 0;
}

static int bind_missing_symbol(dynlib *lib, cista_error **err)
{
    void *p = NULL;
    atomic_fetch_add(&g_binds, 1);
    return dynlib_sym(&p, lib, "cista_no_such_symbol", err);
}

static int bind_silent_failure(dynlib *lib, cista_error **err)
{
    (void)lib;
    (void)err;
    return -EPROTO;
}

static void test_load_and_bind(void **state)
{
    (void)state;
    static dynlib z = DYNLIB_INIT("libz.so.1", "test", "zlib1g", bind_z);
    atomic_store(&g_binds, 0);
    cista_error *e = NULL;
    assert_int_equal(dynlib_load(&z, &e), 0);
    assert_null(e);
    assert_int_equal(dynlib_load(&z, &e), 0);
    assert_int_equal(atomic_load(&g_binds), 1);
    /* The same library the linker gave us: the loader shares it. */
    assert_string_equal(g_z.zlibVersion(), zlibVersion());
}

static void test_missing_library(void **state)
{
    (void)state;
    static dynlib m =
        DYNLIB_INIT("libcista-no-such-library.so.0", "Frobnicator", "libfrob0", bind_z);
    atomic_store(&g_binds, 0);
    for (int i = 0; i < 2; i++) {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(dynlib_load(&m, &e), -ELIBACC);
        assert_non_null(e);
        /* The same message every time: who needs what, how to install it, the loader's why. */
        assert_non_null(strstr(e->msg, "Frobnicator needs libcista-no-such-library.so.0 "
                                       "(apt-get install libfrob0): "));
        assert_non_null(strstr(e->msg, "No such file"));
    }
    assert_int_equal(atomic_load(&g_binds), 0);
    /* No error object: the code alone. */
    assert_int_equal(dynlib_load(&m, NULL), -ELIBACC);
}

static void test_missing_symbol(void **state)
{
    (void)state;
    static dynlib s = DYNLIB_INIT("libz.so.1", "test", "zlib1g", bind_missing_symbol);
    atomic_store(&g_binds, 0);
    for (int i = 0; i < 2; i++) {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(dynlib_load(&s, &e), -ELIBACC);
        assert_non_null(strstr(e->msg, "test: libz.so.1 has no symbol cista_no_such_symbol"));
        assert_non_null(strstr(e->msg, "install the current zlib1g"));
    }
    assert_int_equal(atomic_load(&g_binds), 1);
}

static void test_bind_fails_without_message(void **state)
{
    (void)state;
    static dynlib s = DYNLIB_INIT("libz.so.1", "test", "zlib1g", bind_silent_failure);
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(dynlib_load(&s, &e), -EPROTO);
    assert_non_null(strstr(e->msg, "test: setting up libz.so.1 failed"));
}

static dynlib g_racy = DYNLIB_INIT("libz.so.1", "test", "zlib1g", bind_z);
static pthread_barrier_t g_barrier;

static void *racer(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&g_barrier);
    /* A thread that got 0 must see the whole table. */
    if (dynlib_load(&g_racy, NULL) != 0 || !g_z.zlibVersion)
        return (void *)1;
    return NULL;
}

static void test_concurrent_first_use(void **state)
{
    (void)state;
    enum { THREADS = 8 };
    pthread_t t[THREADS];
    atomic_store(&g_binds, 0);
    g_z.zlibVersion = NULL;
    assert_int_equal(pthread_barrier_init(&g_barrier, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, racer, NULL), 0);
    for (int i = 0; i < THREADS; i++) {
        void *res = (void *)1;
        assert_int_equal(pthread_join(t[i], &res), 0);
        assert_null(res);
    }
    pthread_barrier_destroy(&g_barrier);
    assert_int_equal(atomic_load(&g_binds), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_bind),
        cmocka_unit_test(test_missing_library),
        cmocka_unit_test(test_missing_symbol),
        cmocka_unit_test(test_bind_fails_without_message),
        cmocka_unit_test(test_concurrent_first_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
