/* The C twin of framequeue.py: the Client's queue of frames, one append per record.
 *
 * The pure-Python queue takes a lock around its list; here every method runs with the GIL
 * held and never releases it, and the state is consistent before anything that could run
 * Python code (a hook, freeing a frame whose finaliser uses the queue, an allocation that
 * starts the garbage collector), so the GIL alone makes each one atomic. push() calls
 * on_first / on_full only once the frame is queued and the counters are right, as the Python
 * one does.
 *
 * on_first / on_full are usually bound methods of the Client that owns the queue: a
 * reference cycle, so the type takes part in garbage collection.
 *
 * Direct sends (see framequeue.py): while sock is set and nothing is queued, push() first
 * tries send(MSG_DONTWAIT | MSG_NOSIGNAL) on its descriptor, with the GIL held (it cannot
 * block), so that the record is in the kernel before the logging call returns.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <sys/socket.h>

#include "_ccompat.h"

typedef struct {
    PyObject_HEAD
    PyObject *frames;          /* list of bytes, oldest first */
    Py_ssize_t size;           /* bytes queued */
    Py_ssize_t flush_bytes;
    Py_ssize_t hold;
    int connected;
    PyObject *on_first;
    PyObject *on_full;
    PyObject *on_sent;         /* or NULL */
    PyObject *sock;            /* or NULL: no direct sends */
    int fd;                    /* sock's descriptor, read when sock was set */
    PyObject *sent;            /* list of frames sent directly, oldest first */
    Py_ssize_t sent_limit;
    Py_ssize_t head_sent;      /* bytes of frames[0] already written */
} QueueObject;

static PyTypeObject Queue_Type;

static int
check_frame(PyObject *frame)
{
    if (!PyBytes_Check(frame)) {
        /* the type's __name__, as the Python twin says it (tp_name may hold the module) */
        PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(frame), "__name__");
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "frame must be bytes, not %S", name);
            Py_DECREF(name);
        }
        return -1;
    }
    return 0;
}

static int
call_hook(PyObject *hook)
{
    PyObject *res;
    if (hook == NULL) {
        return 0;          /* cleared by the garbage collector: its owner is gone */
    }
    if ((res = PyObject_CallNoArgs(hook)) == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* -- methods -------------------------------------------------------------------------- */

PyDoc_STRVAR(Queue_push__doc__,
"push($self, frame, /)\n--\n\n"
"Queue frame (bytes); then call on_first() if the queue was empty, and on_full() if it\n"
"now holds more than flush_bytes bytes, or more than hold frames while not connected.");

static PyObject *
Queue_push(QueueObject *self, PyObject *frame)
{
    Py_ssize_t count, size, written = 0;
    int broken = 0;

    if (check_frame(frame) < 0) {
        return NULL;
    }
    if (self->sock != NULL && PyList_GET_SIZE(self->frames) == 0) {
        Py_ssize_t len = PyBytes_GET_SIZE(frame);
        do {
            written = send(self->fd, PyBytes_AS_STRING(frame), (size_t)len,
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (written < 0 && errno == EINTR);
        if (written == len) {
            if (PyList_Append(self->sent, frame) < 0) {
                return NULL;
            }
            if (PyList_GET_SIZE(self->sent) >= self->sent_limit
                    && call_hook(self->on_sent) < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        if (written < 0) {
            broken = errno != EAGAIN && errno != EWOULDBLOCK;
            written = 0;
            if (broken) {
                Py_CLEAR(self->sock);      /* the owner finds out why when it writes */
            }
        }
    }
    if (PyList_Append(self->frames, frame) < 0) {
        return NULL;
    }
    if (written > 0) {
        self->head_sent = written;
    }
    size = self->size += PyBytes_GET_SIZE(frame);
    count = PyList_GET_SIZE(self->frames);
    if (count == 1 && call_hook(self->on_first) < 0) {
        return NULL;
    }
    if ((broken || size > self->flush_bytes || (count > self->hold && !self->connected))
            && call_hook(self->on_full) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Queue_take_all__doc__,
"take_all($self, /)\n--\n\n"
"(head_sent, take(), take_sent()) in one step: what a writer needs before it writes.");

static PyObject *
Queue_take_all(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    /* both new lists first: allocating may run the garbage collector, hence Python code */
    PyObject *frames = PyList_New(0), *sent = PyList_New(0), *res;
    if (frames == NULL || sent == NULL) {
        Py_XDECREF(frames);
        Py_XDECREF(sent);
        return NULL;
    }
    res = Py_BuildValue("nNN", self->head_sent, self->frames, self->sent);
    if (res == NULL) {
        Py_DECREF(frames);
        Py_DECREF(sent);
        return NULL;
    }
    /* the tuple took the old lists' references */
    self->frames = frames;
    self->sent = sent;
    self->size = 0;
    self->head_sent = 0;
    return res;
}

PyDoc_STRVAR(Queue_take_sent__doc__,
"take_sent($self, /)\n--\n\n"
"The frames sent directly since the last call, oldest first.");

static PyObject *
Queue_take_sent(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *fresh = PyList_New(0), *taken;
    if (fresh == NULL) {
        return NULL;
    }
    taken = self->sent;
    self->sent = fresh;
    return taken;
}

PyDoc_STRVAR(Queue_take__doc__,
"take($self, /)\n--\n\n"
"Every queued frame as a list, oldest first; the queue is left empty.");

static PyObject *
Queue_take(QueueObject *self, PyObject *Py_UNUSED(ignored))
{
    /* the new list first: allocating it may run the garbage collector, hence Python code */
    PyObject *fresh = PyList_New(0), *taken;
    if (fresh == NULL) {
        return NULL;
    }
    taken = self->frames;
    self->frames = fresh;
    self->size = 0;
    self->head_sent = 0;
    return taken;
}

PyDoc_STRVAR(Queue_put_back__doc__,
"put_back($self, frames, /)\n--\n\n"
"Queue an iterable of frames (bytes) before everything queued: frames taken but never\n"
"written. A non-bytes item raises TypeError and queues nothing.");

static PyObject *
Queue_put_back(QueueObject *self, PyObject *iterable)
{
    PyObject *merged = PySequence_List(iterable);
    Py_ssize_t i, n, added = 0;

    if (merged == NULL) {
        return NULL;
    }
    n = PyList_GET_SIZE(merged);
    for (i = 0; i < n; i++) {
        PyObject *frame = PyList_GET_ITEM(merged, i);
        if (check_frame(frame) < 0) {
            Py_DECREF(merged);
            return NULL;
        }
        added += PyBytes_GET_SIZE(frame);
    }
    /* extending a list of exact bytes calls no Python code: nothing can come in between */
    if (PyList_SetSlice(merged, n, n, self->frames) < 0) {
        Py_DECREF(merged);
        return NULL;
    }
    self->size += added;
    Py_SETREF(self->frames, merged);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Queue_drop_oldest__doc__,
"drop_oldest($self, count, /)\n--\n\n"
"Remove up to count of the oldest frames; return how many were removed.");

static PyObject *
Queue_drop_oldest(QueueObject *self, PyObject *arg)
{
    Py_ssize_t count = PyNumber_AsSsize_t(arg, NULL), i, freed = 0;   /* clipped */
    Py_ssize_t have = PyList_GET_SIZE(self->frames);

    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    count = count < 0 ? 0 : (count > have ? have : count);
    if (count > 0) {
        /* the rest in a new list, swapped in before the dropped frames are freed: freeing
         * one can run a finaliser that uses this queue, and it must find it consistent */
        PyObject *rest = PyList_GetSlice(self->frames, count, have), *old;
        if (rest == NULL) {
            return NULL;
        }
        for (i = 0; i < count; i++) {
            freed += PyBytes_GET_SIZE(PyList_GET_ITEM(self->frames, i));
        }
        old = self->frames;
        self->frames = rest;
        self->size -= freed;
        self->head_sent = 0;
        Py_DECREF(old);
    }
    return PyLong_FromSsize_t(count);
}

static Py_ssize_t
Queue_len(QueueObject *self)
{
    return PyList_GET_SIZE(self->frames);
}

static PyMethodDef Queue_methods[] = {
    {"push", (PyCFunction)Queue_push, METH_O, Queue_push__doc__},
    {"take", (PyCFunction)Queue_take, METH_NOARGS, Queue_take__doc__},
    {"put_back", (PyCFunction)Queue_put_back, METH_O, Queue_put_back__doc__},
    {"drop_oldest", (PyCFunction)Queue_drop_oldest, METH_O, Queue_drop_oldest__doc__},
    {"take_sent", (PyCFunction)Queue_take_sent, METH_NOARGS, Queue_take_sent__doc__},
    {"take_all", (PyCFunction)Queue_take_all, METH_NOARGS, Queue_take_all__doc__},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Queue_members[] = {
    {"size", T_PYSSIZET, offsetof(QueueObject, size), READONLY, "bytes queued"},
    {"head_sent", T_PYSSIZET, offsetof(QueueObject, head_sent), READONLY,
     "bytes of the first queued frame already written by a direct send"},
    {"sent_limit", T_PYSSIZET, offsetof(QueueObject, sent_limit), 0,
     "on_sent() is called once this many frames were sent directly"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
Queue_get_connected(QueueObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->connected);
}

static int
Queue_set_connected(QueueObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    int flag;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "connected cannot be deleted");
        return -1;
    }
    if ((flag = PyObject_IsTrue(value)) < 0) {
        return -1;
    }
    self->connected = flag;
    return 0;
}

static PyObject *
Queue_get_sock(QueueObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->sock != NULL ? self->sock : Py_None);
}

static int
Queue_set_sock(QueueObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    int fd;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "sock cannot be deleted");
        return -1;
    }
    if (value == Py_None) {
        Py_CLEAR(self->sock);
        return 0;
    }
    /* its fileno() may run Python code: the state changes only after it */
    if ((fd = PyObject_AsFileDescriptor(value)) < 0) {
        return -1;
    }
    Py_XSETREF(self->sock, Py_NewRef(value));
    self->fd = fd;
    return 0;
}

static PyGetSetDef Queue_getset[] = {
    {"connected", (getter)Queue_get_connected, (setter)Queue_set_connected,
     "whether the owner has a connection (hold applies only without one)", NULL},
    {"sock", (getter)Queue_get_sock, (setter)Queue_set_sock,
     "the socket pushes send to directly while the queue is empty (None: none)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Queue_as_sequence = {
    .sq_length = (lenfunc)Queue_len,
};

/* -- construction and garbage collection ------------------------------------------------ */

static PyObject *
Queue_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"flush_bytes", "hold", "on_first", "on_full", "on_sent", NULL};
    Py_ssize_t flush_bytes, hold;
    PyObject *on_first, *on_full, *on_sent = Py_None, *frames, *sent;
    QueueObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnOO|O:FrameQueue", kwlist, &flush_bytes,
                                     &hold, &on_first, &on_full, &on_sent)) {
        return NULL;
    }
    if (!PyCallable_Check(on_first) || !PyCallable_Check(on_full)) {
        PyErr_SetString(PyExc_TypeError, "on_first and on_full must be callable");
        return NULL;
    }
    if ((frames = PyList_New(0)) == NULL) {
        return NULL;
    }
    if ((sent = PyList_New(0)) == NULL) {
        Py_DECREF(frames);
        return NULL;
    }
    if ((self = (QueueObject *)type->tp_alloc(type, 0)) == NULL) {
        Py_DECREF(frames);
        Py_DECREF(sent);
        return NULL;
    }
    self->frames = frames;
    self->sent = sent;
    self->sent_limit = 256;
    self->fd = -1;
    self->on_sent = on_sent == Py_None ? NULL : Py_NewRef(on_sent);
    self->flush_bytes = flush_bytes;
    self->hold = hold;
    self->on_first = Py_NewRef(on_first);
    self->on_full = Py_NewRef(on_full);
    return (PyObject *)self;
}

static int
Queue_traverse(QueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->frames);
    Py_VISIT(self->sent);
    Py_VISIT(self->on_first);
    Py_VISIT(self->on_full);
    Py_VISIT(self->on_sent);
    Py_VISIT(self->sock);
    return 0;
}

static int
Queue_clear(QueueObject *self)
{
    /* frames and sent stay lists: the methods never check them for NULL */
    Py_CLEAR(self->on_first);
    Py_CLEAR(self->on_full);
    Py_CLEAR(self->on_sent);
    Py_CLEAR(self->sock);
    return 0;
}

static void
Queue_dealloc(QueueObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->frames);
    Py_CLEAR(self->sent);
    Py_CLEAR(self->on_first);
    Py_CLEAR(self->on_full);
    Py_CLEAR(self->on_sent);
    Py_CLEAR(self->sock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Queue__doc__,
"FrameQueue(flush_bytes, hold, on_first, on_full, on_sent=None)\n--\n\n"
"The frames a Client has queued, oldest first (see virlogd.framequeue).");

static PyTypeObject Queue_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "virlogd._cqueue.FrameQueue",
    .tp_basicsize = sizeof(QueueObject),
    .tp_dealloc = (destructor)Queue_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Queue__doc__,
    .tp_traverse = (traverseproc)Queue_traverse,
    .tp_clear = (inquiry)Queue_clear,
    .tp_methods = Queue_methods,
    .tp_members = Queue_members,
    .tp_getset = Queue_getset,
    .tp_as_sequence = &Queue_as_sequence,
    .tp_new = Queue_new,
};

/* -- module --------------------------------------------------------------------------- */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cqueue",
    .m_doc = "C twin of virlogd.framequeue: the Client's queue of frames.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cqueue(void)
{
    PyObject *m;

    if (PyType_Ready(&Queue_Type) < 0 || (m = PyModule_Create(&module)) == NULL) {
        return NULL;
    }
    Py_INCREF(&Queue_Type);
    if (PyModule_AddObject(m, "FrameQueue", (PyObject *)&Queue_Type) < 0) {
        Py_DECREF(&Queue_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
