/* The C twin of wire.py's two per-record paths (docs/protocol.md has the format).
 *
 * frames(): the daemon's decoder. It takes only the common case: it decodes the run of
 * well-formed frames at the start of a buffer and stops BEFORE the first frame it does not
 * take whole (any malformed frame, a field name the Python decoder would rename...), so that
 * wire.FrameDecoder's Python loop handles that frame. Every protocol error message is
 * therefore produced in one place, in Python; this file never raises ProtocolError.
 *
 * encode_parts(): the client's encoder, for plain arguments only. Everything else (fields,
 * strings that are not plain UTF-8, other types, every error) is handed, arguments
 * untouched, to the pure-Python encode_parts given to bind(), so results and messages are
 * the Python ones by construction.
 *
 * The bytes come from untrusted local clients: every read is checked against the end of the
 * frame, itself checked against the end of the buffer, with 64-bit sums of 32-bit lengths
 * (no overflow possible).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"
#include "_ccompat.h"
#include "_ccaller.h"
#include "_ccall.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HEAD_SIZE 44        /* the length prefix and the 40-byte fixed part of the body */
#define FIELD_HEAD 6        /* name length, kind, value length */
#define MAX_FIELDS 256
#define TYPE_RECORD 1
#define KIND_TEXT 0
#define KIND_BYTES 1
#define MAX_TIME 253402300799.0
#define MAX_NAME 64         /* fieldnames: ^[A-Z][A-Z0-9_]{0,63}$ */
/* wire.MAX_SOURCE, MAX_FUNC, MAX_FILE, MAX_IDENT: a longer one is cut by the Python decoder
 * (rare: this file leaves that frame to it) */
#define MAX_SOURCE 1024
#define MAX_FUNC 1024
#define MAX_FILE 4096
#define MAX_IDENT 1024

/* Record's slots, in wire.py's order; bind() finds each one's offset in the instance. */
enum { S_TIME, S_PRIORITY, S_SOURCE, S_MESSAGE, S_FUNC, S_LINE, S_FILE, S_FIELDS, S_STACK,
       S_PID, S_UID, S_GID, S_IDENT, S_RELAYED, NSLOTS };
static const char *const slot_names[NSLOTS] = {
    "time", "priority", "source", "message", "func", "line", "file", "fields", "stack",
    "pid", "uid", "gid", "ident", "relayed",
};

/* Set by bind(); record_type is NULL until a bind() succeeded. */
static PyTypeObject *record_type;
static Py_ssize_t slot_offset[NSLOTS];
static PyObject *reserved_names;    /* fieldnames.RESERVED */
static PyObject *encode_fallback;   /* the pure-Python encode_parts */
static Py_ssize_t encode_limit;     /* wire.MAX_FRAME */

enum { K_TIME, K_FUNC, K_LINE, K_FILE, K_FIELDS, K_STACK, K_IDENT, NKW };
static const char *const kw_names[NKW] = {
    "time", "func", "line", "file", "fields", "stack", "ident",
};
static PyObject *kw_interned[NKW];

static inline uint32_t
rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void
wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* -- bind ------------------------------------------------------------------------------- */

/* Whether every slot is a plain writable object slot of this very type; fills slot_offset.
 * The exact __slots__ set is required: a Record with another slot would need this file
 * (and wire.py's loop) to change, and must not silently get records missing it. */
static int
find_slots(PyTypeObject *type, Py_ssize_t *offsets)
{
    int ok = 0;
    PyObject *slots = PyObject_GetAttrString((PyObject *)type, "__slots__");
    if (slots == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (!PyTuple_Check(slots) || PyTuple_GET_SIZE(slots) != NSLOTS)
        goto done;
    for (int i = 0; i < NSLOTS; i++) {
        PyObject *name = PyTuple_GET_ITEM(slots, i);
        int known = 0;
        for (int j = 0; j < NSLOTS && !known; j++)
            known = PyUnicode_Check(name) &&
                    PyUnicode_CompareWithASCIIString(name, slot_names[j]) == 0;
        if (!known)
            goto done;
    }
    for (int i = 0; i < NSLOTS; i++) {
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, slot_names[i]);
        if (descr == NULL) {
            PyErr_Clear();
            goto done;
        }
        int good = 0;
        if (Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                ((PyDescrObject *)descr)->d_type == type) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            good = member->type == T_OBJECT_EX && !(member->flags & READONLY) &&
                   member->offset >= (Py_ssize_t)sizeof(PyObject) &&
                   member->offset <= type->tp_basicsize - (Py_ssize_t)sizeof(PyObject *);
            offsets[i] = member->offset;
        }
        Py_DECREF(descr);
        if (!good)
            goto done;
        for (int j = 0; j < i; j++)
            if (offsets[j] == offsets[i])
                goto done;
    }
    ok = 1;
done:
    Py_DECREF(slots);
    return ok;
}

PyDoc_STRVAR(bind_doc,
"bind(record_type, reserved, encode_fallback, max_frame, /)\n--\n\n"
"Give the module what it needs from Python. Returns False (and changes nothing) when\n"
"record_type's slots are not the 14 plain slots of virlogd.record.Record, which cannot\n"
"then be built here: the caller must use pure Python.");

static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t offsets[NSLOTS];
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "bind() takes exactly 4 arguments");
        return NULL;
    }
    PyObject *type = args[0], *reserved = args[1], *fallback = args[2];
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (!PyFrozenSet_Check(reserved) || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError,
                        "bind() needs a frozenset of names and a callable fallback");
        return NULL;
    }
    if (!PyType_Check(type))
        Py_RETURN_FALSE;
    PyTypeObject *tp = (PyTypeObject *)type;
    /* records are made as Record.__new__(Record) makes them: object's allocation, no
     * __init__; a type with its own __new__ or a variable size would need more */
    if (tp->tp_new != PyBaseObject_Type.tp_new || tp->tp_alloc == NULL ||
            tp->tp_itemsize != 0 || !find_slots(tp, offsets))
        Py_RETURN_FALSE;
    memcpy(slot_offset, offsets, sizeof(offsets));
    Py_INCREF(type);
    Py_XSETREF(record_type, tp);
    Py_INCREF(reserved);
    Py_XSETREF(reserved_names, reserved);
    Py_INCREF(fallback);
    Py_XSETREF(encode_fallback, fallback);
    encode_limit = limit;
    Py_RETURN_TRUE;
}

/* -- decoding --------------------------------------------------------------------------- */

/* The last string decoded for one of the repeated parts (source, func, file, ident): a
 * client sends the same few over and over, and one memcmp is cheaper than a new str. */
typedef struct {
    const unsigned char *bytes;
    size_t size;
    PyObject *value;            /* strong reference, released when frames() returns */
} Cache;

/* Results: 1 done (*result set), 0 not taken (hand the frame to Python), -1 exception. */

static int
decode_text(const unsigned char *s, size_t n, const char *errors, Cache *cache,
            PyObject **result)
{
    if (cache != NULL && cache->value != NULL && cache->size == n &&
            memcmp(cache->bytes, s, n) == 0) {
        Py_INCREF(cache->value);
        *result = cache->value;
        return 1;
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, errors);
    if (text == NULL) {
        if (errors == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();      /* strict part, invalid UTF-8: Python says where */
            return 0;
        }
        return -1;
    }
    if (cache != NULL) {
        Py_INCREF(text);
        Py_XSETREF(cache->value, text);
        cache->bytes = s;
        cache->size = n;
    }
    *result = text;
    return 1;
}

/* An optional part: None when absent (length 0), as in wire.py. */
static int
decode_optional(const unsigned char *s, size_t n, const char *errors, Cache *cache,
                PyObject **result)
{
    if (n == 0) {
        Py_INCREF(Py_None);
        *result = Py_None;
        return 1;
    }
    return decode_text(s, n, errors, cache, result);
}

/* Exactly the names fieldnames.is_valid accepts, less RESERVED (checked by the caller).
 * Anything else, even a name Python would keep, goes to Python, which renames and counts. */
static int
plain_name(const unsigned char *s, size_t n)
{
    if (n == 0 || n > MAX_NAME || s[0] < 'A' || s[0] > 'Z')
        return 0;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* The fields of a frame: f[pos:stop] must hold exactly count fields. */
static int
decode_fields(const unsigned char *f, size_t pos, size_t stop, unsigned count,
              PyObject **result)
{
    PyObject *fields = PyDict_New();
    if (fields == NULL)
        return -1;
    for (unsigned i = 0; i < count; i++) {
        if (stop - pos < FIELD_HEAD)
            goto not_taken;
        size_t name_len = f[pos];
        unsigned kind = f[pos + 1];
        uint64_t value_len = rd32(f + pos + 2);
        size_t start = pos + FIELD_HEAD;
        if ((uint64_t)name_len + value_len > (uint64_t)(stop - start))
            goto not_taken;
        const unsigned char *name_bytes = f + start;
        const unsigned char *value_bytes = name_bytes + name_len;
        pos = start + name_len + (size_t)value_len;
        if ((kind != KIND_TEXT && kind != KIND_BYTES) || !plain_name(name_bytes, name_len))
            goto not_taken;
        PyObject *name = PyUnicode_DecodeLatin1((const char *)name_bytes,
                                                (Py_ssize_t)name_len, NULL);
        if (name == NULL)
            goto error;
        int taken = PySet_Contains(reserved_names, name);
        if (taken != 0) {
            Py_DECREF(name);
            if (taken < 0)
                goto error;
            goto not_taken;
        }
        PyObject *value = kind == KIND_TEXT
            ? PyUnicode_DecodeUTF8((const char *)value_bytes, (Py_ssize_t)value_len,
                                   "surrogateescape")
            : PyBytes_FromStringAndSize((const char *)value_bytes, (Py_ssize_t)value_len);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        int failed = PyDict_SetItem(fields, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (failed)
            goto error;
    }
    if (pos != stop)
        goto not_taken;
    *result = fields;
    return 1;
not_taken:
    Py_DECREF(fields);
    return 0;
error:
    Py_DECREF(fields);
    return -1;
}

typedef struct {
    PyObject *pid, *uid, *gid;
    Cache source, func, file, ident;
} Context;

/* One complete frame: f[0:size] (length prefix included), size >= HEAD_SIZE. */
static int
decode_frame(const unsigned char *f, size_t size, Context *ctx, PyObject **result)
{
    PyObject *v[NSLOTS] = {NULL};
    int status;

    unsigned kind = f[4], priority = f[5];
    unsigned nfields = (unsigned)f[6] | (unsigned)f[7] << 8;
    uint32_t line = rd32(f + 8);
    double when = PyFloat_Unpack8((const char *)f + 12, 1);
    if (when == -1.0 && PyErr_Occurred())
        return -1;
    if (kind != TYPE_RECORD || priority < 1 || priority > 4 || nfields > MAX_FIELDS ||
            !(when >= 0.0 && when <= MAX_TIME))     /* written so that NaN fails */
        return 0;
    uint64_t len[6];
    uint64_t g = HEAD_SIZE;
    for (int i = 0; i < 6; i++) {
        len[i] = rd32(f + 20 + 4 * i);
        g += len[i];
    }
    if (g > (uint64_t)size || (nfields == 0 && g != (uint64_t)size) || len[0] > MAX_SOURCE ||
            len[2] > MAX_FUNC || len[3] > MAX_FILE || len[5] > MAX_IDENT)
        return 0;
    /* every offset below is now within the frame */
    const unsigned char *s = f + HEAD_SIZE;
    const unsigned char *m = s + len[0], *fn = m + len[1], *fl = fn + len[2];
    const unsigned char *st = fl + len[3], *id = st + len[4];

    if ((status = decode_text(s, (size_t)len[0], NULL, &ctx->source, &v[S_SOURCE])) != 1 ||
        (status = decode_text(m, (size_t)len[1], "surrogateescape", NULL,
                              &v[S_MESSAGE])) != 1 ||
        (status = decode_optional(fn, (size_t)len[2], NULL, &ctx->func, &v[S_FUNC])) != 1 ||
        (status = decode_optional(fl, (size_t)len[3], "surrogateescape", &ctx->file,
                                  &v[S_FILE])) != 1 ||
        (status = decode_optional(st, (size_t)len[4], "surrogateescape", NULL,
                                  &v[S_STACK])) != 1 ||
        (status = decode_optional(id, (size_t)len[5], NULL, &ctx->ident,
                                  &v[S_IDENT])) != 1)
        goto fail;
    if (nfields)
        status = decode_fields(f, (size_t)g, size, nfields, &v[S_FIELDS]);
    else
        status = (v[S_FIELDS] = PyDict_New()) != NULL ? 1 : -1;
    if (status != 1)
        goto fail;
    status = -1;
    if ((v[S_TIME] = PyFloat_FromDouble(when)) == NULL ||
            (v[S_PRIORITY] = PyLong_FromLong((long)priority)) == NULL ||
            (v[S_LINE] = PyLong_FromUnsignedLong(line)) == NULL)
        goto fail;
    Py_INCREF(ctx->pid);
    v[S_PID] = ctx->pid;
    Py_INCREF(ctx->uid);
    v[S_UID] = ctx->uid;
    Py_INCREF(ctx->gid);
    v[S_GID] = ctx->gid;
    v[S_RELAYED] = Py_NewRef(Py_True);     /* another process sent it */

    /* Record.__new__(Record), then each slot's reference moved in: the memory is zeroed,
     * so there is no old value to release */
    PyObject *record = record_type->tp_alloc(record_type, 0);
    if (record == NULL)
        goto fail;
    for (int i = 0; i < NSLOTS; i++)
        *(PyObject **)((char *)record + slot_offset[i]) = v[i];
    *result = record;
    return 1;
fail:
    for (int i = 0; i < NSLOTS; i++)
        Py_XDECREF(v[i]);
    return status;
}

PyDoc_STRVAR(frames_doc,
"frames(buf, pos, out, max_frame, pid, uid, gid, /)\n--\n\n"
"Decode the well-formed frames of buf from pos on, appending Records to out.\n"
"Returns (pos, need): need is the size of the incomplete frame at pos (0 if none);\n"
"otherwise pos is where the frames this does not take start (or fewer than 4 bytes).");

static PyObject *
frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "frames() takes exactly 7 arguments");
        return NULL;
    }
    if (record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_cwire.frames() before a successful bind()");
        return NULL;
    }
    PyObject *out = args[2];
    if (!PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "frames(): out must be a list");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    int overflow;
    long long limit = PyLong_AsLongLongAndOverflow(args[3], &overflow);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (overflow)               /* a limit beyond any u32 length, or below every one */
        limit = overflow > 0 ? (long long)UINT32_MAX : -1;

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (start < 0 || start > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "frames(): pos outside the buffer");
        return NULL;
    }
    Context ctx = {.pid = args[4], .uid = args[5], .gid = args[6]};
    const unsigned char *base = view.buf;
    size_t end = (size_t)view.len, pos = (size_t)start;
    uint64_t need = 0;
    PyObject *answer = NULL;

    while (end - pos >= 4) {
        const unsigned char *f = base + pos;
        uint64_t size = (uint64_t)rd32(f) + 4;
        if (limit < 0 || size - 4 > (uint64_t)limit)
            break;
        if (size > (uint64_t)(end - pos)) {
            need = size;
            break;
        }
        if (size < HEAD_SIZE)
            break;
        PyObject *record = NULL;
        int status = decode_frame(f, (size_t)size, &ctx, &record);
        if (status < 0)
            goto done;
        if (status == 0)
            break;
        int failed = PyList_Append(out, record);
        Py_DECREF(record);
        if (failed)
            goto done;
        pos += (size_t)size;
    }
    answer = Py_BuildValue("nK", (Py_ssize_t)pos, (unsigned long long)need);
done:
    Py_XDECREF(ctx.source.value);
    Py_XDECREF(ctx.func.value);
    Py_XDECREF(ctx.file.value);
    Py_XDECREF(ctx.ident.value);
    PyBuffer_Release(&view);
    return answer;
}

/* -- encoding --------------------------------------------------------------------------- */

typedef struct {
    const char *bytes;
    Py_ssize_t size;
} Part;

/* A str's strict UTF-8 (which is what every one of wire.py's error handlers gives when
 * there is nothing to handle). 0: not an exact str, or not plain UTF-8 (surrogates): the
 * Python encoder must do it. *hold gets the bytes object to release, if one was made. */
static int
utf8_of(PyObject *text, Part *part, PyObject **hold)
{
    if (!PyUnicode_CheckExact(text))
        return 0;
    if (VIRLOGD_UNICODE_READY(text) < 0)
        return -1;
    if (PyUnicode_IS_ASCII(text)) {
        part->bytes = (const char *)PyUnicode_DATA(text);
        part->size = PyUnicode_GET_LENGTH(text);
        return 1;
    }
    PyObject *raw = PyUnicode_AsUTF8String(text);
    if (raw == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    *hold = raw;
    part->bytes = PyBytes_AS_STRING(raw);
    part->size = PyBytes_GET_SIZE(raw);
    return 1;
}

/* func, file, stack, ident: absent (None) or "" give an empty part, as `x if x else b""`. */
static int
optional_utf8_of(PyObject *text, Part *part, PyObject **hold)
{
    if (text == NULL || text == Py_None) {
        part->bytes = "";
        part->size = 0;
        return 1;
    }
    return utf8_of(text, part, hold);
}

PyDoc_STRVAR(encode_parts_doc,
"encode_parts(priority, source, message, *, time, func=None, line=0, file=None,\n"
"             fields=None, stack=None, ident=None)\n"
"--\n\n"
"wire.encode_parts, byte for byte; what it does not take (fields, text that is not\n"
"plain UTF-8, other types, every error) goes to the pure-Python encode_parts.");

static PyObject *
encode_parts(PyObject *module, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *kw[NKW] = {NULL};
    PyObject *hold[6] = {NULL};
    Part part[6];
    PyObject *frame = NULL;
    int status = 0;

    if (encode_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_cwire.encode_parts() before bind()");
        return NULL;
    }
    if (nargs != 3)
        goto python;
    if (kwnames != NULL) {
        Py_ssize_t n = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            int k = 0;
            while (k < NKW && name != kw_interned[k])
                k++;
            for (int j = 0; k == NKW && j < NKW; j++)   /* a name that is not interned */
                if (PyUnicode_Check(name) &&
                        PyUnicode_CompareWithASCIIString(name, kw_names[j]) == 0)
                    k = j;
            if (k == NKW)
                goto python;
            kw[k] = args[nargs + i];
        }
    }
    if (kw[K_TIME] == NULL || !PyFloat_CheckExact(kw[K_TIME]))
        goto python;
    if (kw[K_FIELDS] != NULL && kw[K_FIELDS] != Py_None &&
            !(PyDict_CheckExact(kw[K_FIELDS]) && PyDict_GET_SIZE(kw[K_FIELDS]) == 0))
        goto python;
    if (!PyLong_CheckExact(args[0]))
        goto python;
    int overflow;
    long priority = PyLong_AsLongAndOverflow(args[0], &overflow);
    if (priority == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || priority < 1 || priority > 4)
        goto python;
    unsigned long long line = 0;
    if (kw[K_LINE] != NULL) {
        if (!PyLong_CheckExact(kw[K_LINE]))
            goto python;
        long long value = PyLong_AsLongLongAndOverflow(kw[K_LINE], &overflow);
        if (value == -1 && PyErr_Occurred())
            return NULL;
        /* like wire.py: a line that does not fit a u32 is sent as unknown (0) */
        line = !overflow && value >= 0 && value <= (long long)UINT32_MAX
            ? (unsigned long long)value : 0;
    }
    if ((status = utf8_of(args[1], &part[0], &hold[0])) != 1 ||
        (status = utf8_of(args[2], &part[1], &hold[1])) != 1 ||
        (status = optional_utf8_of(kw[K_FUNC], &part[2], &hold[2])) != 1 ||
        (status = optional_utf8_of(kw[K_FILE], &part[3], &hold[3])) != 1 ||
        (status = optional_utf8_of(kw[K_STACK], &part[4], &hold[4])) != 1 ||
        (status = optional_utf8_of(kw[K_IDENT], &part[5], &hold[5])) != 1)
        goto done;
    /* over the limit: the Python encoder says by how much (sums capped, never overflow) */
    Py_ssize_t size = HEAD_SIZE - 4;
    for (int i = 0; i < 6 && size <= encode_limit; i++)
        size = part[i].size > encode_limit - size ? encode_limit + 1 : size + part[i].size;
    if (size > encode_limit) {
        status = 0;
        goto done;
    }
    frame = PyBytes_FromStringAndSize(NULL, size + 4);
    if (frame == NULL) {
        status = -1;
        goto done;
    }
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(frame);
    wr32(p, (uint32_t)size);
    p[4] = TYPE_RECORD;
    p[5] = (unsigned char)priority;
    p[6] = p[7] = 0;                    /* no fields */
    wr32(p + 8, (uint32_t)line);
    if (PyFloat_Pack8(PyFloat_AS_DOUBLE(kw[K_TIME]), (char *)p + 12, 1) < 0) {
        Py_CLEAR(frame);
        status = -1;
        goto done;
    }
    p += 20;
    for (int i = 0; i < 6; i++, p += 4)
        wr32(p, (uint32_t)part[i].size);
    for (int i = 0; i < 6; i++) {
        if (part[i].size)
            memcpy(p, part[i].bytes, (size_t)part[i].size);
        p += part[i].size;
    }
done:
    for (int i = 0; i < 6; i++)
        Py_XDECREF(hold[i]);
    if (status != 0)
        return frame;       /* the frame, or NULL with the exception set */
python:
    return PyObject_Vectorcall(encode_fallback, args, (size_t)nargs, kwnames);
}

static PyObject *encode_kwnames;    /* ("time", "func", ..., "ident"): encode()'s call */

PyDoc_STRVAR(here_doc,
"here(priority, source, message, func, line, file, pid, fields, stack, /)\n--\n\n"
"Record.here: a record of this process stamped now (time.time()'s clock), its slots filled\n"
"in place as the decoder fills the daemon's; fields None gives {}.");

static PyObject *
here(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    enum { A_PRIORITY, A_SOURCE, A_MESSAGE, A_FUNC, A_LINE, A_FILE, A_PID, A_FIELDS, A_STACK,
           NARGS };
    static const int into[NARGS] = {S_PRIORITY, S_SOURCE, S_MESSAGE, S_FUNC, S_LINE, S_FILE,
                                    S_PID, S_FIELDS, S_STACK};
    struct timespec now;

    if (nargs != NARGS) {
        PyErr_Format(PyExc_TypeError, "here() takes %d arguments (%zd given)", NARGS, nargs);
        return NULL;
    }
    if (record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_cwire.here() before bind()");
        return NULL;
    }
    clock_gettime(CLOCK_REALTIME, &now);      /* what time.time() reads */
    PyObject *when = PyFloat_FromDouble((double)now.tv_sec + now.tv_nsec * 1e-9);
    PyObject *fields = args[A_FIELDS] == Py_None ? PyDict_New() : Py_NewRef(args[A_FIELDS]);
    /* pid None is this process, as Record() has it */
    PyObject *pid = args[A_PID] == Py_None ? PyLong_FromLong((long)getpid())
                                           : Py_NewRef(args[A_PID]);
    PyObject *record = NULL;
    if (when == NULL || fields == NULL || pid == NULL ||
            (record = record_type->tp_alloc(record_type, 0)) == NULL) {
        Py_XDECREF(when);
        Py_XDECREF(fields);
        Py_XDECREF(pid);
        return NULL;
    }
    /* zeroed memory: nothing to release; uid, gid and ident are None, relayed False */
    for (int i = 0; i < NARGS; i++)
        if (i != A_FIELDS && i != A_PID)
            *(PyObject **)((char *)record + slot_offset[into[i]]) = Py_NewRef(args[i]);
    *(PyObject **)((char *)record + slot_offset[S_FIELDS]) = fields;
    *(PyObject **)((char *)record + slot_offset[S_PID]) = pid;
    *(PyObject **)((char *)record + slot_offset[S_TIME]) = when;
    *(PyObject **)((char *)record + slot_offset[S_UID]) = Py_NewRef(Py_None);
    *(PyObject **)((char *)record + slot_offset[S_GID]) = Py_NewRef(Py_None);
    *(PyObject **)((char *)record + slot_offset[S_IDENT]) = Py_NewRef(Py_None);
    *(PyObject **)((char *)record + slot_offset[S_RELAYED]) = Py_NewRef(Py_False);
    return record;
}

PyDoc_STRVAR(here_at_doc,
"here_at(priority, source, msg, args, pid, depth, /)\n--\n\n"
"here() for a call depth frames above the caller: msg % args (if args) or str(msg), and\n"
"that frame's function, line and file; no fields, no stack (the library's usual call).");

static PyObject *
here_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    enum { A_PRIORITY, A_SOURCE, A_MSG, A_ARGS, A_PID, A_DEPTH, NARGS };
    PyObject *func, *line, *file, *message, *record = NULL;
    long depth;
    int formatted;

    if (nargs != NARGS) {
        PyErr_Format(PyExc_TypeError, "here_at() takes %d arguments (%zd given)", NARGS,
                     nargs);
        return NULL;
    }
    if ((depth = PyLong_AsLong(args[A_DEPTH])) == -1 && PyErr_Occurred())
        return NULL;
    if (call_site(depth, &func, &line, &file) < 0)
        return NULL;
    if ((formatted = PyObject_IsTrue(args[A_ARGS])) < 0)
        message = NULL;
    else
        message = formatted ? PyNumber_Remainder(args[A_MSG], args[A_ARGS])
                            : PyObject_Str(args[A_MSG]);
    if (message != NULL) {
        PyObject *parts[9] = {args[A_PRIORITY], args[A_SOURCE], message, func, line, file,
                              args[A_PID], Py_None, Py_None};
        record = here(module, parts, 9);
        Py_DECREF(message);
    }
    Py_DECREF(func);
    Py_DECREF(line);
    Py_DECREF(file);
    return record;
}

/* A slot of the record, as a new reference: read in place for a Record, by name for anything
 * else (a subclass, a duck); NULL with AttributeError when it is not set. */
static PyObject *
slot_of(PyObject *record, int slot)
{
    if (record_type != NULL && Py_TYPE(record) == record_type) {
        PyObject *value = *(PyObject **)((char *)record + slot_offset[slot]);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttrString(record, slot_names[slot]);
}

PyDoc_STRVAR(encode_doc,
"encode(record, ident=None)\n--\n\n"
"wire.encode: encode_parts of the record's slots (line or 0; the record's ident, or *ident*\n"
"when it has none), without the ten attribute lookups and keywords of the Python call.");

/* encode()'s two arguments, positional or by name, as the Python signature takes them */
static int
encode_arguments(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 PyObject *out[2])
{
    static const char *const names[2] = {"record", "ident"};
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);

    out[0] = out[1] = NULL;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "encode() takes from 1 to 2 positional arguments but %zd were given",
                     nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int at = PyUnicode_CompareWithASCIIString(name, names[0]) == 0 ? 0
                 : PyUnicode_CompareWithASCIIString(name, names[1]) == 0 ? 1 : -1;
        if (at < 0) {
            PyErr_Format(PyExc_TypeError,
                         "encode() got an unexpected keyword argument '%U'", name);
            return -1;
        }
        if (out[at] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "encode() got multiple values for argument '%s'", names[at]);
            return -1;
        }
        out[at] = args[nargs + k];
    }
    if (out[0] == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "encode() missing 1 required positional argument: 'record'");
        return -1;
    }
    if (out[1] == NULL)
        out[1] = Py_None;
    return 0;
}

static PyObject *
encode(PyObject *module, PyObject *const *fastargs, Py_ssize_t nargs, PyObject *kwnames)
{
    enum { P_PRIORITY, P_SOURCE, P_MESSAGE, P_TIME, P_FUNC, P_LINE, P_FILE, P_FIELDS, P_STACK,
           P_IDENT, NPARTS };
    static const int from[NPARTS] = {S_PRIORITY, S_SOURCE, S_MESSAGE, S_TIME, S_FUNC, S_LINE,
                                     S_FILE, S_FIELDS, S_STACK, S_IDENT};
    PyObject *argv[NPARTS] = {NULL};
    PyObject *args[2];
    PyObject *result = NULL;

    if (encode_arguments(fastargs, nargs, kwnames, args) < 0)
        return NULL;
    if (encode_kwnames == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_cwire.encode() before bind()");
        return NULL;
    }
    for (int i = 0; i < NPARTS; i++)
        if ((argv[i] = slot_of(args[0], from[i])) == NULL)
            goto done;
    /* line or 0, ident or the default: as wire.py's encode() */
    for (int i = P_LINE; i <= P_IDENT; i += P_IDENT - P_LINE) {
        int truth = PyObject_IsTrue(argv[i]);
        if (truth < 0)
            goto done;
        if (!truth) {
            PyObject *other = i == P_LINE ? PyLong_FromLong(0)
                              : Py_NewRef(args[1]);
            if (other == NULL)
                goto done;
            Py_SETREF(argv[i], other);
        }
    }
    result = encode_parts(module, argv, 3, encode_kwnames);
done:
    for (int i = 0; i < NPARTS; i++)
        Py_XDECREF(argv[i]);
    return result;
}

/* -- FrameSender ------------------------------------------------------------------------ */

/* The library's x:virlogd output's handle(): client.send_frame(encode(record, ident)), then
 * sent += 1; a vectorcall object, so the router's out.handle(record, line) is one C call. */
typedef struct {
    PyObject_HEAD
    PyObject *client;
    PyObject *ident;
    Py_ssize_t sent;
    vectorcallfunc vectorcall;
} SenderObject;

static PyObject *s_send_frame;

static PyObject *
Sender_call(SenderObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *eargs[2], *frame, *push, *res;

    if (record_line_arguments("FrameSender.__call__()", 1, PyVectorcall_NARGS(nargsf),
                              kwnames) < 0)
        return NULL;
    /* looked up on every call, first, as the Python twin does: a fork replaces the client's
     * queue, and so its send_frame */
    if ((push = PyObject_GetAttr(self->client, s_send_frame)) == NULL)
        return NULL;
    eargs[0] = args[0];
    eargs[1] = self->ident;
    if ((frame = encode(NULL, eargs, 2, NULL)) == NULL) {
        Py_DECREF(push);
        return NULL;
    }
    res = PyObject_CallOneArg(push, frame);
    Py_DECREF(push);
    Py_DECREF(frame);
    if (res == NULL)
        return NULL;
    Py_DECREF(res);
    self->sent++;
    Py_RETURN_NONE;
}

static PyObject *
Sender_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"client", "ident", NULL};
    PyObject *client, *ident = Py_None;
    SenderObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:FrameSender", kwlist, &client, &ident))
        return NULL;
    if ((self = (SenderObject *)type->tp_alloc(type, 0)) == NULL)
        return NULL;
    self->client = Py_NewRef(client);
    self->ident = Py_NewRef(ident);
    self->sent = 0;
    self->vectorcall = (vectorcallfunc)Sender_call;
    return (PyObject *)self;
}

static int
Sender_traverse(SenderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->client);
    Py_VISIT(self->ident);
    return 0;
}

static int
Sender_clear(SenderObject *self)
{
    Py_CLEAR(self->client);
    Py_CLEAR(self->ident);
    return 0;
}

static void
Sender_dealloc(SenderObject *self)
{
    PyObject_GC_UnTrack(self);
    Sender_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Sender_members[] = {
    {"client", T_OBJECT, offsetof(SenderObject, client), READONLY, NULL},
    {"ident", T_OBJECT, offsetof(SenderObject, ident), READONLY, NULL},
    {"sent", T_PYSSIZET, offsetof(SenderObject, sent), READONLY,
     "records handed to the client"},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Sender_doc,
"FrameSender(client, ident=None)\n--\n\n"
"sender(record, line) is client.send_frame(encode(record, ident)), counted in sent: the\n"
"x:virlogd output's handle() in one C call (wire.FrameSender is its Python twin).");

static PyTypeObject Sender_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "virlogd._cwire.FrameSender",
    .tp_basicsize = sizeof(SenderObject),
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_vectorcall_offset = offsetof(SenderObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = Sender_doc,
    .tp_traverse = (traverseproc)Sender_traverse,
    .tp_clear = (inquiry)Sender_clear,
    .tp_members = Sender_members,
    .tp_new = Sender_new,
};

/* -- RecordHandler ---------------------------------------------------------------------- */

/* VirlogdHandler.handle in one C call for a plain logging.LogRecord and a handler with no
 * filters and no formatter (what a program's handler usually is): it then does what the
 * Python handle() and emit() do, step by step and in their order, reading every attribute
 * when they read it, with the Python helpers (_priority, _fields, _stack) for the rare parts:
 *
 *   try:
 *       message = record.getMessage()
 *       self.client.send_frame(encode_parts(_priority(levelno), record.name, message,
 *           time=record.created, func=record.funcName, line=record.lineno or 0,
 *           file=record.pathname, fields=_fields(record) if the record has extras else None,
 *           stack=_stack(record) if exc_info or exc_text or stack_info else None,
 *           ident=self.ident))
 *   except Exception:
 *       self.handleError(record)
 *   return True
 *
 * Any other call, record or handler state (filters, a formatter, emit() or handle() replaced
 * since) is handed, untouched, to the class's handle(), as if this object were not there. */
typedef struct {
    PyObject_HEAD
    PyObject *handler;
    PyObject *plan;            /* handler.py's _C_PLAN: what the C path needs, gathered once */
    Py_ssize_t plain_size;     /* its P_PLAIN_SIZE, read once */
    vectorcallfunc vectorcall;
} RecordHandlerObject;

enum { P_HANDLE, P_EMIT, P_RECORD_TYPE, P_PLAIN_SIZE, P_PRIORITY, P_FIELDS, P_STACK, P_REPORT,
       P_SIZE };

enum { R_FILTERS, R_FORMATTER, R_EXC_INFO, R_EXC_TEXT, R_STACK_INFO, R_LEVELNO, R_NAME,
       R_CREATED, R_FUNCNAME, R_LINENO, R_PATHNAME, R_GETMESSAGE, R_CLIENT, R_IDENT, R_HANDLE,
       R_EMIT, NR };
static const char *const r_names[NR] = {
    "filters", "formatter", "exc_info", "exc_text", "stack_info", "levelno", "name",
    "created", "funcName", "lineno", "pathname", "getMessage", "client", "ident", "handle",
    "emit",
};
static PyObject *r_interned[NR];

#define PLAN(self, i) PyTuple_GET_ITEM((self)->plan, (i))

/* function(handler, *args, **kwargs): the class's handle(), as if there were no C path */
static PyObject *
call_handle(PyObject *function, PyObject *handler, PyObject *const *args, size_t nargsf,
            PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    PyObject *stack[8], **argv = stack, *res;

    if (total + 1 > 8 && (argv = PyMem_New(PyObject *, total + 1)) == NULL)
        return PyErr_NoMemory();
    argv[0] = handler;
    for (Py_ssize_t i = 0; i < total; i++)
        argv[i + 1] = args[i];
    res = PyObject_Vectorcall(function, argv, nargs + 1, kwnames);
    if (argv != stack)
        PyMem_Free(argv);
    return res;
}

/* 1 when the handler is as VirlogdHandler made it: filters an empty list, no formatter,
 * emit() the class's own (not replaced on the instance or on the class since); 0 when not
 * (also when reading its state fails with an Exception: the Python handle() then reads it
 * again and fails, or reports, as it does); -1 for any other error */
static int
usual_handler(RecordHandlerObject *self, PyObject *handler)
{
    PyObject *value, *dict;
    int usual;

    if ((value = PyObject_GetAttr(handler, r_interned[R_FILTERS])) == NULL)
        goto failed;
    usual = PyList_CheckExact(value) && PyList_GET_SIZE(value) == 0;
    Py_DECREF(value);
    if (!usual)
        return 0;
    if ((value = PyObject_GetAttr(handler, r_interned[R_FORMATTER])) == NULL)
        goto failed;
    usual = value == Py_None;
    Py_DECREF(value);
    if (!usual)
        return 0;
    if ((dict = PyObject_GenericGetDict(handler, NULL)) == NULL)
        goto failed;
    value = PyDict_GetItemWithError(dict, r_interned[R_EMIT]);
    Py_DECREF(dict);
    if (value != NULL || PyErr_Occurred())
        return value != NULL ? 0 : -1;
    if ((value = PyObject_GetAttr((PyObject *)Py_TYPE(handler), r_interned[R_EMIT])) == NULL)
        goto failed;
    usual = value == PLAN(self, P_EMIT);
    Py_DECREF(value);
    return usual;
failed:
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear();
    return 0;
}

/* _priority(levelno), the thresholds themselves for an int */
static PyObject *
priority_of_level(RecordHandlerObject *self, PyObject *levelno)
{
    long level;
    int overflow;

    if (!PyLong_CheckExact(levelno))
        return PyObject_CallOneArg(PLAN(self, P_PRIORITY), levelno);
    level = PyLong_AsLongAndOverflow(levelno, &overflow);
    if (level == -1 && PyErr_Occurred())
        return NULL;
    if (overflow)
        level = overflow > 0 ? LONG_MAX : LONG_MIN;
    return PyLong_FromLong(level >= 40 ? 4 : level >= 30 ? 3 : level >= 20 ? 2 : 1);
}

/* the record's exception or stack, as "exc_info or exc_text or stack_info" reads them: 1 if
 * any is true */
static int
has_stack(PyObject *record)
{
    for (int i = R_EXC_INFO; i <= R_STACK_INFO; i++) {
        PyObject *value = PyObject_GetAttr(record, r_interned[i]);
        int truth;
        if (value == NULL)
            return -1;
        truth = PyObject_IsTrue(value);
        Py_DECREF(value);
        if (truth != 0)
            return truth;
    }
    return 0;
}

/* the body of emit()'s try: 0, or -1 with the error set */
static int
emit_record(RecordHandlerObject *self, PyObject *handler, PyObject *record)
{
    PyObject *message, *client, *push = NULL, *argv[10] = {NULL}, *frame = NULL, *res,
        *level = NULL, *dict = NULL;
    int rc = -1, truth;

    if ((message = PyObject_CallMethodNoArgs(record, r_interned[R_GETMESSAGE])) == NULL)
        return -1;
    if ((client = PyObject_GetAttr(handler, r_interned[R_CLIENT])) == NULL)
        goto done;
    push = PyObject_GetAttr(client, s_send_frame);
    Py_DECREF(client);
    if (push == NULL)
        goto done;
    if ((level = PyObject_GetAttr(record, r_interned[R_LEVELNO])) == NULL
            || (argv[0] = priority_of_level(self, level)) == NULL
            || (argv[1] = PyObject_GetAttr(record, r_interned[R_NAME])) == NULL)
        goto done;
    argv[2] = Py_NewRef(message);
    if ((argv[3] = PyObject_GetAttr(record, r_interned[R_CREATED])) == NULL
            || (argv[4] = PyObject_GetAttr(record, r_interned[R_FUNCNAME])) == NULL
            || (argv[5] = PyObject_GetAttr(record, r_interned[R_LINENO])) == NULL
            || (truth = PyObject_IsTrue(argv[5])) < 0)
        goto done;
    if (!truth) {                              /* line=record.lineno or 0 */
        Py_SETREF(argv[5], PyLong_FromLong(0));
        if (argv[5] == NULL)
            goto done;
    }
    if ((argv[6] = PyObject_GetAttr(record, r_interned[R_PATHNAME])) == NULL
            || (dict = PyObject_GenericGetDict(record, NULL)) == NULL)
        goto done;
    argv[7] = PyDict_GET_SIZE(dict) > self->plain_size
              ? PyObject_CallOneArg(PLAN(self, P_FIELDS), record) : Py_NewRef(Py_None);
    if (argv[7] == NULL || (truth = has_stack(record)) < 0)
        goto done;
    argv[8] = truth ? PyObject_CallOneArg(PLAN(self, P_STACK), record) : Py_NewRef(Py_None);
    if (argv[8] == NULL
            || (argv[9] = PyObject_GetAttr(handler, r_interned[R_IDENT])) == NULL
            || (frame = encode_parts(NULL, argv, 3, encode_kwnames)) == NULL
            || (res = PyObject_CallOneArg(push, frame)) == NULL)
        goto done;
    Py_DECREF(res);
    rc = 0;
done:
    for (int i = 0; i < 10; i++)
        Py_XDECREF(argv[i]);
    Py_XDECREF(frame);
    Py_XDECREF(push);
    Py_XDECREF(level);
    Py_XDECREF(dict);
    Py_DECREF(message);
    return rc;
}

/* the C path: 0, or -1 with the error set (a BaseException, or one from _report) */
static int
handle_record(RecordHandlerObject *self, PyObject *handler, PyObject *record)
{
    PyObject *type, *value, *tb, *args[3], *res;

    if (emit_record(self, handler, record) == 0)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;                             /* KeyboardInterrupt, SystemExit...: out */
    /* except Exception: self.handleError(record), through _report, which raises the error
     * again in a Python frame: handleError (the stdlib's reads tb.tb_frame) then finds the
     * exception being handled and its traceback, as in emit() */
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    args[0] = handler;
    args[1] = record;
    args[2] = value;
    res = PyObject_Vectorcall(PLAN(self, P_REPORT), args, 3, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

static PyObject *
RecordHandler_call(RecordHandlerObject *self, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    PyObject *handler = Py_NewRef(self->handler), *handle, *res = NULL, *record;
    int usual;

    /* the class's handle() now: a subclass's, or one patched on the class since, is used as
     * if this object were not there */
    handle = PyObject_GetAttr((PyObject *)Py_TYPE(handler), r_interned[R_HANDLE]);
    if (handle == NULL)
        goto done;
    if (handle != PLAN(self, P_HANDLE) || PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL
            || Py_TYPE(args[0]) != (PyTypeObject *)PLAN(self, P_RECORD_TYPE)) {
        res = call_handle(handle, handler, args, nargsf, kwnames);
        goto done;
    }
    if ((usual = usual_handler(self, handler)) <= 0) {
        if (usual == 0)
            res = call_handle(handle, handler, args, nargsf, kwnames);
        goto done;
    }
    record = Py_NewRef(args[0]);
    if (handle_record(self, handler, record) == 0)
        res = Py_NewRef(Py_True);
    Py_DECREF(record);
done:
    Py_XDECREF(handle);
    Py_DECREF(handler);
    return res;
}

static PyObject *
RecordHandler_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handler", "plan", NULL};
    PyObject *handler, *plan;
    Py_ssize_t plain_size;
    RecordHandlerObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!:RecordHandler", kwlist, &handler,
                                     &PyTuple_Type, &plan))
        return NULL;
    if (PyTuple_GET_SIZE(plan) != P_SIZE || !PyType_Check(PyTuple_GET_ITEM(plan, P_RECORD_TYPE))
            || !PyLong_Check(PyTuple_GET_ITEM(plan, P_PLAIN_SIZE))) {
        PyErr_SetString(PyExc_TypeError, "RecordHandler(): plan is not handler._C_PLAN");
        return NULL;
    }
    if ((plain_size = PyLong_AsSsize_t(PyTuple_GET_ITEM(plan, P_PLAIN_SIZE))) == -1
            && PyErr_Occurred())
        return NULL;
    if ((self = (RecordHandlerObject *)type->tp_alloc(type, 0)) == NULL)
        return NULL;
    self->handler = Py_NewRef(handler);
    self->plan = Py_NewRef(plan);
    self->plain_size = plain_size;
    self->vectorcall = (vectorcallfunc)RecordHandler_call;
    return (PyObject *)self;
}

static int
RecordHandler_traverse(RecordHandlerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handler);
    Py_VISIT(self->plan);
    return 0;
}

static int
RecordHandler_clear(RecordHandlerObject *self)
{
    Py_CLEAR(self->handler);
    Py_CLEAR(self->plan);
    return 0;
}

static void
RecordHandler_dealloc(RecordHandlerObject *self)
{
    PyObject_GC_UnTrack(self);
    RecordHandler_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(RecordHandler_doc,
"RecordHandler(handler, plan)\n--\n\n"
"VirlogdHandler.handle in one C call for a LogRecord and a handler with no filters or\n"
"formatter; anything else goes to the class's handle(). plan is handler._C_PLAN.");

static PyTypeObject RecordHandler_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "virlogd._cwire.RecordHandler",
    .tp_basicsize = sizeof(RecordHandlerObject),
    .tp_dealloc = (destructor)RecordHandler_dealloc,
    .tp_vectorcall_offset = offsetof(RecordHandlerObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = RecordHandler_doc,
    .tp_traverse = (traverseproc)RecordHandler_traverse,
    .tp_clear = (inquiry)RecordHandler_clear,
    .tp_new = RecordHandler_new,
};

/* -- module ----------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL, bind_doc},
    {"frames", (PyCFunction)(void (*)(void))frames, METH_FASTCALL, frames_doc},
    {"encode_parts", (PyCFunction)(void (*)(void))encode_parts,
     METH_FASTCALL | METH_KEYWORDS, encode_parts_doc},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL | METH_KEYWORDS,
     encode_doc},
    {"here", (PyCFunction)(void (*)(void))here, METH_FASTCALL, here_doc},
    {"here_at", (PyCFunction)(void (*)(void))here_at, METH_FASTCALL, here_at_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cwire",
    .m_doc = "The C twin of virlogd.wire's per-record paths (decoding, encoding).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__cwire(void)
{
    PyObject *m;

    for (int i = 0; i < NKW; i++)
        if (kw_interned[i] == NULL &&
                (kw_interned[i] = PyUnicode_InternFromString(kw_names[i])) == NULL)
            return NULL;
    if (encode_kwnames == NULL) {
        encode_kwnames = PyTuple_New(NKW);
        if (encode_kwnames == NULL)
            return NULL;
        for (int i = 0; i < NKW; i++)
            PyTuple_SET_ITEM(encode_kwnames, i, Py_NewRef(kw_interned[i]));
    }
    if (s_send_frame == NULL && (s_send_frame = PyUnicode_InternFromString("send_frame")) == NULL)
        return NULL;
    for (int i = 0; i < NR; i++)
        if (r_interned[i] == NULL &&
                (r_interned[i] = PyUnicode_InternFromString(r_names[i])) == NULL)
            return NULL;
    if (PyType_Ready(&Sender_Type) < 0 || PyType_Ready(&RecordHandler_Type) < 0
            || (m = PyModule_Create(&module)) == NULL)
        return NULL;
    if (PyModule_AddObject(m, "FrameSender", Py_NewRef(&Sender_Type)) < 0) {
        Py_DECREF(&Sender_Type);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "RecordHandler", Py_NewRef(&RecordHandler_Type)) < 0) {
        Py_DECREF(&RecordHandler_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
