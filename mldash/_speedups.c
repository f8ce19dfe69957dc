/* mldash's two hot paths in C, each with a Python twin that gives the same
 * results where this file was not compiled (MLDASH_PURE_PYTHON=1 forces those):
 * MetricQueue is _queue.py's class, behind Metric.append and append_batch on
 * the training thread; splice() is _lines.py's _splice(), which assembles the
 * lines on the writer thread.
 *
 * In Python the call alone (keyword arguments packed into a dict, a frame) costs
 * more than the whole append needs to. Here append() takes the keyword
 * arguments as the interpreter passes them (vectorcall: an array of values and
 * the tuple of their names, a constant of the calling code), checks that each
 * value is a plain float, int, str, bool or None, and appends the timestamp,
 * the names tuple and the values to the pending list. Nothing is allocated per
 * point but list slots. Anything else goes to the subclass's
 * _append_fields(dict), the checked path written in Python.
 *
 * The GIL is held throughout and no Python code runs between reading the
 * pending list and appending to it, so a point is never split and never lands
 * in a list the writer already took.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    PyObject *pending;  /* list: the queued entries */
    PyObject *names;    /* tuple: the field names of the last point */
    PyObject *alias;    /* tuple: the last keyword names found equal to names */
    PyObject *checked;  /* dict: each names tuple that passed the checked path, to itself */
    Py_ssize_t trigger; /* call _on_trigger() when pending reaches this length */
} MetricQueue;

/* Names come from code, so there are few; past this many, new ones stay slow. */
#define MAX_CHECKED 1024

static PyObject *str_on_trigger;
static PyObject *str_append_fields;

/* Milliseconds since the epoch as ASCII bytes, made once per millisecond. */
static long long stamp_ms = -1;
static PyObject *stamp_bytes;

static PyObject *
current_stamp(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    long long ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (ms != stamp_ms || stamp_bytes == NULL) {
        char text[24];
        int size = snprintf(text, sizeof text, "%lld", ms);
        PyObject *fresh = PyBytes_FromStringAndSize(text, size);
        if (fresh == NULL) {
            return NULL;
        }
        Py_XSETREF(stamp_bytes, fresh);
        stamp_ms = ms;
    }
    return Py_NewRef(stamp_bytes);
}

static PyObject *
stamp(PyObject *module, PyObject *unused)
{
    return current_stamp();
}

/* A value the fast path stores as it is. Text that is not ASCII takes the
 * checked path, which refuses what JSON cannot hold (lone surrogates). */
static int
is_plain(PyObject *value)
{
    PyTypeObject *type = Py_TYPE(value);
    return type == &PyFloat_Type || type == &PyLong_Type || type == &PyBool_Type ||
           value == Py_None || (type == &PyUnicode_Type && PyUnicode_IS_ASCII(value));
}

/* The checked tuple equal to these names, or NULL (and no error) for names
 * not checked yet, which take the checked path once. Points with equal names
 * share one tuple, so the writer finds runs of alike points by identity.
 * Borrowed reference. */
static PyObject *
known_names(MetricQueue *self, PyObject *names)
{
    if (names == self->names || names == self->alias) {
        return self->names;
    }
    /* hashing and comparing tuples of str runs no Python code */
    PyObject *known = PyDict_GetItemWithError(self->checked, names);
    if (known != NULL) {
        Py_INCREF(known);
        Py_XSETREF(self->names, known);
        Py_INCREF(names);  /* a call site's names: the same object on every call */
        Py_XSETREF(self->alias, names);
    }
    return known;
}

/* Record names that passed the check; return the tuple to queue (borrowed). */
static PyObject *
remember_names(MetricQueue *self, PyObject *names)
{
    PyObject *known = names;
    if (PyDict_GET_SIZE(self->checked) < MAX_CHECKED) {
        known = PyDict_SetDefault(self->checked, names, names);
        if (known == NULL) {
            return NULL;
        }
    }
    Py_INCREF(known);
    Py_XSETREF(self->names, known);
    Py_CLEAR(self->alias);
    return known;
}

static int
queue_point(MetricQueue *self, PyObject *at, PyObject *names, PyObject *const *values)
{
    PyObject *pending = self->pending;
    Py_ssize_t start = PyList_GET_SIZE(pending), n = PyTuple_GET_SIZE(names);
    int failed = PyList_Append(pending, at) < 0 || PyList_Append(pending, names) < 0;
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        failed = PyList_Append(pending, values[i]) < 0;
    }
    if (failed) {  /* out of memory: leave no half point behind */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyList_SetSlice(pending, start, PyList_GET_SIZE(pending), NULL);
        PyErr_Restore(type, value, traceback);
        return -1;
    }
    return 0;
}

static PyObject *
slow_append(MetricQueue *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0) {
        PyErr_Format(PyExc_TypeError,
                     "append() takes keyword fields only, e.g. append(value=0.5, step=1); "
                     "got %zd positional argument%s", nargs, nargs == 1 ? "" : "s");
        return NULL;
    }
    PyObject *fields = PyDict_New();
    if (fields == NULL) {
        return NULL;
    }
    Py_ssize_t n = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyDict_SetItem(fields, PyTuple_GET_ITEM(kwnames, i), args[i]) < 0) {
            Py_DECREF(fields);
            return NULL;
        }
    }
    PyObject *result = PyObject_CallMethodOneArg((PyObject *)self, str_append_fields, fields);
    Py_DECREF(fields);
    return result;
}

static PyObject *
append(MetricQueue *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t n = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs != 0 || n == 0) {
        return slow_append(self, args, nargs, kwnames);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!is_plain(args[i])) {
            return slow_append(self, args, nargs, kwnames);
        }
    }
    PyObject *names = known_names(self, kwnames);
    if (names == NULL) {
        return slow_append(self, args, nargs, kwnames);
    }
    PyObject *at = current_stamp();
    if (at == NULL) {
        return NULL;
    }
    int failed = queue_point(self, at, names, args);
    Py_DECREF(at);
    if (failed) {
        return NULL;
    }
    if (PyList_GET_SIZE(self->pending) >= self->trigger) {
        return PyObject_CallMethodNoArgs((PyObject *)self, str_on_trigger);
    }
    Py_RETURN_NONE;
}

static PyObject *
push(MetricQueue *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_push(fields: dict, at: bytes | None = None)");
        return NULL;
    }
    PyObject *fields = args[0];
    PyObject *names = PyDict_Size(fields) ? PySequence_Tuple(fields) : PyTuple_New(0);
    PyObject *values = names == NULL ? NULL : PyDict_Values(fields);
    PyObject *at = values == NULL ? NULL
                   : (nargs == 2 && args[1] != Py_None) ? Py_NewRef(args[1]) : current_stamp();
    int failed = at == NULL;
    if (!failed) {
        /* no Python code runs between the lookups above and these appends */
        PyObject *known = remember_names(self, names);
        failed = known == NULL || queue_point(self, at, known, PySequence_Fast_ITEMS(values));
    }
    Py_XDECREF(at);
    Py_XDECREF(values);
    Py_XDECREF(names);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The names of a non-empty dict of ASCII str keys and plain values, as a
 * checked tuple: ``last`` when they are the same. NULL without an error when
 * the point needs the checked path. Borrowed reference. */
static PyObject *
plain_point_names(MetricQueue *self, PyObject *point, PyObject *last)
{
    if (!PyDict_CheckExact(point) || PyDict_GET_SIZE(point) == 0) {
        return NULL;
    }
    Py_ssize_t n = PyDict_GET_SIZE(point), pos = 0, i = 0;
    int same = PyTuple_GET_SIZE(last) == n;
    PyObject *key, *value;
    while (PyDict_Next(point, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_IS_ASCII(key) || !is_plain(value)) {
            return NULL;
        }
        if (same) {
            PyObject *name = PyTuple_GET_ITEM(last, i++);
            same = key == name || PyUnicode_Compare(key, name) == 0;
        }
    }
    if (same) {
        return last;
    }
    PyObject *names = PyTuple_New(n);
    if (names == NULL) {
        return NULL;
    }
    for (pos = 0, i = 0; PyDict_Next(point, &pos, &key, &value); i++) {
        PyTuple_SET_ITEM(names, i, Py_NewRef(key));
    }
    PyObject *known = remember_names(self, names);  /* ASCII str keys: checked */
    Py_DECREF(names);  /* known is held by self->names, and by checked when there was room */
    return known;
}

static PyObject *
push_batch(MetricQueue *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_push_batch(points: list, at: bytes)");
        return NULL;
    }
    PyObject *points = args[0], *at = args[1];
    Py_ssize_t n = PyList_GET_SIZE(points);
    /* First check every point and find its names (which may allocate, and so
     * run Python code through the garbage collector); then queue them all with
     * no Python code in between, so the writer never takes half a batch. */
    PyObject **names = PyMem_Malloc((n ? n : 1) * sizeof(PyObject *));
    PyObject *held = PyList_New(0);  /* the names tuples used, while self->names moves on */
    if (names == NULL || held == NULL) {
        PyMem_Free(names);
        Py_XDECREF(held);
        return PyErr_NoMemory();
    }
    PyObject *last = self->names, *result = Py_True;
    if (PyList_Append(held, last) < 0) {
        result = NULL;
    }
    for (Py_ssize_t i = 0; i < n && result == Py_True; i++) {
        names[i] = plain_point_names(self, PyList_GET_ITEM(points, i), last);
        if (names[i] == NULL) {
            result = PyErr_Occurred() ? NULL : Py_False;  /* False: the checked path takes it */
            break;
        }
        if (names[i] != last) {
            last = names[i];
            if (PyList_Append(held, last) < 0) {
                result = NULL;
            }
        }
    }
    if (result == Py_True) {
        PyObject *pending = self->pending;
        for (Py_ssize_t i = 0; i < n && result != NULL; i++) {
            PyObject *point = PyList_GET_ITEM(points, i), *key, *value;
            Py_ssize_t pos = 0;
            if (PyList_Append(pending, at) < 0 || PyList_Append(pending, names[i]) < 0) {
                result = NULL;
            }
            while (result != NULL && PyDict_Next(point, &pos, &key, &value)) {
                if (PyList_Append(pending, value) < 0) {
                    result = NULL;
                }
            }
        }
    }
    PyMem_Free(names);
    Py_DECREF(held);
    return Py_XNewRef(result);
}

static PyObject *
take(MetricQueue *self, PyObject *unused)
{
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL) {
        return NULL;
    }
    PyObject *taken = self->pending;
    self->pending = fresh;
    return taken;
}

static PyObject *
queue_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    MetricQueue *self = (MetricQueue *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->pending = PyList_New(0);
    self->names = PyTuple_New(0);
    self->checked = PyDict_New();
    if (self->pending == NULL || self->names == NULL || self->checked == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->trigger = 0;
    return (PyObject *)self;
}

static int
queue_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return 0;
}

static int
queue_traverse(MetricQueue *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->pending);
    Py_VISIT(self->names);
    Py_VISIT(self->alias);
    Py_VISIT(self->checked);
    return 0;
}

static int
queue_clear(MetricQueue *self)
{
    Py_CLEAR(self->pending);
    Py_CLEAR(self->names);
    Py_CLEAR(self->alias);
    Py_CLEAR(self->checked);
    return 0;
}

static void
queue_dealloc(MetricQueue *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    queue_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef queue_methods[] = {
    {"append", (PyCFunction)(void (*)(void))append, METH_FASTCALL | METH_KEYWORDS,
     "append($self, /, **fields)\n--\n\n"
     "Add one point. Any keyword fields; ``value`` and ``step`` by convention.\n\n"
     ">>> exp.metrics(\"train_loss\").append(value=0.5, step=1, epoch=0)  # doctest: +SKIP\n"},
    {"_push", (PyCFunction)(void (*)(void))push, METH_FASTCALL,
     "Queue checked fields (stamped now, or ``at``); their names become the\n"
     "ones ``append`` takes without a check."},
    {"_push_batch", (PyCFunction)(void (*)(void))push_batch, METH_FASTCALL,
     "Queue dicts of plain values, all stamped ``at``; False (nothing queued) when\n"
     "any point needs the checked path."},
    {"_take", (PyCFunction)take, METH_NOARGS,
     "Everything queued so far, removed from the queue (the writer's side)."},
    {NULL}
};

static PyMemberDef queue_members[] = {
    {"_pending", T_OBJECT, offsetof(MetricQueue, pending), READONLY, NULL},
    {"_trigger", T_PYSSIZET, offsetof(MetricQueue, trigger), 0, NULL},
    {NULL}
};

static PyType_Slot queue_slots[] = {
    {Py_tp_doc, "Queues points for the writer (see mldash/_queue.py)."},
    {Py_tp_new, queue_new},
    {Py_tp_init, queue_init},
    {Py_tp_dealloc, queue_dealloc},
    {Py_tp_traverse, queue_traverse},
    {Py_tp_clear, queue_clear},
    {Py_tp_methods, queue_methods},
    {Py_tp_members, queue_members},
    {0, NULL}
};

static PyType_Spec queue_spec = {
    .name = "mldash._speedups.MetricQueue",
    .basicsize = sizeof(MetricQueue),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = queue_slots,
};

/* The total size of a list's items, which must all be bytes; -1 if not. */
static Py_ssize_t
bytes_size(PyObject *list, const char *what)
{
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "splice(): %s must be bytes", what);
            return -1;
        }
        size += PyBytes_GET_SIZE(item);
    }
    return size;
}

/* splice(stamps, heads, columns, tail) -> bytes: the writer's lines for n points
 * with the same k field names, ``[stamp<head_0><value_0><head_1>...<tail>`` each.
 * A column is either a list of n encoded values or, for plain numbers, orjson's
 * encoding of the whole column without its brackets: values split at commas
 * here, with no bytes object per value. _lines.py has the same in Python. */
static PyObject *
splice(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[0]) || !PyTuple_Check(args[1]) ||
        !PyList_Check(args[2]) || !PyBytes_Check(args[3]) ||
        PyList_GET_SIZE(args[2]) != PyTuple_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "splice(stamps: list, heads: tuple, columns: list, tail: bytes)");
        return NULL;
    }
    PyObject *stamps = args[0], *heads = args[1], *columns = args[2], *tail = args[3];
    Py_ssize_t n = PyList_GET_SIZE(stamps), k = PyTuple_GET_SIZE(heads);
    Py_ssize_t size = bytes_size(stamps, "stamps");
    if (size < 0) {
        return NULL;
    }
    size += n * (1 + PyBytes_GET_SIZE(tail));
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *head = PyTuple_GET_ITEM(heads, j), *column = PyList_GET_ITEM(columns, j);
        if (!PyBytes_Check(head)) {
            PyErr_SetString(PyExc_TypeError, "splice(): heads must be bytes");
            return NULL;
        }
        size += n * PyBytes_GET_SIZE(head);
        if (PyBytes_Check(column)) {
            const char *body = PyBytes_AS_STRING(column);
            Py_ssize_t length = PyBytes_GET_SIZE(column), commas = 0;
            for (const char *c = body; (c = memchr(c, ',', body + length - c)) != NULL; c++) {
                commas++;
            }
            if (n == 0 ? length != 0 : commas != n - 1) {
                PyErr_Format(PyExc_ValueError, "splice(): column %zd holds %zd values, not %zd",
                             j, length ? commas + 1 : 0, n);
                return NULL;
            }
            size += length - commas;
        }
        else if (PyList_Check(column) && PyList_GET_SIZE(column) == n) {
            Py_ssize_t values = bytes_size(column, "encoded values");
            if (values < 0) {
                return NULL;
            }
            size += values;
        }
        else {
            PyErr_Format(PyExc_ValueError, "splice(): column %zd is not bytes or a list of %zd", j, n);
            return NULL;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    const char **cursor = PyMem_Calloc(k ? k : 1, sizeof(char *));
    if (out == NULL || cursor == NULL) {
        Py_XDECREF(out);
        PyMem_Free(cursor);
        return out == NULL ? NULL : PyErr_NoMemory();
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *column = PyList_GET_ITEM(columns, j);
        cursor[j] = PyBytes_Check(column) ? PyBytes_AS_STRING(column) : NULL;
    }
    char *w = PyBytes_AS_STRING(out);
#define PUT(bytes) do { Py_ssize_t len_ = PyBytes_GET_SIZE(bytes); \
        memcpy(w, PyBytes_AS_STRING(bytes), len_); w += len_; } while (0)
    for (Py_ssize_t i = 0; i < n; i++) {
        *w++ = '[';
        PUT(PyList_GET_ITEM(stamps, i));
        for (Py_ssize_t j = 0; j < k; j++) {
            PUT(PyTuple_GET_ITEM(heads, j));
            if (cursor[j] != NULL) {
                PyObject *column = PyList_GET_ITEM(columns, j);
                const char *end = PyBytes_AS_STRING(column) + PyBytes_GET_SIZE(column);
                const char *comma = memchr(cursor[j], ',', end - cursor[j]);
                const char *stop = comma != NULL ? comma : end;
                memcpy(w, cursor[j], stop - cursor[j]);
                w += stop - cursor[j];
                cursor[j] = comma != NULL ? comma + 1 : end;
            }
            else {
                PUT(PyList_GET_ITEM(PyList_GET_ITEM(columns, j), i));
            }
        }
        PUT(tail);
    }
#undef PUT
    PyMem_Free(cursor);
    return out;
}

static PyMethodDef module_methods[] = {
    {"splice", (PyCFunction)(void (*)(void))splice, METH_FASTCALL,
     "The writer's lines for points with the same field names (see _lines.py)."},
    {"stamp", stamp, METH_NOARGS,
     "Milliseconds since the epoch, as ASCII bytes (cached within a millisecond)."},
    {NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mldash._speedups",
    .m_doc = "mldash's hot paths in C: see mldash/_queue.py and mldash/_lines.py.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_on_trigger = PyUnicode_InternFromString("_on_trigger");
    str_append_fields = PyUnicode_InternFromString("_append_fields");
    if (str_on_trigger == NULL || str_append_fields == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    PyObject *type = PyType_FromSpec(&queue_spec);
    if (type == NULL || PyModule_AddObject(module, "MetricQueue", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
