/* The C twin of ring.py: the per-record work of RingBuffer (append, entries, clear).
 *
 * ring.py keeps what is not per record: it opens and maps the file, writes the whole
 * header (magic, capacity, state) and recovers a previous run's buffer. A Core only moves
 * bytes in an area it borrows, with a buffer export, from a bytearray or an mmap, and, when
 * told where they live, rewrites the head/tail/used pointers of the header after each entry.
 *
 * The pure-Python ring keeps a deque of entry sizes because reading a length prefix back from
 * the area is slow in Python; here reading four bytes back is cheaper than keeping a queue.
 *
 * Everything runs with the GIL held and never releases it: a Core is not shared-state-safe
 * on its own, the GIL (and the router's lock) is what serialises the callers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define PREFIX 4           /* u32 LE length before every entry */
#define POINTERS_SIZE 12   /* head, tail, used: u32 LE each */

typedef struct {
    PyObject_HEAD
    Py_buffer view;            /* view.obj is NULL once released */
    unsigned char *area;
    unsigned char *pointers;   /* NULL when there is no header to keep current */
    Py_ssize_t capacity;
    Py_ssize_t head;
    Py_ssize_t tail;
    Py_ssize_t used;
    Py_ssize_t skipped;
} CoreObject;

static PyTypeObject Core_Type;

/* -- bytes in the circular area ------------------------------------------------------- */

/* Explicit byte order, not memcpy of a uint32_t: the file format is little-endian whatever
 * the host is (the compiler merges these into one store on little-endian machines). */
static inline void
put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline uint32_t
get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

/* n <= capacity and at < capacity: at most one wrap. */
static void
put(CoreObject *c, Py_ssize_t at, const unsigned char *src, Py_ssize_t n)
{
    Py_ssize_t first = c->capacity - at;
    if (n <= first) {
        memcpy(c->area + at, src, n);
        return;
    }
    memcpy(c->area + at, src, first);
    memcpy(c->area, src + first, n - first);
}

static void
get(const CoreObject *c, Py_ssize_t at, unsigned char *dst, Py_ssize_t n)
{
    Py_ssize_t first = c->capacity - at;
    if (n <= first) {
        memcpy(dst, c->area + at, n);
        return;
    }
    memcpy(dst, c->area + at, first);
    memcpy(dst + first, c->area, n - first);
}

/* The prefix itself may straddle the end of the area. Unsigned, and compared in 64 bits by
 * the callers: on a 32-bit build a prefix of 2 GiB or more would be negative as a size. */
static uint32_t
length_at(const CoreObject *c, Py_ssize_t at)
{
    unsigned char prefix[PREFIX];
    get(c, at, prefix, PREFIX);
    return get_le32(prefix);
}

/* -- the ring ------------------------------------------------------------------------- */

static int
check_open(const CoreObject *c)
{
    if (c->view.obj == NULL) {
        PyErr_SetString(PyExc_ValueError, "ring buffer core is closed");
        return -1;
    }
    return 0;
}

static void
drop_oldest(CoreObject *c)
{
    uint64_t size = (uint64_t)PREFIX + length_at(c, c->tail);
    if (size > (uint64_t)c->used) {
        /* Only a foreign write to the mapped file can get here: forget everything rather
         * than walk on through garbage. */
        c->tail = c->head;
        c->used = 0;
        return;
    }
    c->tail = (Py_ssize_t)(((uint64_t)c->tail + size) % (uint64_t)c->capacity);
    c->used -= (Py_ssize_t)size;
}

/* The data must be in the area before the pointers that cover it are: a SIGKILL can come
 * between any two stores, and recover() trusts the header. The signal fence stops the
 * compiler from moving the pointer stores up; the CPU already makes a thread's own stores
 * visible in program order to whatever survives its death. */
static void
publish(CoreObject *c)
{
    unsigned char *p = c->pointers;
    if (p == NULL) {
        return;
    }
    unsigned char pair[8];
    uint64_t word;

    atomic_signal_fence(memory_order_release);
    put_le32(p, (uint32_t)c->head);
    /* recover() reads only tail and used: one 8-byte store, so a SIGKILL never leaves one
     * new and the other old. An atomic store, not a memcpy: on a 32-bit machine a plain
     * 64-bit store may be split in two. Core() checked that the word is 8-byte aligned. */
    put_le32(pair, (uint32_t)c->tail);
    put_le32(pair + 4, (uint32_t)c->used);
    memcpy(&word, pair, sizeof word);
    __atomic_store_n((uint64_t *)(void *)(p + 4), word, __ATOMIC_RELAXED);
}

static int
append_bytes(CoreObject *c, const unsigned char *data, Py_ssize_t len)
{
    unsigned char prefix[PREFIX];
    Py_ssize_t size;

    /* Before the closed check, as in ring.py: a too-large entry is only counted. */
    if (len > c->capacity - PREFIX) {
        c->skipped++;
        return 0;
    }
    if (check_open(c) < 0) {
        return -1;
    }
    if ((uint64_t)len > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "ring entry longer than 4 GiB");
        return -1;
    }
    size = len + PREFIX;           /* <= capacity, checked above: no overflow */
    if (size > c->capacity - c->used) {
        while (size > c->capacity - c->used) {
            drop_oldest(c);
        }
        /* The new entry overwrites the dropped ones: the header must stop covering them
         * before the first byte of it lands, or a SIGKILL in between leaves recover() a
         * header over half-written entries. */
        publish(c);
        atomic_signal_fence(memory_order_seq_cst);
    }
    put_le32(prefix, (uint32_t)len);
    put(c, c->head, prefix, PREFIX);
    put(c, (c->head + PREFIX) % c->capacity, data, len);
    c->head = (c->head + size) % c->capacity;
    c->used += size;
    publish(c);
    return 0;
}

static int
append_object(CoreObject *c, PyObject *data)
{
    Py_buffer buf;
    int rc;

    /* bytes is what the daemon and the library pass: skip the buffer protocol's setup. */
    if (PyBytes_CheckExact(data)) {
        return append_bytes(c, (const unsigned char *)PyBytes_AS_STRING(data),
                            PyBytes_GET_SIZE(data));
    }
    if (PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    rc = append_bytes(c, buf.buf, buf.len);
    PyBuffer_Release(&buf);
    return rc;
}

/* -- methods -------------------------------------------------------------------------- */

PyDoc_STRVAR(Core_append__doc__,
"append($self, data, /)\n--\n\n"
"Store one entry (any bytes-like object), dropping the oldest whole entries to make room;\n"
"an entry larger than the area (prefix included) is only counted in skipped.");

static PyObject *
Core_append(CoreObject *self, PyObject *data)
{
    if (append_object(self, data) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Core_append_many__doc__,
"append_many($self, entries, /)\n--\n\n"
"append() each of an iterable of entries, in order. The header is rewritten after each\n"
"one, as append() does; an error stops the batch, the entries before it stay stored.");

static PyObject *
Core_append_many(CoreObject *self, PyObject *entries)
{
    /* One item at a time, as ring.py: a generator that fails half-way leaves the entries
     * before the failure stored, and a long iterable is never held whole in memory. */
    PyObject *it = PyObject_GetIter(entries), *item;
    if (it == NULL) {
        return NULL;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        int rc = append_object(self, item);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
entry_at(const CoreObject *c, Py_ssize_t at, Py_ssize_t len)
{
    PyObject *entry = PyBytes_FromStringAndSize(NULL, len);
    if (entry != NULL && len > 0) {
        get(c, (at + PREFIX) % c->capacity, (unsigned char *)PyBytes_AS_STRING(entry), len);
    }
    return entry;
}

/* Append every stored entry to out, oldest first. The pointers are read only here, after
 * the caller allocated out: allocating a list can start the garbage collector, whose
 * finalisers can let another thread append, and nothing below can. */
static int
collect(CoreObject *self, PyObject *out)
{
    Py_ssize_t at = self->tail, left = self->used;

    while (left >= PREFIX) {
        uint32_t prefix = length_at(self, at);
        Py_ssize_t len;
        PyObject *entry;
        if ((uint64_t)prefix > (uint64_t)(left - PREFIX)) {
            break;                 /* a foreign write to the mapped file: stop, never overrun */
        }
        len = (Py_ssize_t)prefix;
        entry = entry_at(self, at, len);
        if (entry == NULL || PyList_Append(out, entry) < 0) {
            Py_XDECREF(entry);
            return -1;
        }
        Py_DECREF(entry);
        at = (at + PREFIX + len) % self->capacity;
        left -= PREFIX + len;
    }
    return 0;
}

PyDoc_STRVAR(Core_entries__doc__,
"entries($self, /)\n--\n\n"
"Every stored entry as bytes, oldest first.");

static PyObject *
Core_entries(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out;

    if (self->used == 0) {
        return PyList_New(0);      /* as ring.py: an empty ring reads back even if closed */
    }
    if (check_open(self) < 0 || (out = PyList_New(0)) == NULL) {
        return NULL;
    }
    if (collect(self, out) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

PyDoc_STRVAR(Core_take__doc__,
"take($self, /)\n--\n\n"
"entries() then clear(), as one step: an append from another thread (the library's\n"
"lock-free debug path) lands wholly before it, and is taken, or wholly after.");

static PyObject *
Core_take(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);

    if (out == NULL) {
        return NULL;
    }
    if (self->used != 0 && (check_open(self) < 0 || collect(self, out) < 0)) {
        Py_DECREF(out);
        return NULL;
    }
    self->head = self->tail = self->used = 0;
    publish(self);
    return out;
}

PyDoc_STRVAR(Core_clear__doc__,
"clear($self, /)\n--\n\n"
"Forget every entry (skipped is kept); rewrites the header pointers when there are any.");

static PyObject *
Core_clear(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    self->head = self->tail = self->used = 0;
    publish(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Core_release__doc__,
"release($self, /)\n--\n\n"
"Give the area back to its owner, so that an mmap can be closed (it refuses while a\n"
"buffer is exported). Afterwards append() and entries() raise ValueError; the counters\n"
"stay readable. Calling it again does nothing.");

static PyObject *
Core_release(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->view.obj != NULL) {
        PyBuffer_Release(&self->view);
    }
    self->area = self->pointers = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Core_methods[] = {
    {"append", (PyCFunction)Core_append, METH_O, Core_append__doc__},
    {"append_many", (PyCFunction)Core_append_many, METH_O, Core_append_many__doc__},
    {"entries", (PyCFunction)Core_entries, METH_NOARGS, Core_entries__doc__},
    {"clear", (PyCFunction)Core_clear, METH_NOARGS, Core_clear__doc__},
    {"take", (PyCFunction)Core_take, METH_NOARGS, Core_take__doc__},
    {"release", (PyCFunction)Core_release, METH_NOARGS, Core_release__doc__},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Core_members[] = {
    {"capacity", T_PYSSIZET, offsetof(CoreObject, capacity), READONLY,
     "size of the area in bytes, length prefixes included"},
    {"head", T_PYSSIZET, offsetof(CoreObject, head), READONLY,
     "where the next entry goes"},
    {"tail", T_PYSSIZET, offsetof(CoreObject, tail), READONLY,
     "where the oldest entry starts"},
    {"used", T_PYSSIZET, offsetof(CoreObject, used), READONLY,
     "bytes stored, length prefixes included"},
    {"skipped", T_PYSSIZET, offsetof(CoreObject, skipped), 0,
     "entries too large to store (writable, as RingBuffer.skipped is)"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
Core_get_closed(CoreObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->view.obj == NULL);
}

static PyGetSetDef Core_getset[] = {
    {"closed", (getter)Core_get_closed, NULL, "whether release() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* -- construction --------------------------------------------------------------------- */

static int
check_layout(const Py_buffer *view, Py_ssize_t capacity, Py_ssize_t area_at,
             Py_ssize_t pointers_at)
{
    if (capacity < 0 || area_at < 0 || area_at > view->len - capacity) {
        PyErr_SetString(PyExc_ValueError, "the area does not fit in the buffer");
        return -1;
    }
    if (pointers_at == -1) {
        return 0;
    }
    if (pointers_at < 0 || pointers_at > view->len - POINTERS_SIZE
            || (pointers_at + POINTERS_SIZE > area_at && pointers_at < area_at + capacity)) {
        PyErr_SetString(PyExc_ValueError,
                        "the header pointers must fit in the buffer, outside the area");
        return -1;
    }
    if ((uint64_t)capacity > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a ring with a header holds at most 4 GiB");
        return -1;
    }
    /* tail and used are stored as one atomic 8-byte word (publish) */
    if (((uintptr_t)view->buf + (uintptr_t)pointers_at + 4) % 8 != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "the header's tail and used must be 8-byte aligned in the buffer");
        return -1;
    }
    return 0;
}

static PyObject *
Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "capacity", "area_at", "pointers_at", NULL};
    Py_buffer view;
    Py_ssize_t capacity, area_at = 0, pointers_at = -1;
    CoreObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "w*n|nn:Core", kwlist, &view, &capacity,
                                     &area_at, &pointers_at)) {
        return NULL;
    }
    if (check_layout(&view, capacity, area_at, pointers_at) < 0
            || (self = (CoreObject *)type->tp_alloc(type, 0)) == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->view = view;
    self->area = (unsigned char *)view.buf + area_at;
    self->pointers = pointers_at == -1 ? NULL : (unsigned char *)view.buf + pointers_at;
    self->capacity = capacity;
    return (PyObject *)self;
}

static void
Core_dealloc(CoreObject *self)
{
    if (self->view.obj != NULL) {
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Core__doc__,
"Core(buffer, capacity, area_at=0, pointers_at=-1)\n--\n\n"
"The circular area of a RingBuffer: capacity bytes at area_at of a writable buffer\n"
"(kept exported until release()). With pointers_at, head, tail and used are written there\n"
"as three u32 LE after every change, the way ring.py's file header holds them.\n"
"It starts empty: the pointers are written at the first change.");

static PyTypeObject Core_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "virlogd._cring.Core",
    .tp_basicsize = sizeof(CoreObject),
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Core__doc__,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
    .tp_new = Core_new,
};

/* -- module --------------------------------------------------------------------------- */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cring",
    .m_doc = "C twin of virlogd.ring: the per-record work of the ring buffer.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cring(void)
{
    PyObject *m;

    if (PyType_Ready(&Core_Type) < 0 || (m = PyModule_Create(&module)) == NULL) {
        return NULL;
    }
    Py_INCREF(&Core_Type);
    if (PyModule_AddObject(m, "Core", (PyObject *)&Core_Type) < 0) {
        Py_DECREF(&Core_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
