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
 * Python code can run in the middle of a C function: on 3.10 and 3.11 any
 * allocation of a tracked object (a tuple, a list) can start a garbage
 * collection, whose finalizers and gc.callbacks run Python code and may
 * release the GIL to other threads; hashing or comparing keys that are not str
 * runs their __hash__ and __eq__. That code can change the caller's lists and
 * dicts, and free what they held. So across any such call this file holds
 * strong references to what it uses, never a borrowed item or a length read
 * before; the caller's containers are copied first, by steps that run no code.
 * A point, or a whole batch, joins the pending list in one step that runs no
 * code either, or not at all: the writer never takes part of one.
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

/* Characters of text one point may hold (mldash._checks.MAX_TEXT, handed over by
 * set_max_text() when metrics.py loads). */
static Py_ssize_t max_text = PY_SSIZE_T_MAX;

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

static int
is_number(PyObject *value)
{
    PyTypeObject *type = Py_TYPE(value);
    return type == &PyFloat_Type || type == &PyLong_Type || type == &PyBool_Type || value == Py_None;
}

/* A value append() stores as it is. Text that is not ASCII takes the checked
 * path, which refuses what JSON cannot hold (lone surrogates). */
static int
is_plain(PyObject *value)
{
    return is_number(value) || (Py_TYPE(value) == &PyUnicode_Type && PyUnicode_IS_ASCII(value));
}

/* A field name the fast paths take as it is. */
static int
is_plain_name(PyObject *key)
{
    return PyUnicode_CheckExact(key) && PyUnicode_IS_ASCII(key);
}

/* Drop the items a failed or refused point left past ``size``. Unlike
 * PyList_SetSlice this allocates nothing, so it cannot fail halfway; dropping
 * the items runs no code, as the caller still holds each of them. */
static void
truncate_list(PyObject *list, Py_ssize_t size)
{
    Py_ssize_t end = PyList_GET_SIZE(list);
    if (end <= size) {
        return;
    }
    PyObject **items = PySequence_Fast_ITEMS(list);
    Py_SET_SIZE(list, size);
    while (end > size) {
        Py_DECREF(items[--end]);
    }
}

/* Copy a dict's keys, and its values unless ``values`` is NULL, into new
 * tuples that match. Making the tuples can run a collection that changes the
 * dict, so its size is checked once they exist; the copy itself (PyDict_Next
 * and Py_NewRef) runs no code. */
static int
snapshot_fields(PyObject *dict, PyObject **keys, PyObject **values)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        Py_ssize_t n = PyDict_GET_SIZE(dict), pos = 0, i = 0;
        PyObject *k = PyTuple_New(n), *v = k == NULL || values == NULL ? NULL : PyTuple_New(n);
        if (k == NULL || (values != NULL && v == NULL)) {
            Py_XDECREF(k);
            return -1;
        }
        if (PyDict_GET_SIZE(dict) == n) {
            PyObject *key, *value;
            while (PyDict_Next(dict, &pos, &key, &value)) {
                PyTuple_SET_ITEM(k, i, Py_NewRef(key));
                if (v != NULL) {
                    PyTuple_SET_ITEM(v, i, Py_NewRef(value));
                }
                i++;
            }
            *keys = k;
            if (values != NULL) {
                *values = v;
            }
            return 0;
        }
        Py_DECREF(k);
        Py_XDECREF(v);
    }
    PyErr_SetString(PyExc_RuntimeError, "the fields changed size while they were being read");
    return -1;
}

/* The checked tuple equal to these names (a new reference), or NULL: with an
 * error set when the lookup failed, without one for names not checked yet,
 * which take the checked path once. Points with equal names share one tuple,
 * so the writer finds runs of alike points by identity. */
static PyObject *
known_names(MetricQueue *self, PyObject *names)
{
    if (names == self->names || names == self->alias) {
        return Py_NewRef(self->names);
    }
    /* Comparing tuples of str runs no code, but _push() may have recorded names
     * that are other objects, whose __eq__ can run code or fail. */
    PyObject *known = PyDict_GetItemWithError(self->checked, names);
    if (known == NULL) {
        return NULL;
    }
    Py_INCREF(known);  /* first: replacing self->names below can run code */
    Py_XSETREF(self->names, Py_NewRef(known));
    Py_XSETREF(self->alias, Py_NewRef(names));  /* a call site's names: the same object on every call */
    return known;
}

/* Record names that passed the check; return the tuple to queue for them (a
 * new reference), the one already recorded when there is one. */
static PyObject *
remember_names(MetricQueue *self, PyObject *names)
{
    /* Not PyDict_SetDefault: on 3.13.0 it can fail to insert and return the
     * default anyway, with MemoryError set. */
    PyObject *known = PyDict_GetItemWithError(self->checked, names);
    if (known == NULL) {
        if (PyErr_Occurred() ||
            (PyDict_GET_SIZE(self->checked) < MAX_CHECKED &&
             PyDict_SetItem(self->checked, names, names) < 0)) {
            return NULL;
        }
        known = names;
    }
    Py_INCREF(known);  /* first: replacing self->names below can run code */
    Py_XSETREF(self->names, Py_NewRef(known));
    Py_CLEAR(self->alias);
    return known;
}

/* Append a point to ``list``: at, names, then one value per name. All or
 * nothing; PyList_Append only resizes the list's array, which runs no code. */
static int
append_point(PyObject *list, PyObject *at, PyObject *names, PyObject *const *values)
{
    Py_ssize_t start = PyList_GET_SIZE(list), n = PyTuple_GET_SIZE(names), i = 0;
    if (PyList_Append(list, at) == 0 && PyList_Append(list, names) == 0) {
        while (i < n && PyList_Append(list, values[i]) == 0) {
            i++;
        }
        if (i == n) {
            return 0;
        }
    }
    truncate_list(list, start);
    return -1;
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
    Py_ssize_t text = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!is_plain(args[i])) {
            return slow_append(self, args, nargs, kwnames);
        }
        if (!is_number(args[i])) {
            text += PyUnicode_GET_LENGTH(args[i]);
        }
    }
    if (text > max_text) {  /* the checked path says how much is too much */
        return slow_append(self, args, nargs, kwnames);
    }
    /* The caller holds the arguments until we return: they need no references. */
    PyObject *names = known_names(self, kwnames);
    if (names == NULL) {
        return PyErr_Occurred() ? NULL : slow_append(self, args, nargs, kwnames);
    }
    PyObject *at = current_stamp();  /* bytes are not tracked: no collection */
    int failed = at == NULL || append_point(self->pending, at, names, args) < 0;
    Py_XDECREF(at);
    Py_DECREF(names);
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
    PyObject *names, *values;
    if (snapshot_fields(args[0], &names, &values) < 0) {
        return NULL;
    }
    PyObject *known = remember_names(self, names);  /* may run code: all is ours now */
    PyObject *at = known == NULL ? NULL
                   : (nargs == 2 && args[1] != Py_None) ? Py_NewRef(args[1]) : current_stamp();
    int failed = at == NULL ||
                 append_point(self->pending, at, known, PySequence_Fast_ITEMS(values)) < 0;
    Py_XDECREF(at);
    Py_XDECREF(known);
    Py_DECREF(values);
    Py_DECREF(names);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

enum fit { FIT_ERROR = -1, FIT_APPENDED, FIT_OTHER_NAMES, FIT_NOT_PLAIN };

/* Append a point of a batch to ``entries`` if its names are ``names`` (then
 * FIT_APPENDED); else leave ``entries`` as they were. This reads the dict with
 * no code running, so its borrowed keys and values stay valid throughout.
 * Numbers only, as in _queue.py: text takes the checked path, which also
 * limits how much of it a point holds. */
static enum fit
append_if_named(PyObject *entries, PyObject *at, PyObject *point, PyObject *names)
{
    Py_ssize_t start = PyList_GET_SIZE(entries), n = PyTuple_GET_SIZE(names), pos = 0, i = 0;
    if (PyDict_GET_SIZE(point) != n) {
        return FIT_OTHER_NAMES;
    }
    if (PyList_Append(entries, at) < 0 || PyList_Append(entries, names) < 0) {
        truncate_list(entries, start);
        return FIT_ERROR;
    }
    PyObject *key, *value;
    while (PyDict_Next(point, &pos, &key, &value)) {
        PyObject *name = PyTuple_GET_ITEM(names, i++);
        enum fit fit = !is_plain_name(key) || !is_number(value) ? FIT_NOT_PLAIN
                       /* names recorded by _push() need not be str */
                       : key == name || (PyUnicode_CheckExact(name) && PyUnicode_Compare(key, name) == 0)
                       ? FIT_APPENDED : FIT_OTHER_NAMES;
        if (fit == FIT_APPENDED && PyList_Append(entries, value) < 0) {
            fit = FIT_ERROR;
        }
        if (fit != FIT_APPENDED) {
            truncate_list(entries, start);
            return fit;
        }
    }
    return FIT_APPENDED;
}

/* Append one point of a batch to ``entries``: 1 when appended; 0, with
 * ``entries`` as they were, when the point needs the checked path (it is not a
 * non-empty dict of numbers under ASCII names that passed the checked path
 * before); -1 on an error. ``names`` holds the names of the point before,
 * which most points share, and the other names seen last (series often
 * alternate two sets, such as step and step+epoch). */
static int
batch_point(MetricQueue *self, PyObject *entries, PyObject *at, PyObject *point, PyObject *names[2])
{
    if (!PyDict_CheckExact(point) || PyDict_GET_SIZE(point) == 0) {
        return 0;
    }
    enum fit fit = append_if_named(entries, at, point, names[0]);
    if (fit == FIT_OTHER_NAMES) {
        fit = append_if_named(entries, at, point, names[1]);
        if (fit == FIT_APPENDED) {
            PyObject *swap = names[0];
            names[0] = names[1];
            names[1] = swap;
        }
    }
    /* Other names: look a copy of them up (making it, and comparing names
     * _push() recorded, can run code that changes the dict), then read the dict
     * again against the checked tuple. Names not checked yet take the checked
     * path once, as in append(). */
    for (int attempt = 0; fit == FIT_OTHER_NAMES; attempt++) {
        PyObject *keys;
        if (attempt == 8) {
            PyErr_SetString(PyExc_RuntimeError, "the fields changed while they were being read");
            return -1;
        }
        if (snapshot_fields(point, &keys, NULL) < 0) {
            return -1;
        }
        PyObject *known = PyDict_GetItemWithError(self->checked, keys);
        Py_XINCREF(known);
        Py_DECREF(keys);
        if (known == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_SETREF(names[1], names[0]);
        names[0] = known;
        fit = append_if_named(entries, at, point, known);
    }
    return fit == FIT_APPENDED ? 1 : fit == FIT_NOT_PLAIN ? 0 : -1;
}

static PyObject *
push_batch(MetricQueue *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_push_batch(points: list, at: bytes)");
        return NULL;
    }
    PyObject *points = args[0], *at = args[1];
    /* References to the points first: PyMem_Malloc makes no Python object, so
     * no collection can change the list between reading its length and this. */
    Py_ssize_t n = PyList_GET_SIZE(points);
    PyObject **batch = PyMem_Malloc((n ? n : 1) * sizeof(PyObject *));
    if (batch == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        batch[i] = Py_NewRef(PyList_GET_ITEM(points, i));
    }
    /* The entries wait in a list of our own, so that a failure or a point for
     * the checked path leaves pending untouched, and the writer, which can run
     * whenever code does, never takes part of the batch. */
    PyObject *entries = PyList_New(0), *names[2] = {Py_NewRef(self->names), Py_NewRef(self->names)};
    PyObject *result = entries == NULL ? NULL : Py_True;
    for (Py_ssize_t i = 0; i < n && result == Py_True; i++) {
        int queued = batch_point(self, entries, at, batch[i], names);
        result = queued < 0 ? NULL : queued ? Py_True : Py_False;  /* False: the checked path takes them */
    }
    if (result == Py_True) {
        Py_ssize_t end = PyList_GET_SIZE(self->pending);
        if (PyList_SetSlice(self->pending, end, end, entries) < 0) {  /* one step: no code runs */
            result = NULL;
        }
    }
    Py_XDECREF(entries);
    Py_DECREF(names[0]);
    Py_DECREF(names[1]);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(batch[i]);
    }
    PyMem_Free(batch);
    return Py_XNewRef(result);
}

static PyObject *
take(MetricQueue *self, PyObject *unused)
{
    PyObject *fresh = PyList_New(0);  /* first: it can run code that appends to pending */
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
     "Queue dicts of numbers, all stamped ``at``, whose names passed the checked\n"
     "path before; False (nothing queued) when any point needs the checked path."},
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

/* size += count * each, unless that is more than one bytes object can hold.
 * Lists can repeat one object, so sizes add up past the memory in use. */
static int
grow(Py_ssize_t *size, Py_ssize_t count, Py_ssize_t each)
{
    if (each != 0 && count > (PY_SSIZE_T_MAX - *size) / each) {
        PyErr_NoMemory();
        return -1;
    }
    *size += count * each;
    return 0;
}

/* Add the sizes of a list's items, which must all be bytes. */
static int
add_bytes_sizes(Py_ssize_t *size, PyObject *list, const char *what)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "splice(): %s must be bytes", what);
            return -1;
        }
        if (grow(size, 1, PyBytes_GET_SIZE(item)) < 0) {
            return -1;
        }
    }
    return 0;
}

/* splice(stamps, heads, columns, tail) -> bytes: the writer's lines for n points
 * with the same k field names, ``[stamp<head_0><value_0><head_1>...<tail>`` each.
 * A column is either a list of n encoded values or, for plain numbers, orjson's
 * encoding of the whole column without its brackets: values split at commas
 * here, with no bytes object per value. _lines.py has the same in Python.
 *
 * The lists are measured, then read again to write: nothing in between runs
 * code that could change them (bytes are not tracked, so making ``out``
 * starts no collection), and every size is checked against overflow. */
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
    Py_ssize_t size = 0;
    if (add_bytes_sizes(&size, stamps, "stamps") < 0 || grow(&size, n, 1 + PyBytes_GET_SIZE(tail)) < 0) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *head = PyTuple_GET_ITEM(heads, j), *column = PyList_GET_ITEM(columns, j);
        if (!PyBytes_Check(head)) {
            PyErr_SetString(PyExc_TypeError, "splice(): heads must be bytes");
            return NULL;
        }
        if (grow(&size, n, PyBytes_GET_SIZE(head)) < 0) {
            return NULL;
        }
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
            if (grow(&size, 1, length - commas) < 0) {
                return NULL;
            }
        }
        else if (PyList_Check(column) && PyList_GET_SIZE(column) == n) {
            if (add_bytes_sizes(&size, column, "encoded values") < 0) {
                return NULL;
            }
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

static PyObject *
set_max_text(PyObject *module, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    max_text = n;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_max_text", set_max_text, METH_O,
     "How many characters of text append() takes in one point without the checked path."},
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
