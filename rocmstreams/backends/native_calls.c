/* rocmstreams.backends.native_calls: the hot runtime calls, made from compiled code.
 *
 * The backends take the C entry points of the runtime's library at load time (ctypes gives
 * their addresses) and bind each to what stays fixed, so that a hot call parses few or no
 * arguments and builds no tuple:
 *
 *   HandleCall(fn, handle)()                       fn(handle)         int f(void *)
 *   HandlePairCall(fn, second)(first)              fn(first, second)  int f(void *, void *)
 *   KernelLaunch(fn, function, params, extra)(gx, gy, gz, bx, by, bz, shared, stream)
 *       fn(function, gx, gy, gz, bx, by, bz, shared, stream, params, extra)
 *
 * cuStreamQuery/hipStreamQuery, cuStreamSynchronize/hipStreamSynchronize, cuEventRecord/
 * hipEventRecord and cuLaunchKernel/hipModuleLaunchKernel have these signatures on both runtimes,
 * so no vendor header is needed. Every call returns the runtime's status as an int, and releases
 * the GIL while the runtime runs (a host function waiting for the GIL must never wait on us).
 * The Python side reads the status: success goes on, anything else takes the binding's own call,
 * which raises the runtime's error. While the calls are turned off (set_enabled(False)) every
 * call returns NOT_CALLED at once without calling anything.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NOT_CALLED (-1)

typedef int (*handle_fn)(void *);
typedef int (*pair_fn)(void *, void *);
typedef int (*launch_fn)(void *, unsigned int, unsigned int, unsigned int, unsigned int,
                         unsigned int, unsigned int, unsigned int, void *, void **, void **);

/* Read and written with the GIL held. */
static int calls_enabled = 1;

/* ---- argument conversion --------------------------------------------------------------------- */

/* An int (or an object with __index__) as a pointer-sized address; -1 with an exception set. */
static int
as_address(PyObject *value, void **out)
{
    if (PyLong_CheckExact(value)) {
        *out = PyLong_AsVoidPtr(value);
    }
    else {
        PyObject *index = PyNumber_Index(value);
        if (index == NULL)
            return -1;
        *out = PyLong_AsVoidPtr(index);
        Py_DECREF(index);
    }
    return (*out == NULL && PyErr_Occurred()) ? -1 : 0;
}

static int
address_converter(PyObject *value, void *out)
{
    return as_address(value, (void **)out) == 0;
}

/* An int in [0, UINT_MAX]; -1 with an exception set. */
static int
as_uint(PyObject *value, unsigned int *out)
{
    unsigned long n;
    if (PyLong_CheckExact(value)) {
        n = PyLong_AsUnsignedLong(value);
    }
    else {
        PyObject *index = PyNumber_Index(value);
        if (index == NULL)
            return -1;
        n = PyLong_AsUnsignedLong(index);
        Py_DECREF(index);
    }
    if (n == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (n > UINT_MAX) {
        PyErr_Format(PyExc_OverflowError, "%lu does not fit an unsigned int", n);
        return -1;
    }
    *out = (unsigned int)n;
    return 0;
}

static int
no_keywords(const char *name, PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", name);
        return -1;
    }
    return 0;
}

static void *
checked_function(void *fn)
{
    if (fn == NULL)
        PyErr_SetString(PyExc_ValueError, "the function address is 0: the runtime library "
                                          "does not provide this call");
    return fn;
}

/* "0x1f00" for an address, "0x0" for NULL (glibc's %p writes "(nil)"). */
static const char *
hex(void *address, char *buffer, size_t size)
{
    snprintf(buffer, size, "0x%" PRIxPTR, (uintptr_t)address);
    return buffer;
}

/* ---- HandleCall: int fn(handle) ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    handle_fn fn;
    void *handle;
} HandleCall;

static PyObject *
handle_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    HandleCall *self = (HandleCall *)op;
    int status = NOT_CALLED;
    (void)args;
    if (no_keywords("HandleCall", kwnames) < 0)
        return NULL;
    if (PyVectorcall_NARGS(nargsf) != 0) {
        PyErr_SetString(PyExc_TypeError, "a HandleCall takes no arguments");
        return NULL;
    }
    if (calls_enabled) {
        handle_fn fn = self->fn;
        void *handle = self->handle;
        Py_BEGIN_ALLOW_THREADS
        status = fn(handle);
        Py_END_ALLOW_THREADS
    }
    return PyLong_FromLong(status);
}

static PyObject *
handle_call_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"fn", "handle", NULL};
    void *fn = NULL, *handle = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&:HandleCall", keywords,
                                     address_converter, &fn, address_converter, &handle))
        return NULL;
    if (checked_function(fn) == NULL)
        return NULL;
    HandleCall *self = (HandleCall *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = handle_call;
    self->fn = (handle_fn)fn;
    self->handle = handle;
    return (PyObject *)self;
}

static PyObject *
handle_call_repr(PyObject *op)
{
    HandleCall *self = (HandleCall *)op;
    char fn[24], handle[24];
    return PyUnicode_FromFormat("<HandleCall %s(%s)>", hex((void *)self->fn, fn, sizeof fn),
                                hex(self->handle, handle, sizeof handle));
}

static PyTypeObject HandleCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rocmstreams.backends.native_calls.HandleCall",
    .tp_doc = PyDoc_STR("HandleCall(fn, handle): calling it makes the C call int fn(handle), "
                        "without the GIL, and returns its status."),
    .tp_basicsize = sizeof(HandleCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(HandleCall, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = handle_call_new,
    .tp_repr = handle_call_repr,
};

/* ---- HandlePairCall: int fn(first, second) -------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    pair_fn fn;
    void *second;
} HandlePairCall;

static PyObject *
pair_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    HandlePairCall *self = (HandlePairCall *)op;
    void *first;
    int status = NOT_CALLED;
    if (no_keywords("HandlePairCall", kwnames) < 0)
        return NULL;
    if (PyVectorcall_NARGS(nargsf) != 1) {
        PyErr_SetString(PyExc_TypeError, "a HandlePairCall takes one argument, the first handle");
        return NULL;
    }
    if (as_address(args[0], &first) < 0)
        return NULL;
    if (calls_enabled) {
        pair_fn fn = self->fn;
        void *second = self->second;
        Py_BEGIN_ALLOW_THREADS
        status = fn(first, second);
        Py_END_ALLOW_THREADS
    }
    return PyLong_FromLong(status);
}

static PyObject *
pair_call_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"fn", "second", NULL};
    void *fn = NULL, *second = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&:HandlePairCall", keywords,
                                     address_converter, &fn, address_converter, &second))
        return NULL;
    if (checked_function(fn) == NULL)
        return NULL;
    HandlePairCall *self = (HandlePairCall *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = pair_call;
    self->fn = (pair_fn)fn;
    self->second = second;
    return (PyObject *)self;
}

static PyObject *
pair_call_repr(PyObject *op)
{
    HandlePairCall *self = (HandlePairCall *)op;
    char fn[24], second[24];
    return PyUnicode_FromFormat("<HandlePairCall %s(first, %s)>",
                                hex((void *)self->fn, fn, sizeof fn),
                                hex(self->second, second, sizeof second));
}

static PyTypeObject HandlePairCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rocmstreams.backends.native_calls.HandlePairCall",
    .tp_doc = PyDoc_STR("HandlePairCall(fn, second): calling it with first makes the C call "
                        "int fn(first, second), without the GIL, and returns its status."),
    .tp_basicsize = sizeof(HandlePairCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(HandlePairCall, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = pair_call_new,
    .tp_repr = pair_call_repr,
};

/* ---- KernelLaunch: cuLaunchKernel / hipModuleLaunchKernel ----------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    launch_fn fn;
    void *function;
    void **params;
    void **extra;
} KernelLaunch;

static PyObject *
launch_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    KernelLaunch *self = (KernelLaunch *)op;
    unsigned int dims[7];  /* gx, gy, gz, bx, by, bz, shared bytes */
    void *stream;
    int status = NOT_CALLED;
    if (no_keywords("KernelLaunch", kwnames) < 0)
        return NULL;
    if (PyVectorcall_NARGS(nargsf) != 8) {
        PyErr_SetString(PyExc_TypeError, "a KernelLaunch takes 8 arguments: gx, gy, gz, bx, by, "
                                         "bz, shared memory bytes, stream");
        return NULL;
    }
    for (int i = 0; i < 7; i++) {
        if (as_uint(args[i], &dims[i]) < 0)
            return NULL;
    }
    if (as_address(args[7], &stream) < 0)
        return NULL;
    if (calls_enabled) {
        KernelLaunch k = *self;
        Py_BEGIN_ALLOW_THREADS
        status = k.fn(k.function, dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6],
                      stream, k.params, k.extra);
        Py_END_ALLOW_THREADS
    }
    return PyLong_FromLong(status);
}

static PyObject *
launch_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"fn", "function", "params", "extra", NULL};
    void *fn = NULL, *function = NULL, *params = NULL, *extra = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&O&:KernelLaunch", keywords,
                                     address_converter, &fn, address_converter, &function,
                                     address_converter, &params, address_converter, &extra))
        return NULL;
    if (checked_function(fn) == NULL)
        return NULL;
    KernelLaunch *self = (KernelLaunch *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = launch_call;
    self->fn = (launch_fn)fn;
    self->function = function;
    self->params = (void **)params;
    self->extra = (void **)extra;
    return (PyObject *)self;
}

static PyObject *
launch_repr(PyObject *op)
{
    KernelLaunch *self = (KernelLaunch *)op;
    char fn[24], function[24], params[24], extra[24];
    return PyUnicode_FromFormat("<KernelLaunch %s(function=%s, params=%s, extra=%s)>",
                                hex((void *)self->fn, fn, sizeof fn),
                                hex(self->function, function, sizeof function),
                                hex((void *)self->params, params, sizeof params),
                                hex((void *)self->extra, extra, sizeof extra));
}

static PyTypeObject KernelLaunchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rocmstreams.backends.native_calls.KernelLaunch",
    .tp_doc = PyDoc_STR("KernelLaunch(fn, function, params, extra): calling it with (gx, gy, gz, "
                        "bx, by, bz, shared, stream) makes the C call fn(function, gx, gy, gz, "
                        "bx, by, bz, shared, stream, params, extra), without the GIL, and "
                        "returns its status."),
    .tp_basicsize = sizeof(KernelLaunch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(KernelLaunch, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = launch_new,
    .tp_repr = launch_repr,
};

/* ---- the switch ----------------------------------------------------------------------------- */

static PyObject *
set_enabled(PyObject *module, PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    (void)module;
    if (on < 0)
        return NULL;
    calls_enabled = on;
    Py_RETURN_NONE;
}

static PyObject *
enabled(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyBool_FromLong(calls_enabled);
}

static PyMethodDef methods[] = {
    {"set_enabled", set_enabled, METH_O,
     PyDoc_STR("set_enabled(flag): turn every bound call on, or off (they then return "
               "NOT_CALLED without calling).")},
    {"enabled", enabled, METH_NOARGS, PyDoc_STR("enabled() -> whether the bound calls call.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rocmstreams.backends.native_calls",
    .m_doc = PyDoc_STR("The hot runtime calls (stream query and synchronize, event record, kernel "
                       "launch) made from compiled code through C function pointers."),
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit_native_calls(void)
{
    PyTypeObject *types[] = {&HandleCallType, &HandlePairCallType, &KernelLaunchType};
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        const char *name = strrchr(types[i]->tp_name, '.') + 1;
        if (PyType_Ready(types[i]) < 0 || PyModule_AddObjectRef(module, name,
                                                                (PyObject *)types[i]) < 0) {
            Py_DECREF(module);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(module, "NOT_CALLED", NOT_CALLED) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
