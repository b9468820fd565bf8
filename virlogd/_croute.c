/* The C twin of Router.route_many (router.py): route_many_for(Router) is the method, which
 * takes the router's lock and counts the records as the Python one does, then route() runs
 * the loop: each record to
 * the ring, through the filters, then to every output whose level it meets. LineAppender is
 * what a buffering text output (file, stderr) hands the loop as its handle() once its
 * headers are out: one C call per record instead of a Python frame.
 *
 * The contract is the pure loop's, call for call: the same Python functions are called in
 * the same order with the same arguments (filter decisions, pack_record / format_line, the
 * ring's append, each output's handle(), the router's _failed / _recovered / _flush /
 * _unroutable), every output attribute is read when the pure loop reads it, and an exception
 * the pure loop would let out (one that is not an Exception) comes out here too, after the
 * same records were routed. An Exception while routing one record goes to the router's
 * _unroutable, as the pure loop's per-record except block does, and the next record goes
 * on. What it saves is the interpreter's work between those calls, which is most of a
 * record's cost in the daemon and in the library's log.info.
 *
 * The caller (route_many) holds the router's lock and has counted the records. The state's
 * parts come as one tuple, built once per RouterState (RouterState.plan).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "structmember.h"
#include "_ccompat.h"
#include "_ccall.h"

static PyObject *s_source, *s_priority, *s_stack, *s_text, *s_handle, *s_failing,
    *s_batched, *s_recovering, *s_failed, *s_recovered, *s_flush, *s_utf8,
    *s_surrogateescape, *s_encode, *s_received, *s_state, *s_plan, *s_route_each, *s_ring,
    *s_append, *s_flush_each, *s_lock, *s_enter, *s_exit, *s_unroutable, *s_tap;
static PyObject *s_empty;          /* "" */
static PyObject *empty_tuple;      /* () */

enum { P_CACHED, P_DECIDE, P_TEXT_LEVEL, P_OUTPUTS, P_FLUSHED, P_PACK_RECORD, P_FORMAT_LINE,
       P_SIZE };

/* "a, b = value" for anything but an exact pair, with Python's errors; steals value */
static int
unpack_pair(PyObject *value, PyObject **first, PyObject **second)
{
    PyObject *it = PyObject_GetIter(value), *items[3] = {NULL, NULL, NULL};
    Py_ssize_t got = 0;
    int rc = -1;

    if (it == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) && Py_TYPE(value)->tp_iter == NULL
                && !PySequence_Check(value)) {
            PyErr_Format(PyExc_TypeError, "cannot unpack non-iterable %.200s object",
                         Py_TYPE(value)->tp_name);
        }
        Py_DECREF(value);
        return -1;
    }
    Py_DECREF(value);
    while (got < 3 && (items[got] = PyIter_Next(it)) != NULL) {
        got++;
    }
    if (PyErr_Occurred()) {
        goto done;
    }
    if (got < 2) {
        PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 2, got %zd)",
                     got);
    }
    else if (got > 2) {
        PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
    }
    else {
        *first = items[0];
        *second = items[1];
        items[0] = items[1] = NULL;
        rc = 0;
    }
done:
    Py_DECREF(it);
    Py_XDECREF(items[0]);
    Py_XDECREF(items[1]);
    Py_XDECREF(items[2]);
    return rc;
}

/* cached.get(source) or decide(source), unpacked as (threshold, stack): new references */
static int
decide(PyObject *cached, PyObject *decide_fn, PyObject *source, PyObject **threshold,
       PyObject **stack)
{
    PyObject *found = PyDict_GetItemWithError(cached, source);   /* borrowed */
    PyObject *decision;
    int truth;

    if (found == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (found != NULL) {
        Py_INCREF(found);
        if ((truth = PyObject_IsTrue(found)) < 0) {
            Py_DECREF(found);
            return -1;
        }
        if (!truth) {
            Py_CLEAR(found);
        }
    }
    decision = found != NULL ? found : PyObject_CallOneArg(decide_fn, source);
    if (decision == NULL) {
        return -1;
    }
    if (PyTuple_CheckExact(decision) && PyTuple_GET_SIZE(decision) == 2) {
        *threshold = Py_NewRef(PyTuple_GET_ITEM(decision, 0));
        *stack = Py_NewRef(PyTuple_GET_ITEM(decision, 1));
        Py_DECREF(decision);
        return 0;
    }
    return unpack_pair(decision, threshold, stack);
}

static int
call_discard(PyObject *fn, PyObject *arg)
{
    PyObject *res = PyObject_CallOneArg(fn, arg);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* ring_append(pack_record(record)) */
static int
keep_packed(PyObject *ring_append, PyObject *pack_record, PyObject *record)
{
    PyObject *entry = PyObject_CallOneArg(pack_record, record);
    int rc;
    if (entry == NULL) {
        return -1;
    }
    rc = call_discard(ring_append, entry);
    Py_DECREF(entry);
    return rc;
}

/* line.encode("utf-8", "surrogateescape") */
static PyObject *
encode_line(PyObject *line)
{
    PyObject *args[3] = {line, s_utf8, s_surrogateescape};
    if (PyUnicode_CheckExact(line)) {
        return PyUnicode_AsEncodedString(line, "utf-8", "surrogateescape");
    }
    return PyObject_VectorcallMethod(s_encode, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

static int
router_call(PyObject *router, PyObject *name, PyObject *arg1, PyObject *arg2)
{
    PyObject *args[3] = {router, arg1, arg2};
    PyObject *res = PyObject_VectorcallMethod(name, args, arg2 != NULL ? 3 : 2, NULL);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

static int
attr_true(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    int rc;
    if (value == NULL) {
        return -1;
    }
    rc = PyObject_IsTrue(value);
    Py_DECREF(value);
    return rc;
}

/* The pending Exception, handled as in an except block: router.<name>(obj, err) runs with
 * sys.exc_info() set to it (an error it raises gets it as its __context__). -1 if the
 * pending exception is not an Exception (KeyboardInterrupt, SystemExit...: let it out) or
 * the handler raised. */
static int
handle_error(PyObject *router, PyObject *name, PyObject *obj)
{
    PyObject *type, *value, *tb, *saved[3];
    int rc;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyErr_GetExcInfo(&saved[0], &saved[1], &saved[2]);
    Py_XINCREF(value);
    PyErr_SetExcInfo(type, value, tb);          /* steals the three */
    rc = router_call(router, name, obj, value);
    Py_DECREF(value);
    PyErr_SetExcInfo(saved[0], saved[1], saved[2]);
    return rc;
}

/* try: out.handle(record, full if out.text else line)
 * except Exception as err: router._failed(out, err)
 * else: if out.failing: (router._recovered(out) if out.batched else out.recovering = True)
 * All of the try line is inside the try, in Python's order: handle, then text. */
static int
deliver(PyObject *router, PyObject *out, PyObject *record, PyObject *full, PyObject *line)
{
    PyObject *handle = PyObject_GetAttr(out, s_handle), *res = NULL;
    int failing, batched;

    if (handle != NULL) {
        int is_text = attr_true(out, s_text);
        if (is_text >= 0) {
            PyObject *args[2] = {record, is_text ? full : line};
            res = PyObject_Vectorcall(handle, args, 2, NULL);
        }
        Py_DECREF(handle);
    }
    if (res == NULL) {
        return handle_error(router, s_failed, out);
    }
    Py_DECREF(res);
    if ((res = PyObject_GetAttr(out, s_failing)) == NULL) {
        return -1;
    }
    failing = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (failing <= 0) {
        return failing;
    }
    if ((res = PyObject_GetAttr(out, s_batched)) == NULL) {
        return -1;
    }
    batched = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (batched < 0) {
        return -1;
    }
    return batched ? router_call(router, s_recovered, out, NULL)
                   : PyObject_SetAttr(out, s_recovering, Py_True);
}

/* priority >= out.priority */
static int
meets(PyObject *priority, PyObject *out)
{
    PyObject *level = PyObject_GetAttr(out, s_priority);
    int rc;
    if (level == NULL) {
        return -1;
    }
    rc = PyObject_RichCompareBool(priority, level, Py_GE);
    Py_DECREF(level);
    return rc;
}

/* One record, as one iteration of the pure loop. */
static int
route_one(PyObject *router, PyObject *const *plan, PyObject *outputs, PyObject *record,
          PyObject *ring_append, PyObject *flushed)
{
    PyObject *source, *priority = NULL, *threshold = NULL, *stack = NULL, *line = NULL,
        *full = NULL, *entry;
    int rc = -1, below, texted, wants_stack = 0;
    Py_ssize_t i, n;

    if ((source = PyObject_GetAttr(record, s_source)) == NULL) {
        return -1;
    }
    if (decide(plan[P_CACHED], plan[P_DECIDE], source, &threshold, &stack) < 0
            || (priority = PyObject_GetAttr(record, s_priority)) == NULL
            || (below = PyObject_RichCompareBool(priority, threshold, Py_LT)) < 0) {
        goto done;
    }
    if (below) {
        rc = ring_append != Py_None
             ? keep_packed(ring_append, plan[P_PACK_RECORD], record) : 0;
        goto done;
    }
    if ((texted = PyObject_RichCompareBool(priority, plan[P_TEXT_LEVEL], Py_GE)) < 0) {
        goto done;
    }
    if (texted) {
        if ((line = PyObject_CallOneArg(plan[P_FORMAT_LINE], record)) == NULL) {
            goto done;
        }
        if (ring_append != Py_None) {
            if ((entry = encode_line(line)) == NULL) {
                goto done;
            }
            rc = call_discard(ring_append, entry);
            Py_DECREF(entry);
            if (rc < 0) {
                goto done;
            }
            rc = -1;
        }
    }
    else {
        line = Py_NewRef(s_empty);
        if (ring_append != Py_None && keep_packed(ring_append, plan[P_PACK_RECORD], record) < 0) {
            goto done;
        }
    }
    if ((wants_stack = PyObject_IsTrue(stack)) < 0
            || (wants_stack && (wants_stack = attr_true(record, s_stack)) < 0)) {
        goto done;
    }
    if (wants_stack) {
        PyObject *args[2] = {record, Py_True};
        if ((full = PyObject_Vectorcall(plan[P_FORMAT_LINE], args, 2, NULL)) == NULL) {
            goto done;
        }
    }
    else {
        full = Py_NewRef(line);
    }
    n = PyTuple_GET_SIZE(outputs);
    for (i = 0; i < n; i++) {
        PyObject *out = PyTuple_GET_ITEM(outputs, i);
        int wanted = meets(priority, out);
        if (wanted < 0) {
            goto done;
        }
        if (wanted && deliver(router, out, record, full, line) < 0) {
            goto done;
        }
    }
    if (PyTuple_GET_SIZE(flushed) > 0 && router_call(router, s_flush, flushed, NULL) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_DECREF(source);
    Py_XDECREF(priority);
    Py_XDECREF(threshold);
    Py_XDECREF(stack);
    Py_XDECREF(line);
    Py_XDECREF(full);
    return rc;
}

PyDoc_STRVAR(route_doc,
"route($module, router, plan, records, ring_append, flush_each, /)\n--\n\n"
"Route records as Router.route_many's loop does. plan is RouterState.plan: (cached,\n"
"decide, text_level, outputs, flushed, pack_record, format_line); ring_append is the\n"
"ring's append or None. The caller holds the router's lock.");

static PyObject *
route(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *router, *plan, *records, *ring_append, *seq, *flushed;
    PyObject *const *parts;
    Py_ssize_t i;
    int flush_each;

    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "route() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    router = args[0];
    plan = args[1];
    records = args[2];
    ring_append = args[3];
    if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != P_SIZE
            || !PyDict_CheckExact(PyTuple_GET_ITEM(plan, P_CACHED))
            || !PyTuple_CheckExact(PyTuple_GET_ITEM(plan, P_OUTPUTS))
            || !PyTuple_CheckExact(PyTuple_GET_ITEM(plan, P_FLUSHED))) {
        PyErr_SetString(PyExc_TypeError, "route(): plan is not a RouterState.plan");
        return NULL;
    }
    if ((flush_each = PyObject_IsTrue(args[4])) < 0
            || (seq = PySequence_Fast(records, "records must be a sequence")) == NULL) {
        return NULL;
    }
    parts = &PyTuple_GET_ITEM(plan, 0);
    flushed = flush_each ? parts[P_FLUSHED] : empty_tuple;
    for (i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        /* a list could shrink while a handler runs: the length is read every time, and the
         * record is held while it is routed */
        PyObject *record = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        int rc = route_one(router, parts, parts[P_OUTPUTS], record, ring_append, flushed);
        if (rc < 0) {
            rc = handle_error(router, s_unroutable, record);     /* the next one goes on */
        }
        Py_DECREF(record);
        if (rc < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(route_many_doc,
"route_many($self, records, /)\n--\n\n"
"Route records in order; one lock and one look at the state for the batch (the daemon\n"
"hands over everything one read decoded). Router.route_many whole, in C: under the\n"
"router's lock, count the records, hand them to self.tap if set, then route them with route() when the state has a\n"
"plan, or with self._route_each(state, records) when it has none.");

/* route_many's body, with the lock held: "self.received += len(records)", the tap
 * ("tap = self.tap; if tap is not None: tap(records)": the admin followers), then the loop */
static PyObject *
route_locked(PyObject *router, PyObject *records)
{
    PyObject *state = NULL, *plan = NULL, *res = NULL, *count, *total, *added, *tap;
    Py_ssize_t n;

    if ((count = PyObject_GetAttr(router, s_received)) == NULL) {
        return NULL;
    }
    if ((n = PyObject_Size(records)) < 0 || (added = PyLong_FromSsize_t(n)) == NULL) {
        Py_DECREF(count);
        return NULL;
    }
    total = PyNumber_InPlaceAdd(count, added);
    Py_DECREF(count);
    Py_DECREF(added);
    if (total == NULL) {
        return NULL;
    }
    if (PyObject_SetAttr(router, s_received, total) < 0) {
        Py_DECREF(total);
        return NULL;
    }
    Py_DECREF(total);
    if ((tap = PyObject_GetAttr(router, s_tap)) == NULL) {
        return NULL;
    }
    if (tap != Py_None) {
        PyObject *tapped = PyObject_CallOneArg(tap, records);
        Py_DECREF(tap);
        if (tapped == NULL) {
            return NULL;
        }
        Py_DECREF(tapped);
    }
    else {
        Py_DECREF(tap);
    }
    if ((state = PyObject_GetAttr(router, s_state)) == NULL
            || (plan = PyObject_GetAttr(state, s_plan)) == NULL) {
        goto done;
    }
    if (plan == Py_None) {
        PyObject *args[3] = {router, state, records};
        res = PyObject_VectorcallMethod(s_route_each, args, 3, NULL);
    }
    else {
        PyObject *ring = PyObject_GetAttr(router, s_ring), *args[5];
        if (ring == NULL) {
            goto done;
        }
        args[3] = ring == Py_None ? Py_NewRef(Py_None) : PyObject_GetAttr(ring, s_append);
        Py_DECREF(ring);
        if (args[3] == NULL) {
            goto done;
        }
        if ((args[4] = PyObject_GetAttr(router, s_flush_each)) != NULL) {
            args[0] = router;
            args[1] = plan;
            args[2] = records;
            res = route(NULL, args, 5);
            Py_DECREF(args[4]);
        }
        Py_DECREF(args[3]);
    }
done:
    Py_XDECREF(state);
    Py_XDECREF(plan);
    return res;
}

/* "with self._lock:" around the body, as the with statement does it: __enter__, then
 * __exit__ with the body's exception (which is the exception being handled meanwhile, so an
 * error of __exit__ gets it as its __context__; a true result suppresses it), or with three
 * Nones. */
static PyObject *
route_many(PyObject *self, PyObject *records)
{
    PyObject *lock, *res, *exited, *args[4];
    int suppress;

    if ((lock = PyObject_GetAttr(self, s_lock)) == NULL) {
        return NULL;
    }
    if ((res = PyObject_CallMethodNoArgs(lock, s_enter)) == NULL) {
        Py_DECREF(lock);
        return NULL;
    }
    Py_DECREF(res);
    res = route_locked(self, records);
    args[0] = lock;
    if (res == NULL) {
        PyObject *type, *value, *tb, *saved[3];
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        args[1] = type;
        args[2] = value;
        args[3] = tb != NULL ? tb : Py_None;
        PyErr_GetExcInfo(&saved[0], &saved[1], &saved[2]);
        Py_XINCREF(type);
        Py_XINCREF(value);
        Py_XINCREF(tb);
        PyErr_SetExcInfo(type, value, tb);                      /* steals the three */
        exited = PyObject_VectorcallMethod(s_exit, args, 4, NULL);
        suppress = exited == NULL ? -1 : PyObject_IsTrue(exited);
        Py_XDECREF(exited);
        PyErr_SetExcInfo(saved[0], saved[1], saved[2]);
        if (suppress == 0) {
            PyErr_Restore(type, value, tb);                     /* the body's error stands */
            type = value = tb = NULL;
        }
        else if (suppress > 0) {
            res = Py_NewRef(Py_None);
        }
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    else {
        args[1] = args[2] = args[3] = Py_None;
        if ((exited = PyObject_VectorcallMethod(s_exit, args, 4, NULL)) == NULL) {
            Py_CLEAR(res);
        }
        Py_XDECREF(exited);
    }
    Py_DECREF(lock);
    return res;
}

static PyMethodDef route_many_def = {
    "route_many", (PyCFunction)route_many, METH_O, route_many_doc,
};

PyDoc_STRVAR(route_many_for_doc,
"route_many_for($module, cls, /)\n--\n\n"
"route_many as a method of *cls* (a method descriptor: Router.route_many = this).");

static PyObject *
route_many_for(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "route_many_for() needs a class");
        return NULL;
    }
    return PyDescr_NewMethod((PyTypeObject *)cls, &route_many_def);
}

/* -- LineAppender ----------------------------------------------------------------------- */

/* A buffering text output's handle() once its headers are out: lines.append(line), then
 * count += 1; a vectorcall object, so the router's out.handle(record, line) is one C call
 * (outputs/base.py's LineAppender is its Python twin). */
typedef struct {
    PyObject_HEAD
    PyObject *lines;
    Py_ssize_t count;
    vectorcallfunc vectorcall;
} AppenderObject;

static PyObject *
Appender_call(AppenderObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (record_line_arguments("LineAppender.__call__()", 2, PyVectorcall_NARGS(nargsf),
                              kwnames) < 0) {
        return NULL;
    }
    if (PyList_CheckExact(self->lines)) {
        if (PyList_Append(self->lines, args[1]) < 0) {
            return NULL;
        }
    }
    else {
        PyObject *res = PyObject_CallMethodOneArg(self->lines, s_append, args[1]);
        if (res == NULL) {
            return NULL;
        }
        Py_DECREF(res);
    }
    self->count++;
    Py_RETURN_NONE;
}

static PyObject *
Appender_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lines", NULL};
    PyObject *lines;
    AppenderObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:LineAppender", kwlist, &lines)) {
        return NULL;
    }
    if ((self = (AppenderObject *)type->tp_alloc(type, 0)) == NULL) {
        return NULL;
    }
    self->lines = Py_NewRef(lines);
    self->count = 0;
    self->vectorcall = (vectorcallfunc)Appender_call;
    return (PyObject *)self;
}

static int
Appender_traverse(AppenderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->lines);
    return 0;
}

static int
Appender_clear(AppenderObject *self)
{
    Py_CLEAR(self->lines);
    return 0;
}

static void
Appender_dealloc(AppenderObject *self)
{
    PyObject_GC_UnTrack(self);
    Appender_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Appender_members[] = {
    {"lines", T_OBJECT, offsetof(AppenderObject, lines), READONLY, NULL},
    {"count", T_PYSSIZET, offsetof(AppenderObject, count), READONLY, "lines appended"},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Appender_doc,
"LineAppender(lines)\n--\n\n"
"appender(record, line) is lines.append(line), counted in count: a buffering text\n"
"output's handle() in one C call (outputs.base.LineAppender is its Python twin).");

static PyTypeObject Appender_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "virlogd._croute.LineAppender",
    .tp_basicsize = sizeof(AppenderObject),
    .tp_dealloc = (destructor)Appender_dealloc,
    .tp_vectorcall_offset = offsetof(AppenderObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = Appender_doc,
    .tp_traverse = (traverseproc)Appender_traverse,
    .tp_clear = (inquiry)Appender_clear,
    .tp_members = Appender_members,
    .tp_new = Appender_new,
};

static PyMethodDef methods[] = {
    {"route", (PyCFunction)(void (*)(void))route, METH_FASTCALL, route_doc},
    {"route_many_for", (PyCFunction)route_many_for, METH_O, route_many_for_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_croute",
    .m_doc = "C twin of virlogd.router.Router.route_many and its loop, and of "
              "virlogd.outputs.base.LineAppender.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__croute(void)
{
    PyObject *m;

    static const struct { PyObject **slot; const char *text; } names[] = {
        {&s_source, "source"}, {&s_priority, "priority"}, {&s_stack, "stack"},
        {&s_text, "text"}, {&s_handle, "handle"}, {&s_failing, "failing"},
        {&s_batched, "batched"}, {&s_recovering, "recovering"}, {&s_failed, "_failed"},
        {&s_recovered, "_recovered"}, {&s_flush, "_flush"}, {&s_empty, ""},
        {&s_utf8, "utf-8"}, {&s_surrogateescape, "surrogateescape"}, {&s_encode, "encode"},
        {&s_received, "received"}, {&s_state, "state"}, {&s_plan, "plan"},
        {&s_route_each, "_route_each"}, {&s_ring, "ring"}, {&s_append, "append"},
        {&s_flush_each, "flush_each"}, {&s_lock, "_lock"}, {&s_enter, "__enter__"},
        {&s_exit, "__exit__"}, {&s_unroutable, "_unroutable"}, {&s_tap, "tap"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].slot == NULL
                && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return NULL;
        }
    }
    if (empty_tuple == NULL && (empty_tuple = PyTuple_New(0)) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&Appender_Type) < 0 || (m = PyModule_Create(&module)) == NULL) {
        return NULL;
    }
    if (PyModule_AddObject(m, "LineAppender", Py_NewRef(&Appender_Type)) < 0) {
        Py_DECREF(&Appender_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
