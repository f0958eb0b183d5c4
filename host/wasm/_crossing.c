/* The crossing between Python and wasmtime on the per-request path, in C.
 *
 * Built beside the mypyc modules by packaging/build_native.py; runtime.py uses it when
 * it imports, and otherwise makes the same two crossings with ctypes (the pure-Python
 * path, and the reference for what this does). Each ctypes crossing converts every
 * argument through a ctypes type, allocates a tuple and a pointer object, and goes
 * through libffi; here a guest call is one C call and a host function is called with
 * its i32 arguments as ints straight from wasmtime's args-and-results array.
 *
 * Nothing here links against wasmtime: `bind` receives the addresses of the C entry
 * points it needs from the library wasmtime-py already loaded.
 *
 *   call(ctx, func, buf, n, trap_slot, args, deadline, keep_gil) -> int | (err, trap)
 *       wasmtime_func_call_unchecked with `args` (i32s, masked to 32 bits) written to
 *       the u32 words 0, 4, 8, ... of `buf` (wasmtime_val_raw_t is 16 bytes). A
 *       nonzero `deadline` (an outermost call) first sets the store's epoch deadline
 *       that many ticks ahead; 0 (a nested call) shares its caller's. The GIL is
 *       released around the call (other threads run meanwhile) unless `keep_gil` (a
 *       nested call while a native ticker enforces the deadline). Returns word 0 of `buf` (the i32
 *       result, if any) on success; on an error or a trap, (err, trap) as addresses,
 *       with the trap slot cleared.
 *   ticker_start(engine, interval_us, cell, keep) / ticker_stop(t)
 *       the engine's epoch ticker as a native thread (see below); it counts its ticks
 *       in the aligned u64 at `cell`, which Python reads through a memoryview.
 *   define(linker, module, name, functype, impl, owner, on_error, label, fault_type,
 *          fault, nparams, returns) -> err
 *       wasmtime_linker_define_func_unchecked for a host function of up to 8 i32
 *       parameters and one i32 result or none. When the guest calls it:
 *       r = impl(owner, a0, ..., a{n-1}); the result (if any) is stored masked to 32
 *       bits; a `fault_type` exception stores `fault` instead (a bad guest pointer is a
 *       status, not a trap); any other exception (or a result that is not an int)
 *       becomes the trap that on_error(label, exc) returns (an address, or 0).
 *   Memory(): a window onto a guest's linear memory, kept by its Instance:
 *       remap(base, size) points it at [base, base+size) (0, 0: nothing); read(ptr, n)
 *       -> bytes, read_u32(ptr) -> int, write(ptr, data), write_u32(ptr, v),
 *       write_u64(ptr, v) (little-endian, v masked) -> True. Every access is checked
 *       against the window: one outside it (or with a negative number) touches nothing
 *       and returns None (reads) or False (writes), and the Instance then maps the
 *       memory again (it may have grown) or raises its GuestFault.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef void *(*call_unchecked_t)(void *ctx, const void *func, void *args, size_t n,
                                  void **trap);
typedef void *(*callback_t)(void *env, void *caller, void *args, size_t n);
typedef void *(*define_unchecked_t)(void *linker, const char *module, size_t module_len,
                                    const char *name, size_t name_len, const void *ty,
                                    callback_t cb, void *env, void (*finalizer)(void *));
typedef void *(*trap_new_t)(const char *msg, size_t len);
typedef void (*set_deadline_t)(void *ctx, uint64_t ticks_beyond_current);
typedef void (*increment_epoch_t)(void *engine);

static call_unchecked_t g_call = NULL;
static define_unchecked_t g_define = NULL;
static trap_new_t g_trap_new = NULL;
static set_deadline_t g_set_deadline = NULL;
static increment_epoch_t g_increment_epoch = NULL;

#define MAX_PARAMS 8
#define SLOT_BYTES 16 /* sizeof(wasmtime_val_raw_t) */

typedef struct {
    PyObject *impl;
    PyObject *owner;
    PyObject *on_error;
    PyObject *label;
    PyObject *fault_type;
    uint32_t fault;
    int nparams;
    int returns;
} host_env;

/* An address argument; once one has failed (`*ok` cleared, the error set), the rest
   are not read, so no C-API call runs with an exception pending. */
static void *
address(PyObject *o, int *ok)
{
    if (!*ok)
        return NULL;
    void *p = PyLong_AsVoidPtr(o);
    if (p == NULL && PyErr_Occurred())
        *ok = 0;
    return p;
}

static PyObject *
crossing_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ok = 1;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "bind(call, define, trap_new, set_deadline, increment_epoch) takes "
                        "5 addresses");
        return NULL;
    }
    void *a[5];
    for (int i = 0; i < 5; i++) {
        a[i] = address(args[i], &ok);
        if (ok && a[i] == NULL) {
            PyErr_SetString(PyExc_ValueError, "bind: a null entry point");
            return NULL;
        }
    }
    if (!ok)
        return NULL;
    g_call = (call_unchecked_t)a[0];
    g_define = (define_unchecked_t)a[1];
    g_trap_new = (trap_new_t)a[2];
    g_set_deadline = (set_deadline_t)a[3];
    g_increment_epoch = (increment_epoch_t)a[4];
    Py_RETURN_NONE;
}

static PyObject *
crossing_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ok = 1;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "call(ctx, func, buf, n, trap_slot, args, deadline, keep_gil)");
        return NULL;
    }
    if (g_call == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "call before bind");
        return NULL;
    }
    void *ctx = address(args[0], &ok);
    void *func = address(args[1], &ok);
    uint8_t *buf = (uint8_t *)address(args[2], &ok);
    void **trap_slot = (void **)address(args[4], &ok);
    if (!ok)
        return NULL;
    size_t n = PyLong_AsSize_t(args[3]);
    if (n == (size_t)-1 && PyErr_Occurred())
        return NULL;
    unsigned long long deadline = PyLong_AsUnsignedLongLong(args[6]);
    if (deadline == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int keep_gil = PyObject_IsTrue(args[7]);
    if (keep_gil < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(args[5], "call: args must be a sequence of ints");
    if (seq == NULL)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if ((size_t)k > n) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "call: more arguments than slots");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLongMask(items[i]);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        uint32_t w = (uint32_t)v;
        memcpy(buf + i * SLOT_BYTES, &w, 4);
    }
    Py_DECREF(seq);
    void *err;
    if (deadline)
        g_set_deadline(ctx, deadline);
    if (keep_gil) {
        /* A nested call (the guest allocator, from a host function): short, inside its
           caller's deadline, which a native ticker enforces without the GIL; a GIL
           handoff would cost more than the call. */
        err = g_call(ctx, func, buf, n, trap_slot);
    } else {
        Py_BEGIN_ALLOW_THREADS
        err = g_call(ctx, func, buf, n, trap_slot);
        Py_END_ALLOW_THREADS
    }
    void *trap = *trap_slot;
    if (err != NULL || trap != NULL) {
        *trap_slot = NULL;
        return Py_BuildValue("(NN)", PyLong_FromVoidPtr(err), PyLong_FromVoidPtr(trap));
    }
    uint32_t r;
    memcpy(&r, buf, 4);
    return PyLong_FromUnsignedLong(r);
}

/* The exception being handled (a reference) with its traceback attached. */
static PyObject *
fetch_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        Py_RETURN_NONE;
    }
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

static void *
trap_for_exception(host_env *e)
{
    PyObject *exc = fetch_exception();
    PyObject *r = PyObject_CallFunctionObjArgs(e->on_error, e->label, exc, NULL);
    Py_DECREF(exc);
    void *trap = NULL;
    if (r != NULL) {
        trap = PyLong_AsVoidPtr(r);
        Py_DECREF(r);
    }
    if (r == NULL || PyErr_Occurred()) {
        PyErr_WriteUnraisable(e->on_error);
        trap = NULL;
    }
    if (trap == NULL) {
        static const char msg[] = "host function failed";
        trap = g_trap_new(msg, sizeof msg - 1);
    }
    return trap;
}

static void *
host_callback(void *env, void *caller, void *args_results, size_t n)
{
    host_env *e = (host_env *)env;
    uint8_t *slots = (uint8_t *)args_results;
    void *trap = NULL;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *argv[MAX_PARAMS + 1];
    int made = 0;
    argv[0] = e->owner;
    for (int i = 0; i < e->nparams; i++) {
        uint32_t w;
        memcpy(&w, slots + i * SLOT_BYTES, 4);
        PyObject *v = PyLong_FromUnsignedLong(w);
        if (v == NULL)
            break;
        argv[i + 1] = v;
        made++;
    }
    PyObject *r = NULL;
    if (made == e->nparams)
        r = PyObject_Vectorcall(e->impl, argv, (size_t)(made + 1), NULL);
    for (int i = 1; i <= made; i++)
        Py_DECREF(argv[i]);
    if (r != NULL && e->returns && !PyLong_Check(r)) {
        PyErr_Format(PyExc_TypeError, "host function returned %.100s, not an int",
                     Py_TYPE(r)->tp_name);
        Py_CLEAR(r);
    }
    if (r != NULL) {
        if (e->returns) {
            uint32_t w = (uint32_t)PyLong_AsUnsignedLongLongMask(r);
            memcpy(slots, &w, 4);
        }
        Py_DECREF(r);
    } else if (PyErr_ExceptionMatches(e->fault_type)) {
        PyErr_Clear();
        if (e->returns)
            memcpy(slots, &e->fault, 4);
    } else {
        trap = trap_for_exception(e);
    }
    PyGILState_Release(gil);
    return trap;
}

static void
host_env_free(void *env)
{
    host_env *e = (host_env *)env;
    if (e == NULL)
        return;
    if (!Py_IsInitialized()) /* at exit: the objects go with the interpreter */
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_XDECREF(e->impl);
    Py_XDECREF(e->owner);
    Py_XDECREF(e->on_error);
    Py_XDECREF(e->label);
    Py_XDECREF(e->fault_type);
    PyMem_RawFree(e);
    PyGILState_Release(gil);
}

static PyObject *
crossing_define(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ok = 1;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError,
                        "define(linker, module, name, functype, impl, owner, on_error, "
                        "label, fault_type, fault, nparams, returns)");
        return NULL;
    }
    if (g_define == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "define before bind");
        return NULL;
    }
    void *linker = address(args[0], &ok);
    void *functype = address(args[3], &ok);
    if (!ok)
        return NULL;
    char *module, *name;
    Py_ssize_t module_len, name_len;
    if (PyBytes_AsStringAndSize(args[1], &module, &module_len) < 0 ||
        PyBytes_AsStringAndSize(args[2], &name, &name_len) < 0)
        return NULL;
    if (!PyCallable_Check(args[4]) || !PyCallable_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "define: impl and on_error must be callable");
        return NULL;
    }
    if (!PyExceptionClass_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError, "define: fault_type must be an exception class");
        return NULL;
    }
    unsigned long long fault = PyLong_AsUnsignedLongLongMask(args[9]);
    long nparams = PyLong_AsLong(args[10]);
    int returns = PyObject_IsTrue(args[11]);
    if (PyErr_Occurred() || returns < 0)
        return NULL;
    if (nparams < 0 || nparams > MAX_PARAMS) {
        PyErr_SetString(PyExc_ValueError, "define: up to 8 i32 parameters");
        return NULL;
    }
    host_env *e = (host_env *)PyMem_RawMalloc(sizeof(host_env));
    if (e == NULL)
        return PyErr_NoMemory();
    e->impl = Py_NewRef(args[4]);
    e->owner = Py_NewRef(args[5]);
    e->on_error = Py_NewRef(args[6]);
    e->label = Py_NewRef(args[7]);
    e->fault_type = Py_NewRef(args[8]);
    e->fault = (uint32_t)fault;
    e->nparams = (int)nparams;
    e->returns = returns;
    /* wasmtime owns env from here: it calls host_env_free when the definition goes,
       and also when defining fails */
    void *err = g_define(linker, module, (size_t)module_len, name, (size_t)name_len, functype,
                         host_callback, e, host_env_free);
    return PyLong_FromVoidPtr(err);
}

/* The epoch ticker: a native thread that bumps an engine's epoch every interval, so
   a guest call past its deadline traps. A Python thread would need the GIL for each
   tick, and so take it from the data path (a dozen handoffs per tick, as the guest
   calls release and retake it); this one never touches Python. `keep` (the wasmtime
   engine object and the cell's owner) is held until the thread has stopped. */
typedef struct {
    pthread_t thread;
    void *engine;
    PyObject *keep;
    long interval_ns;
    uint64_t *ticks; /* the caller's 8-byte cell (in `keep`), atomic */
    int stop;        /* atomic */
    int joined;
} ticker_t;

static void *
ticker_main(void *arg)
{
    ticker_t *t = (ticker_t *)arg;
    struct timespec ts = {t->interval_ns / 1000000000L, t->interval_ns % 1000000000L};
    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        nanosleep(&ts, NULL);
        if (__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE))
            break;
        g_increment_epoch(t->engine);
        __atomic_add_fetch(t->ticks, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void
ticker_join(ticker_t *t)
{
    if (t->joined)
        return;
    __atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(t->thread, NULL);
    Py_END_ALLOW_THREADS
    t->joined = 1;
}

static ticker_t *
ticker_of(PyObject *capsule)
{
    return (ticker_t *)PyCapsule_GetPointer(capsule, "wasmdesk.ticker");
}

static void
ticker_free(PyObject *capsule)
{
    ticker_t *t = ticker_of(capsule);
    if (t == NULL)
        return;
    ticker_join(t);
    Py_XDECREF(t->keep);
    PyMem_RawFree(t);
}

static PyObject *
crossing_ticker_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ok = 1;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "ticker_start(engine, interval_us, cell, keep)");
        return NULL;
    }
    if (g_increment_epoch == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ticker_start before bind");
        return NULL;
    }
    void *engine = address(args[0], &ok);
    uint64_t *cell = (uint64_t *)address(args[2], &ok);
    if (!ok)
        return NULL;
    long interval_us = PyLong_AsLong(args[1]);
    if (interval_us == -1 && PyErr_Occurred())
        return NULL;
    if (engine == NULL || cell == NULL || ((uintptr_t)cell & 7) || interval_us <= 0) {
        PyErr_SetString(PyExc_ValueError,
                        "ticker_start: an engine, an aligned cell and a positive interval");
        return NULL;
    }
    ticker_t *t = (ticker_t *)PyMem_RawCalloc(1, sizeof(ticker_t));
    if (t == NULL)
        return PyErr_NoMemory();
    t->engine = engine;
    t->interval_ns = interval_us * 1000L;
    t->ticks = cell;
    t->keep = Py_NewRef(args[3]);
    /* the thread takes no signal: they stay with the threads Python runs on */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&t->thread, NULL, ticker_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        Py_DECREF(t->keep);
        PyMem_RawFree(t);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *capsule = PyCapsule_New(t, "wasmdesk.ticker", ticker_free);
    if (capsule == NULL) {
        ticker_join(t);
        Py_DECREF(t->keep);
        PyMem_RawFree(t);
    }
    return capsule;
}

static PyObject *
crossing_ticker_stop(PyObject *self, PyObject *capsule)
{
    ticker_t *t = ticker_of(capsule);
    if (t == NULL)
        return NULL;
    ticker_join(t);
    Py_RETURN_NONE;
}

/* -- Memory: checked access to a guest's linear memory -- */

typedef struct {
    PyObject_HEAD
    unsigned char *base; /* never NULL */
    uint64_t size;
} memory_t;

static unsigned char no_memory;

static PyObject *
memory_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    memory_t *m = (memory_t *)type->tp_alloc(type, 0);
    if (m != NULL) {
        m->base = &no_memory;
        m->size = 0;
    }
    return (PyObject *)m;
}

/* [ptr, ptr+n) inside the window: the address of ptr, or NULL (nothing set when a
   number is merely out of range; an error set when an argument is not an int). */
static unsigned char *
window(memory_t *m, PyObject *ptr_o, uint64_t n, int *err)
{
    int overflow = 0;
    long long ptr = PyLong_AsLongLongAndOverflow(ptr_o, &overflow);
    if (ptr == -1 && PyErr_Occurred()) {
        *err = 1;
        return NULL;
    }
    if (overflow || ptr < 0 || (uint64_t)ptr > m->size ||
        n > m->size - (uint64_t)ptr)
        return NULL;
    return m->base + ptr;
}

/* A length argument: -1 when it is negative or too large (out of any window), -2 on
   an error (set). */
static long long
length(PyObject *o)
{
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (n == -1 && PyErr_Occurred())
        return -2;
    return (overflow || n < 0) ? -1 : n;
}

static PyObject *
memory_remap(memory_t *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "remap(base, size)");
        return NULL;
    }
    void *base = PyLong_AsVoidPtr(args[0]);
    if (base == NULL && PyErr_Occurred())
        return NULL;
    unsigned long long size = PyLong_AsUnsignedLongLong(args[1]);
    if (size == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    /* no memory is an empty window: [0, 0) is still inside it */
    m->base = base == NULL ? &no_memory : (unsigned char *)base;
    m->size = base == NULL ? 0 : size;
    Py_RETURN_NONE;
}

static PyObject *
memory_read(memory_t *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read(ptr, n)");
        return NULL;
    }
    long long n = length(args[1]);
    if (n == -2)
        return NULL;
    int err = 0;
    unsigned char *p = n < 0 ? NULL : window(m, args[0], (uint64_t)n, &err);
    if (p == NULL) {
        if (err)
            return NULL;
        Py_RETURN_NONE;
    }
    return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
}

static PyObject *
memory_read_u32(memory_t *m, PyObject *ptr)
{
    int err = 0;
    unsigned char *p = window(m, ptr, 4, &err);
    if (p == NULL) {
        if (err)
            return NULL;
        Py_RETURN_NONE;
    }
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    return PyLong_FromUnsignedLong(v);
}

static PyObject *
memory_write(memory_t *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "write(ptr, data)");
        return NULL;
    }
    Py_buffer view;
    const char *src;
    Py_ssize_t n;
    int buffered = 0;
    if (PyBytes_CheckExact(args[1])) {
        src = PyBytes_AS_STRING(args[1]);
        n = PyBytes_GET_SIZE(args[1]);
    } else {
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        buffered = 1;
        src = (const char *)view.buf;
        n = view.len;
    }
    int err = 0;
    unsigned char *p = window(m, args[0], (uint64_t)n, &err);
    if (p != NULL)
        memmove(p, src, (size_t)n);
    if (buffered)
        PyBuffer_Release(&view);
    if (err)
        return NULL;
    return PyBool_FromLong(p != NULL);
}

static PyObject *
store_word(memory_t *m, PyObject *const *args, Py_ssize_t nargs, int bytes)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "write_u32/write_u64(ptr, value)");
        return NULL;
    }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(args[1]);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int err = 0;
    unsigned char *p = window(m, args[0], (uint64_t)bytes, &err);
    if (p == NULL) {
        if (err)
            return NULL;
        Py_RETURN_FALSE;
    }
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    Py_RETURN_TRUE;
}

static PyObject *
memory_write_u32(memory_t *m, PyObject *const *args, Py_ssize_t nargs)
{
    return store_word(m, args, nargs, 4);
}

static PyObject *
memory_write_u64(memory_t *m, PyObject *const *args, Py_ssize_t nargs)
{
    return store_word(m, args, nargs, 8);
}

static PyMethodDef memory_methods[] = {
    {"remap", (PyCFunction)(void (*)(void))memory_remap, METH_FASTCALL,
     "remap(base, size): the window is [base, base+size) from now on"},
    {"read", (PyCFunction)(void (*)(void))memory_read, METH_FASTCALL,
     "read(ptr, n) -> bytes, or None outside the window"},
    {"read_u32", (PyCFunction)memory_read_u32, METH_O,
     "read_u32(ptr) -> int (little-endian), or None outside the window"},
    {"write", (PyCFunction)(void (*)(void))memory_write, METH_FASTCALL,
     "write(ptr, data) -> True, or False (nothing written) outside the window"},
    {"write_u32", (PyCFunction)(void (*)(void))memory_write_u32, METH_FASTCALL,
     "write_u32(ptr, value) -> bool: the low 32 bits, little-endian"},
    {"write_u64", (PyCFunction)(void (*)(void))memory_write_u64, METH_FASTCALL,
     "write_u64(ptr, value) -> bool: the low 64 bits, little-endian"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject memory_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "host.wasm._crossing.Memory",
    .tp_basicsize = sizeof(memory_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory(): checked access to a guest's linear memory (see _crossing.c)",
    .tp_methods = memory_methods,
    .tp_new = memory_new,
};

static PyMethodDef crossing_methods[] = {
    {"ticker_start", (PyCFunction)(void (*)(void))crossing_ticker_start, METH_FASTCALL,
     "ticker_start(engine, interval_us, cell, keep) -> ticker: a native thread bumping "
     "the engine's epoch and the u64 at `cell`"},
    {"ticker_stop", crossing_ticker_stop, METH_O, "ticker_stop(ticker): stop and join"},
    {"bind", (PyCFunction)(void (*)(void))crossing_bind, METH_FASTCALL,
     "bind(call, define, trap_new, set_deadline, increment_epoch): the wasmtime entry "
     "points, as addresses"},
    {"call", (PyCFunction)(void (*)(void))crossing_call, METH_FASTCALL,
     "call(ctx, func, buf, n, trap_slot, args, deadline, keep_gil) -> result word | "
     "(err, trap)"},
    {"define", (PyCFunction)(void (*)(void))crossing_define, METH_FASTCALL,
     "define(linker, module, name, functype, impl, owner, on_error, label, fault_type, "
     "fault, nparams, returns) -> err"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef crossing_module = {
    PyModuleDef_HEAD_INIT, "_crossing",
    "The Python/wasmtime crossing of the per-request path (see _crossing.c).", -1,
    crossing_methods,
};

PyMODINIT_FUNC
PyInit__crossing(void)
{
    if (PyType_Ready(&memory_type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&crossing_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&memory_type);
    if (PyModule_AddObject(m, "Memory", (PyObject *)&memory_type) < 0) {
        Py_DECREF(&memory_type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
