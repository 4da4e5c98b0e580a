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
 * and, for one stream, the stream core's door itself (StreamDoor: query, synchronize,
 * record_event, submit), whose checks of the stream's state and count of the operation in flight
 * are made here too, so that s.query() reaches the runtime through no Python frame but its own.
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
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>  /* PyMemberDef (in Python.h from 3.12) */
#endif
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

/* ---- StreamDoor: the stream core's door for one stream, compiled ---------------------------- */

/* The fast path of the door (streamcore.StreamCore) for the hot operations, with every check
 * the Python door makes, made with the GIL held: the handle is open (core.value is not None),
 * the stream is not capturing, no host callback runs (the `running` list is empty), no trace
 * is open (`tracers` is empty), no release waits (`pending` is empty, for synchronize). Then
 * the operation is counted in flight (core.users, and an event's users), as Handle.enter does,
 * so that a concurrent close releases the handle only after it (whoever leaves last calls
 * finish()). Anything else, any status but success (and, for a query, not-ready), and the
 * calls turned off, go to the same method of `slow` (StreamCore's own, unbound), which makes
 * the Python door's checks and raises its errors. */

typedef struct {
    PyObject_HEAD
    handle_fn query;
    pair_fn record;
    void *stream;
    long not_ready;
    PyObject *calls;    /* what a submitted operation is called with */
    PyObject *slow;     /* StreamCore: slow.query(core), ... */
    PyObject *running;  /* list: one entry per host callback running */
    PyObject *tracers;  /* list: the open traces */
    PyObject *pending;  /* collections.deque: the deferred releases */
    /* where the slots live: value and users of Handle (a stream core's and an event's holder),
     * capture, callback_errors and calls of StreamCore, read as the slots' member descriptors
     * do */
    PyTypeObject *handle_type, *core_type;
    Py_ssize_t value_at, users_at, capture_at, errors_at, calls_at;
} StreamDoor;

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX 16  /* structmember.h's T_OBJECT_EX */
#endif

static PyObject *str_finish, *str_query, *str_synchronize, *str_record_event, *str_submit;

/* A slot's value (borrowed; NULL where it is unset). */
static inline PyObject *
slot(PyObject *obj, Py_ssize_t offset)
{
    return *(PyObject **)((char *)obj + offset);
}

/* The offset of the object slot `name` of `type`, and the type that defines it (a base of
 * `type`, so that the offset is valid in every instance of `type`); -1 with an exception set
 * where it is not one. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name, PyTypeObject **owner)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    Py_ssize_t offset = -1;
    if (descr == NULL)
        return -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
            ((PyMemberDescrObject *)descr)->d_member->type == Py_T_OBJECT_EX &&
            PyType_IsSubtype(type, ((PyDescrObject *)descr)->d_type)) {
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
        *owner = ((PyDescrObject *)descr)->d_type;
    }
    else {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member of it or its bases",
                     type->tp_name, name);
    }
    Py_DECREF(descr);
    return offset;
}

static int leave(StreamDoor *self, PyObject *holder);

/* Handle.enter: 1: the operation is counted in flight on `holder` and its handle is open
 * (with `address`, the handle's value as a pointer); 0: the handle is closed, or `holder` no
 * Handle (nothing counted); -1: an exception (nothing counted). Counted first, then the handle
 * read, as Handle.enter does. */
static int
enter(StreamDoor *self, PyObject *holder, void **address)
{
    if (!PyObject_TypeCheck(holder, self->handle_type))
        return 0;
    PyObject *users = slot(holder, self->users_at);
    if (users == NULL || !PyList_CheckExact(users))
        return 0;
    if (PyList_Append(users, Py_None) < 0)
        return -1;
    PyObject *value = slot(holder, self->value_at);
    int open = value != NULL && value != Py_None;
    if (open && address != NULL && as_address(value, address) < 0)
        open = -1;
    if (open <= 0 && leave(self, holder) < 0)
        return -1;
    return open;
}

/* Handle.leave: uncount the operation; the last one to leave a closed handle releases it. An
 * exception already set (the operation's own) stays. */
static int
leave(StreamDoor *self, PyObject *holder)
{
    PyObject *users = slot(holder, self->users_at);
    if (users == NULL || !PyList_CheckExact(users)) {  /* replaced while counted */
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "a handle's users list was replaced while an "
                                               "operation was counted in it");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(users);
    if (PyList_SetSlice(users, n - 1, n, NULL) < 0)
        return -1;
    if (n > 1 || slot(holder, self->value_at) != Py_None)
        return 0;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *done = PyObject_CallMethodNoArgs(holder, str_finish);  /* never raises */
    if (done == NULL && type != NULL)
        PyErr_Clear();
    Py_XDECREF(done);
    if (type != NULL)
        PyErr_Restore(type, value, tb);
    return done == NULL && type == NULL ? -1 : 0;
}

/* 1: the door may take the fast path for core (a StreamCore whose calls are this door's, so
 * that the door's stream is core's handle, not capturing, no callback running, and with
 * `traced`, no trace open); 0: not. */
static int
fast_state(StreamDoor *self, PyObject *core, int traced)
{
    if (PyList_GET_SIZE(self->running) != 0 || (traced && PyList_GET_SIZE(self->tracers) != 0))
        return 0;
    if (!PyObject_TypeCheck(core, self->core_type))
        return 0;
    return slot(core, self->calls_at) == self->calls && slot(core, self->capture_at) == Py_None;
}

static PyObject *
slow_call(StreamDoor *self, PyObject *name, PyObject *const *args, size_t nargs)
{
    PyObject *fn = PyObject_GetAttr(self->slow, name);
    if (fn == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(fn, args, nargs, NULL);
    Py_DECREF(fn);
    return result;
}

/* The stream's query call, counted in flight on core: its status, or NOT_CALLED. */
static int
counted_query(StreamDoor *self, PyObject *core, int *status)
{
    int open = enter(self, core, NULL);
    if (open <= 0)
        return open;
    *status = NOT_CALLED;
    if (calls_enabled) {
        handle_fn fn = self->query;
        void *stream = self->stream;
        Py_BEGIN_ALLOW_THREADS
        *status = fn(stream);
        Py_END_ALLOW_THREADS
    }
    return leave(self, core) < 0 ? -1 : 1;
}

static PyObject *
door_query(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    StreamDoor *self = (StreamDoor *)op;
    int status, done;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "query(core) takes the stream's core");
        return NULL;
    }
    done = fast_state(self, args[0], 0);
    if (done > 0)
        done = counted_query(self, args[0], &status);
    if (done < 0)
        return NULL;
    if (done > 0) {
        if (status == 0)
            Py_RETURN_TRUE;
        if (status == self->not_ready)
            Py_RETURN_FALSE;
    }
    return slow_call(self, str_query, args, 1);
}

static PyObject *
door_synchronize(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    StreamDoor *self = (StreamDoor *)op;
    int status = NOT_CALLED, done = 0;
    if (nargs != 1 && nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "synchronize(core, timeout=None) takes the stream's "
                                         "core");
        return NULL;
    }
    /* an idle stream: one query, as the Python door makes first */
    if (nargs == 1 || args[1] == Py_None) {
        Py_ssize_t waiting = PyObject_Length(self->pending);
        if (waiting < 0)
            return NULL;
        if (waiting == 0)
            done = fast_state(self, args[0], 0);
    }
    if (done > 0)
        done = counted_query(self, args[0], &status);
    if (done < 0)
        return NULL;
    if (done > 0 && status == 0) {
        PyObject *errors = slot(args[0], self->errors_at);
        if (errors != NULL && PyList_CheckExact(errors) && PyList_GET_SIZE(errors) == 0)
            Py_RETURN_NONE;
    }
    return slow_call(self, str_synchronize, args, (size_t)nargs);
}

static PyObject *
door_record_event(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    StreamDoor *self = (StreamDoor *)op;
    int status = NOT_CALLED, done, event_open;
    void *event = NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "record_event(core, event_handle) takes the stream's "
                                         "core and the event's handle holder");
        return NULL;
    }
    done = fast_state(self, args[0], 1);
    if (done <= 0)
        goto slow;
    event_open = enter(self, args[1], &event);
    if (event_open <= 0) {
        done = event_open;
        goto slow;
    }
    done = enter(self, args[0], NULL);
    if (done > 0) {
        if (calls_enabled) {
            pair_fn fn = self->record;
            void *stream = self->stream;
            Py_BEGIN_ALLOW_THREADS
            status = fn(event, stream);
            Py_END_ALLOW_THREADS
        }
        if (leave(self, args[0]) < 0)
            done = -1;
    }
    if (leave(self, args[1]) < 0)
        done = -1;
slow:
    if (done < 0)
        return NULL;
    if (done > 0 && status == 0)
        Py_RETURN_NONE;
    return slow_call(self, str_record_event, args, 2);
}

static PyObject *
door_submit(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    StreamDoor *self = (StreamDoor *)op;
    PyObject *small[8], **call_args = small, *result;
    int done;
    if (nargs < 3) {
        PyErr_SetString(PyExc_TypeError, "submit(core, kind, fn, *args) takes the stream's "
                                         "core, the kind of operation and its function");
        return NULL;
    }
    done = fast_state(self, args[0], 1);
    if (done > 0)
        done = enter(self, args[0], NULL);
    if (done < 0)
        return NULL;
    if (done == 0)
        return slow_call(self, str_submit, args, (size_t)nargs);
    /* fn(calls, *args), with the GIL held */
    Py_ssize_t n = nargs - 2;
    if (n > (Py_ssize_t)(sizeof small / sizeof small[0])) {
        call_args = PyMem_Malloc((size_t)n * sizeof(PyObject *));
        if (call_args == NULL) {
            PyErr_NoMemory();
            leave(self, args[0]);
            return NULL;
        }
    }
    call_args[0] = self->calls;
    for (Py_ssize_t i = 1; i < n; i++)
        call_args[i] = args[i + 2];
    result = PyObject_Vectorcall(args[2], call_args, (size_t)n, NULL);
    if (call_args != small)
        PyMem_Free(call_args);
    if (leave(self, args[0]) < 0) {
        Py_XDECREF(result);
        return NULL;
    }
    return result;
}

static int
door_traverse(PyObject *op, visitproc visit, void *arg)
{
    StreamDoor *self = (StreamDoor *)op;
    Py_VISIT(self->calls);
    Py_VISIT(self->slow);
    Py_VISIT(self->running);
    Py_VISIT(self->tracers);
    Py_VISIT(self->pending);
    Py_VISIT(self->core_type);
    Py_VISIT(self->handle_type);
    return 0;
}

static int
door_clear(PyObject *op)
{
    StreamDoor *self = (StreamDoor *)op;
    Py_CLEAR(self->calls);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->running);
    Py_CLEAR(self->tracers);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->core_type);
    Py_CLEAR(self->handle_type);
    return 0;
}

static void
door_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    door_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *
door_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"query", "record", "stream", "not_ready", "calls", "slow",
                               "running", "tracers", "pending", NULL};
    void *query = NULL, *record = NULL, *stream = NULL;
    long not_ready;
    PyObject *calls, *slow, *running, *tracers, *pending;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&lOOO!O!O:StreamDoor", keywords,
                                     address_converter, &query, address_converter, &record,
                                     address_converter, &stream, &not_ready, &calls, &slow,
                                     &PyList_Type, &running, &PyList_Type, &tracers, &pending))
        return NULL;
    if (checked_function(query) == NULL || checked_function(record) == NULL)
        return NULL;
    if (!PyType_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "slow must be the stream core's class");
        return NULL;
    }
    /* value and users are read in event holders too (instances of handle_type, the type
     * that defines value), at the offsets found through the core's class: both must be
     * handle_type's own slots, not a subclass's shadowing one */
    PyTypeObject *core_type = (PyTypeObject *)slow, *handle_type = NULL, *owner = NULL;
    Py_ssize_t value_at, users_at, capture_at, errors_at, calls_at;
    if ((value_at = slot_offset(core_type, "value", &handle_type)) < 0 ||
            (users_at = slot_offset(core_type, "users", &owner)) < 0)
        return NULL;
    if (owner != handle_type) {
        PyErr_Format(PyExc_TypeError, "%s.users and .value must be slots of one type (the "
                     "handle holder's), not of %s and %s", core_type->tp_name, owner->tp_name,
                     handle_type->tp_name);
        return NULL;
    }
    if ((capture_at = slot_offset(core_type, "capture", &owner)) < 0 ||
            (errors_at = slot_offset(core_type, "callback_errors", &owner)) < 0 ||
            (calls_at = slot_offset(core_type, "calls", &owner)) < 0)
        return NULL;
    StreamDoor *self = (StreamDoor *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->core_type = (PyTypeObject *)Py_NewRef(slow);
    self->handle_type = (PyTypeObject *)Py_NewRef(handle_type);
    self->value_at = value_at;
    self->users_at = users_at;
    self->capture_at = capture_at;
    self->errors_at = errors_at;
    self->calls_at = calls_at;
    self->query = (handle_fn)query;
    self->record = (pair_fn)record;
    self->stream = stream;
    self->not_ready = not_ready;
    self->calls = Py_NewRef(calls);
    self->slow = Py_NewRef(slow);
    self->running = Py_NewRef(running);
    self->tracers = Py_NewRef(tracers);
    self->pending = Py_NewRef(pending);
    return (PyObject *)self;
}

static PyObject *
door_repr(PyObject *op)
{
    StreamDoor *self = (StreamDoor *)op;
    char stream[24];
    return PyUnicode_FromFormat("<StreamDoor stream=%s>", hex(self->stream, stream,
                                                              sizeof stream));
}

static PyMethodDef door_methods[] = {
    {"query", (PyCFunction)(void (*)(void))door_query, METH_FASTCALL,
     PyDoc_STR("query(core) -> bool: StreamCore.query(core), the idle answer compiled.")},
    {"synchronize", (PyCFunction)(void (*)(void))door_synchronize, METH_FASTCALL,
     PyDoc_STR("synchronize(core, timeout=None): StreamCore.synchronize(core, timeout), an "
               "idle stream's answer compiled.")},
    {"record_event", (PyCFunction)(void (*)(void))door_record_event, METH_FASTCALL,
     PyDoc_STR("record_event(core, event_handle): StreamCore.record_event(core, "
               "event_handle), the record compiled.")},
    {"submit", (PyCFunction)(void (*)(void))door_submit, METH_FASTCALL,
     PyDoc_STR("submit(core, kind, fn, *args): StreamCore.submit(core, kind, fn, *args), the "
               "door's checks and count compiled.")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StreamDoorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rocmstreams.backends.native_calls.StreamDoor",
    .tp_doc = PyDoc_STR("StreamDoor(query, record, stream, not_ready, calls, slow, running, "
                        "tracers, pending): the stream core's door for one stream, its checks "
                        "and in-flight count made in C; anything but the fast path goes to "
                        "slow's method of the same name."),
    .tp_basicsize = sizeof(StreamDoor),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = door_new,
    .tp_repr = door_repr,
    .tp_methods = door_methods,
    .tp_traverse = door_traverse,
    .tp_clear = door_clear,
    .tp_dealloc = door_dealloc,
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
    PyTypeObject *types[] = {&HandleCallType, &HandlePairCallType, &KernelLaunchType,
                             &StreamDoorType};
    PyObject **names[] = {&str_finish, &str_query, &str_synchronize, &str_record_event,
                          &str_submit};
    const char *texts[] = {"finish", "query", "synchronize", "record_event", "submit"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i] == NULL && (*names[i] = PyUnicode_InternFromString(texts[i])) == NULL)
            return NULL;
    }
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
