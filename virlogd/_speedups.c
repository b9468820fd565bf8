/* virlogd's compiled speedups: the per-record data work, and nothing else.
 *
 *   frames, encode_parts, encode        the client protocol        (protocol/wire.py)
 *   format_line, pack_record,           text lines and ring        (core/textformat.py)
 *   pack_parts, entry_text              entries
 *   RingCore                            the ring's circular area   (core/ring.py)
 *
 * Each has a pure-Python twin of the same name (core/speedups.py chooses). A compiled one
 * takes the common case and hands any other input, as given, to its twin (fallback()): every
 * error message is written once, in Python. Frames come from untrusted clients: every read is
 * checked against the end of its frame, itself checked against the end of the buffer, with
 * 64-bit sums of 32-bit lengths. Everything runs with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* Python 3.9 (Debian bullseye) lacks Py_NewRef and public PyFloat_Pack8/Unpack8 */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *vl_new_ref(PyObject *obj) { Py_INCREF(obj); return obj; }
#define Py_NewRef(obj) vl_new_ref((PyObject *)(obj))
#endif
#if PY_VERSION_HEX < 0x030B0000
#define PyFloat_Pack8(x, p, le) _PyFloat_Pack8((x), (unsigned char *)(p), (le))
#define PyFloat_Unpack8(p, le) _PyFloat_Unpack8((const unsigned char *)(p), (le))
#endif
#if PY_VERSION_HEX < 0x030C0000
#define UNICODE_READY(s) PyUnicode_READY(s)
#else
#define UNICODE_READY(s) 0
#endif

/* Explicit byte order: the wire and the ring file are little-endian whatever the host is. */
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

/* == bind: the record class, the reserved field names, the level names =================== */

enum { S_TIME, S_PRIORITY, S_SOURCE, S_MESSAGE, S_FUNC, S_LINE, S_FILE, S_FIELDS, S_STACK,
       S_PID, S_UID, S_GID, S_IDENT, S_RELAYED, NSLOTS };
static const char *const slot_names[NSLOTS] = {
    "time", "priority", "source", "message", "func", "line", "file", "fields", "stack",
    "pid", "uid", "gid", "ident", "relayed",
};

/* NULL until bind() succeeded: every function then hands everything to its pure twin */
static PyTypeObject *record_type;
static Py_ssize_t slot_offset[NSLOTS];
static PyObject *reserved_names;        /* fieldnames.RESERVED */
#define NAME_MAX_LEN 15
static char level_name[5][NAME_MAX_LEN + 1];
static Py_ssize_t level_name_len[5];

#define SLOT(rec, s) (*(PyObject **)((char *)(rec) + slot_offset[s]))

/* Whether the type's __slots__ are exactly the 14 plain writable object slots of
 * virlogd.core.record.Record, defined on this very type; fills offsets. */
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
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, slot_names[i]);
        if (descr == NULL) {
            PyErr_Clear();
            goto done;
        }
        int good = 0;
        if (Py_IS_TYPE(descr, &PyMemberDescr_Type) && PyDescr_TYPE(descr) == type) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            good = member->type == T_OBJECT_EX && !(member->flags & READONLY) &&
                   member->offset >= (Py_ssize_t)sizeof(PyObject) &&
                   member->offset <= type->tp_basicsize - (Py_ssize_t)sizeof(PyObject *);
            offsets[i] = member->offset;
        }
        Py_DECREF(descr);
        for (int j = 0; good && j < i; j++)
            good = offsets[j] != offsets[i];
        if (!good)
            goto done;
    }
    ok = 1;
done:
    Py_DECREF(slots);
    return ok;
}

PyDoc_STRVAR(bind_doc,
"bind(record, reserved, names)\n--\n\nFalse: not a Record to build.");

static PyObject *
bind(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"record", "reserved", "names", NULL};
    PyObject *type, *reserved, *names;
    Py_ssize_t offsets[NSLOTS];

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!:bind", kwlist, &PyType_Type, &type,
                                     &PyFrozenSet_Type, &reserved, &PyDict_Type, &names))
        return NULL;
    for (long level = 1; level <= 4; level++) {
        PyObject *key = PyLong_FromLong(level), *name;
        if (key == NULL)
            return NULL;
        name = PyDict_GetItemWithError(names, key);
        Py_DECREF(key);
        if (name == NULL && PyErr_Occurred())
            return NULL;
        if (name == NULL || !PyUnicode_CheckExact(name) || UNICODE_READY(name) < 0 ||
                !PyUnicode_IS_ASCII(name) || PyUnicode_GET_LENGTH(name) > NAME_MAX_LEN)
            Py_RETURN_FALSE;
        memcpy(level_name[level], PyUnicode_DATA(name), (size_t)PyUnicode_GET_LENGTH(name));
        level_name_len[level] = PyUnicode_GET_LENGTH(name);
    }
    PyTypeObject *tp = (PyTypeObject *)type;
    /* records are made as Record.__new__(Record) makes them: object's allocation, no
     * __init__; a type with its own __new__ or a variable size would need more */
    if (tp->tp_new != PyBaseObject_Type.tp_new || tp->tp_alloc == NULL ||
            tp->tp_itemsize != 0 || !find_slots(tp, offsets))
        Py_RETURN_FALSE;
    memcpy(slot_offset, offsets, sizeof offsets);
    Py_XSETREF(record_type, (PyTypeObject *)Py_NewRef(type));
    Py_XSETREF(reserved_names, Py_NewRef(reserved));
    Py_RETURN_TRUE;
}

/* == fallback: the pure twins ============================================================= */

enum { FB_FRAMES, FB_ENCODE_PARTS, FB_ENCODE, FB_FORMAT_LINE, FB_PACK_RECORD, FB_PACK_PARTS,
       FB_ENTRY_TEXT, NFB };
static const char *const fb_names[NFB] = {
    "frames", "encode_parts", "encode", "format_line", "pack_record", "pack_parts",
    "entry_text",
};
static PyObject *fb[NFB];

PyDoc_STRVAR(fallback_doc,
"fallback(function, /)\n--\n\nThe pure twin of the compiled function of the same __name__.");

static PyObject *
fallback(PyObject *module, PyObject *function)
{
    PyObject *name = PyObject_GetAttrString(function, "__name__");
    if (name == NULL)
        return NULL;
    for (int i = 0; i < NFB; i++) {
        if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, fb_names[i]) == 0) {
            Py_DECREF(name);
            Py_XSETREF(fb[i], Py_NewRef(function));
            Py_RETURN_NONE;
        }
    }
    PyErr_Format(PyExc_ValueError, "fallback(): no compiled function is named %R", name);
    Py_DECREF(name);
    return NULL;
}

static PyObject *
defer(int which, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (fb[which] != NULL)
        return PyObject_Vectorcall(fb[which], args, (size_t)nargs, kwnames);
    return PyErr_Format(PyExc_RuntimeError, "virlogd._speedups.%s: no pure twin given to "
                        "fallback()", fb_names[which]);
}

/* == the protocol: decoding (see docs/protocol.md) ======================================== */

#define HEAD_SIZE 44        /* the length prefix and the 40-byte fixed part of the body */
#define FIELD_HEAD 6        /* name length, kind, value length */
#define MAX_FIELDS 256
#define TYPE_RECORD 1
#define KIND_TEXT 0
#define KIND_BYTES 1
#define MAX_TIME 253402300799.0
#define MAX_NAME 64         /* fieldnames: ^[A-Z][A-Z0-9_]{0,63}$ */
/* wire.MAX_SOURCE, MAX_FUNC, MAX_FILE, MAX_IDENT: a longer one is cut by the pure decoder */
#define MAX_SOURCE 1024
#define MAX_FUNC 1024
#define MAX_FILE 4096
#define MAX_IDENT 1024

/* The last string decoded for one of the repeated parts (source, func, file, ident): a
 * client sends the same few over and over, and one memcmp is cheaper than a new str. */
typedef struct {
    const unsigned char *bytes;
    size_t size;
    PyObject *value;            /* strong reference, released when frames() returns */
} Cache;

typedef struct { PyObject *pid, *uid, *gid; Cache source, func, file, ident; } Context;

/* Results: 1 done (*result set), 0 not taken (the pure twin takes the frame), -1 error.
 * An optional part is None when absent (length 0). */
static int
decode_text(const unsigned char *s, size_t n, const char *errors, Cache *cache,
            PyObject **result, int optional)
{
    if (optional && n == 0) {
        *result = Py_NewRef(Py_None);
        return 1;
    }
    if (cache != NULL && cache->value != NULL && cache->size == n &&
            memcmp(cache->bytes, s, n) == 0) {
        *result = Py_NewRef(cache->value);
        return 1;
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, errors);
    if (text == NULL) {
        if (errors == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();      /* strict part, invalid UTF-8: the pure twin says where */
            return 0;
        }
        return -1;
    }
    if (cache != NULL) {
        Py_XSETREF(cache->value, Py_NewRef(text));
        cache->bytes = s;
        cache->size = n;
    }
    *result = text;
    return 1;
}

/* Exactly the names fieldnames.is_valid accepts, less RESERVED (checked by the caller);
 * anything else goes to the pure twin, which renames and counts. */
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
        const unsigned char *name_bytes = f + start, *value_bytes = name_bytes + name_len;
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
        int failed = value == NULL || PyDict_SetItem(fields, name, value) < 0;
        Py_DECREF(name);
        Py_XDECREF(value);
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
    uint64_t len[6], g = HEAD_SIZE;
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

    const char *esc = "surrogateescape";
    if ((status = decode_text(s, (size_t)len[0], NULL, &ctx->source, &v[S_SOURCE], 0)) != 1 ||
        (status = decode_text(m, (size_t)len[1], esc, NULL, &v[S_MESSAGE], 0)) != 1 ||
        (status = decode_text(fn, (size_t)len[2], NULL, &ctx->func, &v[S_FUNC], 1)) != 1 ||
        (status = decode_text(fl, (size_t)len[3], esc, &ctx->file, &v[S_FILE], 1)) != 1 ||
        (status = decode_text(st, (size_t)len[4], esc, NULL, &v[S_STACK], 1)) != 1 ||
        (status = decode_text(id, (size_t)len[5], NULL, &ctx->ident, &v[S_IDENT], 1)) != 1)
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
    v[S_PID] = Py_NewRef(ctx->pid);
    v[S_UID] = Py_NewRef(ctx->uid);
    v[S_GID] = Py_NewRef(ctx->gid);
    v[S_RELAYED] = Py_NewRef(Py_True);     /* another process sent it */

    /* Record.__new__(Record), then each slot's reference moved in: the memory is zeroed,
     * so there is no old value to release */
    PyObject *record = record_type->tp_alloc(record_type, 0);
    if (record == NULL)
        goto fail;
    for (int i = 0; i < NSLOTS; i++)
        SLOT(record, i) = v[i];
    *result = record;
    return 1;
fail:
    for (int i = 0; i < NSLOTS; i++)
        Py_XDECREF(v[i]);
    return status;
}

static PyObject *s_max_frame, *s_pid, *s_uid, *s_gid;
PyDoc_STRVAR(frames_doc,
"frames(decoder, buf, pos, out, /)\n--\n\nwire.frames.");

static PyObject *
frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || record_type == NULL || !PyBytes_CheckExact(args[1]) ||
            !PyList_CheckExact(args[3]) || !PyLong_CheckExact(args[2]))
        return defer(FB_FRAMES, args, nargs, NULL);
    PyObject *decoder = args[0], *buf = args[1], *out = args[3], *answer = NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || start > PyBytes_GET_SIZE(buf))
        return defer(FB_FRAMES, args, nargs, NULL);

    Context ctx = {NULL};
    long long limit = -1;
    int overflow = 0;
    PyObject *max_frame = PyObject_GetAttr(decoder, s_max_frame);
    if (max_frame == NULL)
        return NULL;
    if (PyLong_Check(max_frame))
        limit = PyLong_AsLongLongAndOverflow(max_frame, &overflow);
    Py_DECREF(max_frame);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (overflow)               /* a limit beyond any u32 length, or below every one */
        limit = overflow > 0 ? (long long)UINT32_MAX : -1;
    if ((ctx.pid = PyObject_GetAttr(decoder, s_pid)) == NULL ||
            (ctx.uid = PyObject_GetAttr(decoder, s_uid)) == NULL ||
            (ctx.gid = PyObject_GetAttr(decoder, s_gid)) == NULL)
        goto done;

    /* buf is an immutable bytes the caller holds: base stays valid across the calls below */
    const unsigned char *base = (const unsigned char *)PyBytes_AS_STRING(buf);
    size_t end = (size_t)PyBytes_GET_SIZE(buf), pos = (size_t)start;
    while (end - pos >= 4) {
        const unsigned char *f = base + pos;
        uint64_t size = (uint64_t)rd32(f) + 4;
        PyObject *record = NULL;
        int status = 0;
        if (limit >= 0 && size - 4 <= (uint64_t)limit && size <= (uint64_t)(end - pos) &&
                size >= HEAD_SIZE)
            status = decode_frame(f, (size_t)size, &ctx, &record);
        if (status < 0)
            goto done;
        if (status == 1) {
            int failed = PyList_Append(out, record);
            Py_DECREF(record);
            if (failed)
                goto done;
            pos += (size_t)size;
            continue;
        }
        /* the pure twin decodes this one frame, raises, or waits for the rest of it */
        PyObject *at = PyLong_FromSize_t(pos);
        if (at == NULL)
            goto done;
        PyObject *argv[5] = {decoder, buf, at, out, Py_True};
        PyObject *next = defer(FB_FRAMES, argv, 5, NULL);
        Py_DECREF(at);
        if (next == NULL)
            goto done;
        Py_ssize_t moved = PyLong_AsSsize_t(next);
        Py_DECREF(next);
        if (moved == -1 && PyErr_Occurred())
            goto done;
        if (moved < (Py_ssize_t)pos || (size_t)moved > end) {
            PyErr_SetString(PyExc_RuntimeError, "frames(): the pure twin moved backwards");
            goto done;
        }
        if ((size_t)moved == pos)
            break;
        pos = (size_t)moved;
    }
    answer = PyLong_FromSize_t(pos);
done:;
    PyObject *held[7] = {ctx.pid, ctx.uid, ctx.gid, ctx.source.value, ctx.func.value,
                         ctx.file.value, ctx.ident.value};
    for (int i = 0; i < 7; i++)
        Py_XDECREF(held[i]);
    return answer;
}

/* == the protocol: encoding =============================================================== */

#define MAX_FRAME (4 * 1024 * 1024)     /* wire.MAX_FRAME */
typedef struct {
    const char *bytes;
    Py_ssize_t size;
    PyObject *hold;             /* the bytes object to release, if one was made */
} Part;

/* An exact str as UTF-8 (errors: NULL for strict); 0 when not an exact str or it cannot be
 * encoded so (the pure twin then does it, or raises). Optional: None (or absent) and "" give
 * an empty part, as `x if x else b""`. */
static int
utf8_part(PyObject *text, Part *part, const char *errors, int optional)
{
    part->hold = NULL;
    if (optional && (text == NULL || text == Py_None)) {
        part->bytes = "";
        part->size = 0;
        return 1;
    }
    if (!PyUnicode_CheckExact(text))
        return 0;
    if (UNICODE_READY(text) < 0)
        return -1;
    if (PyUnicode_IS_ASCII(text)) {
        part->bytes = (const char *)PyUnicode_DATA(text);
        part->size = PyUnicode_GET_LENGTH(text);
        return 1;
    }
    PyObject *raw = PyUnicode_AsEncodedString(text, "utf-8", errors);
    if (raw == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    part->hold = raw;
    part->bytes = PyBytes_AS_STRING(raw);
    part->size = PyBytes_GET_SIZE(raw);
    return 1;
}

enum { K_TIME, K_FUNC, K_LINE, K_FILE, K_FIELDS, K_STACK, K_IDENT, NKW };
static const char *const kw_names[NKW] = {
    "time", "func", "line", "file", "fields", "stack", "ident",
};
static PyObject *kw_interned[NKW];
static PyObject *encode_kwnames;    /* kw_interned as a tuple: encode()'s call */

PyDoc_STRVAR(encode_parts_doc,
"encode_parts(priority, source, message, *, time, func=None, line=0, file=None,\n"
"             fields=None, stack=None, ident=None)\n--\n\nwire.encode_parts.");

static PyObject *
encode_parts(PyObject *module, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *kw[NKW] = {NULL}, *frame = NULL;
    Part part[6] = {{NULL, 0, NULL}};
    int status = 0, overflow;

    if (nargs != 3)
        goto python;
    for (Py_ssize_t i = 0; kwnames != NULL && i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        int k = 0;
        while (k < NKW && name != kw_interned[k])
            k++;
        for (int j = 0; k == NKW && j < NKW; j++)   /* a name that is not interned */
            if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, kw_names[j]) == 0)
                k = j;
        if (k == NKW)
            goto python;
        kw[k] = args[nargs + i];
    }
    if (kw[K_TIME] == NULL || !PyFloat_CheckExact(kw[K_TIME]) || !PyLong_CheckExact(args[0]) ||
            !(PyFloat_AS_DOUBLE(kw[K_TIME]) >= 0.0 && PyFloat_AS_DOUBLE(kw[K_TIME]) <= MAX_TIME) ||
            (kw[K_FIELDS] != NULL && kw[K_FIELDS] != Py_None &&
             !(PyDict_CheckExact(kw[K_FIELDS]) && PyDict_GET_SIZE(kw[K_FIELDS]) == 0)))
        goto python;
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
        /* as wire.py: a line that does not fit a u32 is sent as unknown (0) */
        line = !overflow && value >= 0 && value <= (long long)UINT32_MAX
            ? (unsigned long long)value : 0;
    }
    PyObject *text[6] = {args[1], args[2], kw[K_FUNC], kw[K_FILE], kw[K_STACK], kw[K_IDENT]};
    for (int i = 0; i < 6; i++)
        if ((status = utf8_part(text[i], &part[i], NULL, i >= 2)) != 1)
            goto done;
    /* over the limit: the pure twin says by how much (sums capped, never overflow) */
    Py_ssize_t size = HEAD_SIZE - 4;
    for (int i = 0; i < 6 && size <= MAX_FRAME; i++)
        size = part[i].size > MAX_FRAME - size ? MAX_FRAME + 1 : size + part[i].size;
    if (size > MAX_FRAME) {
        status = 0;
        goto done;
    }
    if ((frame = PyBytes_FromStringAndSize(NULL, size + 4)) == NULL) {
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
        Py_XDECREF(part[i].hold);
    if (status != 0)
        return frame;       /* the frame, or NULL with the exception set */
python:
    return defer(FB_ENCODE_PARTS, args, nargs, kwnames);
}

PyDoc_STRVAR(encode_doc,
"encode(record, ident=None)\n--\n\nwire.encode.");

static PyObject *
encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    enum { P_PRIORITY, P_SOURCE, P_MESSAGE, P_TIME, P_FUNC, P_LINE, P_FILE, P_FIELDS, P_STACK,
           P_IDENT, NPARTS };
    static const int from[NPARTS] = {S_PRIORITY, S_SOURCE, S_MESSAGE, S_TIME, S_FUNC, S_LINE,
                                     S_FILE, S_FIELDS, S_STACK, S_IDENT};
    PyObject *argv[NPARTS];

    if (kwnames != NULL || nargs < 1 || nargs > 2 || record_type == NULL ||
            Py_TYPE(args[0]) != record_type)
        return defer(FB_ENCODE, args, nargs, kwnames);
    for (int i = 0; i < NPARTS; i++)
        if ((argv[i] = SLOT(args[0], from[i])) == NULL)
            return defer(FB_ENCODE, args, nargs, kwnames);   /* unset: AttributeError */
    /* line or 0, ident or the default, for the values only Python can judge true */
    if (argv[P_LINE] != Py_None && !PyLong_CheckExact(argv[P_LINE]))
        return defer(FB_ENCODE, args, nargs, kwnames);
    if (argv[P_IDENT] != Py_None && !PyUnicode_CheckExact(argv[P_IDENT]))
        return defer(FB_ENCODE, args, nargs, kwnames);
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    if (argv[P_LINE] == Py_None)
        argv[P_LINE] = zero;
    if (argv[P_IDENT] == Py_None || PyUnicode_GET_LENGTH(argv[P_IDENT]) == 0)
        argv[P_IDENT] = nargs == 2 ? args[1] : Py_None;
    /* the slots are borrowed: hold them while encode_parts runs (it may call Python) */
    for (int i = 0; i < NPARTS; i++)
        Py_INCREF(argv[i]);
    PyObject *frame = encode_parts(module, argv, 3, encode_kwnames);
    for (int i = 0; i < NPARTS; i++)
        Py_DECREF(argv[i]);
    Py_DECREF(zero);
    return frame;
}

/* == text: the line of a record, and packed ring entries ================================== */

/* 9999-12-31 23:59:59, the last second whose date has DATE_LEN characters */
#define LAST_SECOND 253402300799LL
#define DATE_LEN 19             /* YYYY-MM-DD HH:MM:SS */
#define PREFIX_MAX 96           /* date, .mmm+0000: , a 20-character pid, ": ", a name, " : " */

static int
exact_ll(PyObject *value, long long *out)
{
    int overflow = 1;
    if (PyLong_CheckExact(value))
        *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    return !overflow;
}

/* Python's int(when * 1000) for a float from 0 to LAST_SECOND's end: the same IEEE multiply,
 * and the cast truncates toward zero as int() does. 0: Python decides. */
static int
milliseconds(PyObject *when, long long *ms)
{
    if (!PyFloat_CheckExact(when))
        return 0;                   /* an int: rare, the pure twin formats it */
    double product = PyFloat_AS_DOUBLE(when) * 1000.0;
    /* > -1.0: int() of (-1, 0) is 0; NaN fails both tests */
    if (!(product > -1.0 && product < (LAST_SECOND + 1) * 1000.0))
        return 0;
    *ms = (long long)product;
    return 1;
}

static char *
put_digits(char *p, unsigned long long value, int width)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n < width)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *
put_ll(char *p, long long value)
{
    if (value < 0)
        *p++ = '-';
    return put_digits(p, value < 0 ? 0ULL - (unsigned long long)value
                                   : (unsigned long long)value, 1);
}

/* The last second's date and the last prefix: a flood of records shares them. Read and
 * written with no Python call in between, so another thread never sees half of one. */
static struct { long long second; char text[DATE_LEN]; } last_second = {-1, ""};
static struct {
    long long ms, pid;
    int level;
    Py_ssize_t len;
    char text[PREFIX_MAX];
} last_prefix = {-1, 0, 0, 0, ""};

/* "YYYY-MM-DD HH:MM:SS.mmm+0000: PID: LEVEL : " into out; its length, or -1 when gmtime
 * fails (Python decides). Python's time.gmtime is gmtime_r too: leap seconds agree. */
static Py_ssize_t
make_prefix(long long ms, long long pid, int level, char *out)
{
    if (last_prefix.ms == ms && last_prefix.pid == pid && last_prefix.level == level) {
        memcpy(out, last_prefix.text, (size_t)last_prefix.len);
        return last_prefix.len;
    }
    long long second = ms / 1000;
    if (last_second.second != second) {
        time_t t = (time_t)second;
        struct tm tm;
        /* a 32-bit time_t cannot hold it (after 2038): Python decides, as it raises */
        if ((long long)t != second || gmtime_r(&t, &tm) == NULL)
            return -1;
        char *p = put_digits(last_second.text, (unsigned long long)tm.tm_year + 1900, 4);
        const int parts[5] = {tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};
        for (int i = 0; i < 5; i++) {
            *p++ = "-- ::"[i];
            p = put_digits(p, (unsigned long long)parts[i], 2);
        }
        last_second.second = second;
    }
    char *p = out;
    memcpy(p, last_second.text, DATE_LEN);
    p += DATE_LEN;
    *p++ = '.';
    p = put_digits(p, (unsigned long long)(ms % 1000), 3);
    memcpy(p, "+0000: ", 7);
    p = put_ll(p + 7, pid);
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, level_name[level], (size_t)level_name_len[level]);
    p += level_name_len[level];
    memcpy(p, " : ", 3);
    Py_ssize_t len = p + 3 - out;
    memcpy(last_prefix.text, out, (size_t)len);
    last_prefix.len = len;
    last_prefix.ms = ms;
    last_prefix.pid = pid;
    last_prefix.level = level;
    return len;
}

/* textformat._CONTROL: [\x00-\x08\x0a-\x1f\x7f] */
#define IS_CONTROL(c) (((c) < 0x20 && (c) != '\t') || (c) == 0x7f)
#define CONTINUATION "  | "
#define CONTINUATION_LEN 4

/* Whether the 8 bytes at s may hold a control character (a tab is a false alarm). A byte at
 * a time, this scan cost more than the rest of format_line. */
static inline int
word_may_have_control(const unsigned char *s)
{
    uint64_t x, del;
    memcpy(&x, s, 8);
    del = x ^ 0x7F7F7F7F7F7F7F7FULL;
    return ((((x - 0x2020202020202020ULL) & ~x) | ((del - 0x0101010101010101ULL) & ~del))
            & 0x8080808080808080ULL) != 0;
}

/* The index of the first control character of data from i, or n. */
static inline Py_ssize_t
next_control(int kind, const void *data, Py_ssize_t i, Py_ssize_t n)
{
    if (kind == PyUnicode_1BYTE_KIND) {
        const unsigned char *s = data;
        for (; i + 8 <= n; i += 8)
            if (word_may_have_control(s + i))
                for (Py_ssize_t j = i; j < i + 8; j++)
                    if (IS_CONTROL(s[j]))
                        return j;
    }
    for (; i < n; i++)
        if (IS_CONTROL(PyUnicode_READ(kind, data, i)))
            return i;
    return n;
}

/* How much longer neutralise() (line_break) or field() makes text: "\r\n" and "\n" become
 * "\n" CONTINUATION in neutralise(); every other control its 4-character \xNN escape.
 * Inlined with a constant kind (growth() below): each kind gets its own loop. */
static inline Py_ssize_t
growth_of(int kind, const void *data, Py_ssize_t n, int line_break)
{
    Py_ssize_t more = 0;
    for (Py_ssize_t i = next_control(kind, data, 0, n); i < n;
            i = next_control(kind, data, i + 1, n)) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (line_break && c == '\n')
            more += CONTINUATION_LEN;
        else if (line_break && c == '\r' && i + 1 < n &&
                 PyUnicode_READ(kind, data, i + 1) == '\n') {
            more += CONTINUATION_LEN - 1;
            i++;
        }
        else
            more += 3;
    }
    return more;
}

static Py_ssize_t
growth(PyObject *s, int line_break)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    switch (PyUnicode_KIND(s)) {
    case PyUnicode_1BYTE_KIND:
        return growth_of(PyUnicode_1BYTE_KIND, PyUnicode_DATA(s), n, line_break);
    case PyUnicode_2BYTE_KIND:
        return growth_of(PyUnicode_2BYTE_KIND, PyUnicode_DATA(s), n, line_break);
    default:
        return growth_of(PyUnicode_4BYTE_KIND, PyUnicode_DATA(s), n, line_break);
    }
}

static Py_ssize_t
put_ascii(int kind, void *data, Py_ssize_t pos, const char *s, Py_ssize_t n)
{
    if (kind == PyUnicode_1BYTE_KIND)
        memcpy((char *)data + pos, s, (size_t)n);
    else
        for (Py_ssize_t i = 0; i < n; i++)
            PyUnicode_WRITE(kind, data, pos + i, (unsigned char)s[i]);
    return pos + n;
}

/* characters [start, end) of a str of kind skind at pos of the result (at least as wide) */
static Py_ssize_t
put_slice(int kind, void *data, Py_ssize_t pos, int skind, const void *sdata, Py_ssize_t start,
          Py_ssize_t end)
{
    if (skind == kind)
        memcpy((char *)data + pos * kind, (const char *)sdata + start * kind,
               (size_t)((end - start) * kind));
    else
        for (Py_ssize_t i = start; i < end; i++)
            PyUnicode_WRITE(kind, data, pos + i - start, PyUnicode_READ(skind, sdata, i));
    return pos + end - start;
}

/* s made safe at pos of the result: neutralise() with line_break, else field(); copied
 * whole when growth() found nothing to escape */
static Py_ssize_t
put_safe(int kind, void *data, Py_ssize_t pos, PyObject *s, int line_break, Py_ssize_t more)
{
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), run = 0;
    int skind = PyUnicode_KIND(s);
    const void *sdata = PyUnicode_DATA(s);
    for (Py_ssize_t i = more ? next_control(skind, sdata, 0, n) : n; i < n;
            i = next_control(skind, sdata, i + 1, n)) {
        pos = put_slice(kind, data, pos, skind, sdata, run, i);
        Py_UCS4 c = PyUnicode_READ(skind, sdata, i);
        if (line_break && c == '\r' && i + 1 < n && PyUnicode_READ(skind, sdata, i + 1) == '\n') {
            c = '\n';
            i++;
        }
        if (line_break && c == '\n') {
            pos = put_ascii(kind, data, pos, "\n" CONTINUATION, 1 + CONTINUATION_LEN);
        }
        else {
            char escape[4] = {'\\', 'x', hex[(c >> 4) & 15], hex[c & 15]};
            pos = put_ascii(kind, data, pos, escape, 4);
        }
        run = i + 1;
    }
    return put_slice(kind, data, pos, skind, sdata, run, n);
}

/* prefix, "source : " when relayed (source not NULL; "-" when empty), "func:line : " when
 * there is a func, the neutralised message, "\n". The inputs are ready exact strs. */
static PyObject *
build_line(const char *prefix, Py_ssize_t prefix_len, PyObject *source, PyObject *func,
           long long line, PyObject *message)
{
    char tail[32];      /* ":LINE : " */
    Py_ssize_t tail_len = 0, func_growth = 0, source_growth = 0;
    Py_UCS4 maxchar = PyUnicode_MAX_CHAR_VALUE(message);
    Py_ssize_t message_growth = growth(message, 1);
    Py_ssize_t len = prefix_len + PyUnicode_GET_LENGTH(message) + message_growth + 1;
    if (source != NULL) {
        if (PyUnicode_GET_LENGTH(source) == 0)
            len += 4;                   /* "- : " */
        else {
            source_growth = growth(source, 0);
            len += PyUnicode_GET_LENGTH(source) + source_growth + 3;
            if (PyUnicode_MAX_CHAR_VALUE(source) > maxchar)
                maxchar = PyUnicode_MAX_CHAR_VALUE(source);
        }
    }
    if (func != NULL) {
        char *p = tail;
        *p++ = ':';
        p = put_ll(p, line);
        memcpy(p, " : ", 3);
        tail_len = p + 3 - tail;
        func_growth = growth(func, 0);
        len += PyUnicode_GET_LENGTH(func) + func_growth + tail_len;
        if (PyUnicode_MAX_CHAR_VALUE(func) > maxchar)
            maxchar = PyUnicode_MAX_CHAR_VALUE(func);
    }
    /* the inputs are canonical, so the widest of their kinds is the result's canonical kind
     * (str == compares kinds first: a wider one would make equal text unequal) */
    PyObject *result = PyUnicode_New(len, maxchar);
    if (result == NULL)
        return NULL;
    int kind = PyUnicode_KIND(result);
    void *data = PyUnicode_DATA(result);
    Py_ssize_t pos = put_ascii(kind, data, 0, prefix, prefix_len);
    if (source != NULL) {
        if (PyUnicode_GET_LENGTH(source) == 0)
            pos = put_ascii(kind, data, pos, "-", 1);
        else
            pos = put_safe(kind, data, pos, source, 0, source_growth);
        pos = put_ascii(kind, data, pos, " : ", 3);
    }
    if (func != NULL) {
        pos = put_safe(kind, data, pos, func, 0, func_growth);
        pos = put_ascii(kind, data, pos, tail, tail_len);
    }
    pos = put_safe(kind, data, pos, message, 1, message_growth);
    PyUnicode_WRITE(kind, data, pos, '\n');
    return result;
}

#define SHORT_ENOUGH(s) (PyUnicode_GET_LENGTH(s) <= (PY_SSIZE_T_MAX - 1024) / 16)

PyDoc_STRVAR(format_line_doc,
"format_line(record, with_stack=False)\n--\n\ntextformat.format_line.");

static PyObject *
format_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs < 1 || nargs > 2 || record_type == NULL ||
            Py_TYPE(args[0]) != record_type)
        return defer(FB_FORMAT_LINE, args, nargs, kwnames);
    PyObject *rec = args[0];
    PyObject *func = SLOT(rec, S_FUNC), *when = SLOT(rec, S_TIME), *pid = SLOT(rec, S_PID);
    PyObject *priority = SLOT(rec, S_PRIORITY), *message = SLOT(rec, S_MESSAGE);
    PyObject *relayed = SLOT(rec, S_RELAYED), *source = NULL, *stack;
    long long ms, pid_value, level, line = 0;
    if (func == NULL || when == NULL || pid == NULL || priority == NULL || message == NULL ||
            !milliseconds(when, &ms) || !exact_ll(pid, &pid_value) ||
            !exact_ll(priority, &level) || level < 1 || level > 4 ||
            !PyUnicode_CheckExact(message) || (relayed != Py_True && relayed != Py_False))
        return defer(FB_FORMAT_LINE, args, nargs, kwnames);
    if (relayed == Py_True) {       /* a relayed record names its source */
        source = SLOT(rec, S_SOURCE);
        if (source == NULL || !PyUnicode_CheckExact(source))
            return defer(FB_FORMAT_LINE, args, nargs, kwnames);
    }
    if (func == Py_None || (PyUnicode_CheckExact(func) && PyUnicode_GET_LENGTH(func) == 0))
        func = NULL;
    else if (!PyUnicode_CheckExact(func) || SLOT(rec, S_LINE) == NULL ||
             !exact_ll(SLOT(rec, S_LINE), &line))
        return defer(FB_FORMAT_LINE, args, nargs, kwnames);
    if (nargs == 2 && args[1] != Py_False && args[1] != Py_None) {
        /* a stack is rare (the + filter): only "there is none" is taken here */
        stack = SLOT(rec, S_STACK);
        if (args[1] != Py_True || stack == NULL ||
                !(stack == Py_None || (PyUnicode_CheckExact(stack) &&
                                       PyUnicode_GET_LENGTH(stack) == 0)))
            return defer(FB_FORMAT_LINE, args, nargs, kwnames);
    }
    if (UNICODE_READY(message) < 0 || (source != NULL && UNICODE_READY(source) < 0) ||
            (func != NULL && UNICODE_READY(func) < 0))
        return NULL;
    if (!SHORT_ENOUGH(message) || (source != NULL && !SHORT_ENOUGH(source)) ||
            (func != NULL && !SHORT_ENOUGH(func)))
        return defer(FB_FORMAT_LINE, args, nargs, kwnames);
    char prefix[PREFIX_MAX];
    Py_ssize_t prefix_len = make_prefix(ms, pid_value, (int)level, prefix);
    if (prefix_len < 0)
        return defer(FB_FORMAT_LINE, args, nargs, kwnames);
    /* held: an allocation can run a finaliser that rebinds the record's slots */
    Py_XINCREF(source);
    Py_XINCREF(func);
    Py_INCREF(message);
    PyObject *result = build_line(prefix, prefix_len, source, func, line, message);
    Py_XDECREF(source);
    Py_XDECREF(func);
    Py_DECREF(message);
    return result;
}

/* <BdiIBBII: 1, time, pid, line, priority, relayed, len(func), len(source); then func,
 * source, message. (An entry that starts with NUL is an older version's: Python reads it.) */
#define PACKED_MARK 1
#define PACKED_SIZE 27

/* The entry, or NULL: with an exception set on a real error, without one when the values are
 * not the common case (the pure twin packs them, or raises). source NULL: not relayed. */
static PyObject *
pack(PyObject *when, PyObject *pid, PyObject *line, PyObject *priority, PyObject *func,
     PyObject *message, PyObject *source)
{
    double time_value;
    long long pid_value, line_value = 0, level;
    Part part[3] = {{"", 0, NULL}, {"", 0, NULL}, {"", 0, NULL}};
    PyObject *entry = NULL;
    int status;

    if (PyFloat_CheckExact(when))
        time_value = PyFloat_AS_DOUBLE(when);
    else if (PyLong_CheckExact(when)) {
        time_value = PyLong_AsDouble(when);
        if (time_value == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
    }
    else
        return NULL;
    if (!exact_ll(pid, &pid_value) || pid_value < INT32_MIN || pid_value > INT32_MAX ||
            (line != Py_None && (!exact_ll(line, &line_value) || line_value < 0 ||
                                 line_value > UINT32_MAX)) ||
            !exact_ll(priority, &level) || level < 0 || level > 255)
        return NULL;
    if ((status = utf8_part(func, &part[0], "surrogateescape", 1)) != 1 ||
        (source != NULL && (status = utf8_part(source, &part[1], "surrogateescape", 0)) != 1) ||
        (status = utf8_part(message, &part[2], "surrogateescape", 0)) != 1 ||
        (uint64_t)part[0].size > UINT32_MAX || (uint64_t)part[1].size > UINT32_MAX ||
        part[2].size > PY_SSIZE_T_MAX - PACKED_SIZE - part[0].size - part[1].size)
        goto done;
    entry = PyBytes_FromStringAndSize(NULL, PACKED_SIZE + part[0].size + part[1].size +
                                            part[2].size);
    if (entry == NULL)
        goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(entry);
    p[0] = PACKED_MARK;
    if (PyFloat_Pack8(time_value, (char *)p + 1, 1) < 0) {
        Py_CLEAR(entry);
        goto done;
    }
    wr32(p + 9, (uint32_t)pid_value);
    wr32(p + 13, (uint32_t)line_value);
    p[17] = (unsigned char)level;
    p[18] = source != NULL;
    wr32(p + 19, (uint32_t)part[0].size);
    wr32(p + 23, (uint32_t)part[1].size);
    p += PACKED_SIZE;
    for (int i = 0; i < 3; i++) {
        memcpy(p, part[i].bytes, (size_t)part[i].size);
        p += part[i].size;
    }
done:
    for (int i = 0; i < 3; i++)
        Py_XDECREF(part[i].hold);
    return entry;
}

PyDoc_STRVAR(pack_parts_doc,
"pack_parts(when, pid, line, priority, func, message, /)\n--\n\ntextformat.pack_parts.");

static PyObject *
pack_parts(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs != 6)
        return defer(FB_PACK_PARTS, args, nargs, kwnames);
    PyObject *entry = pack(args[0], args[1], args[2], args[3], args[4], args[5], NULL);
    if (entry == NULL && !PyErr_Occurred())
        return defer(FB_PACK_PARTS, args, nargs, kwnames);
    return entry;
}

PyDoc_STRVAR(pack_record_doc,
"pack_record(record, /)\n--\n\ntextformat.pack_record.");

static PyObject *
pack_record(PyObject *module, PyObject *rec)
{
    if (record_type != NULL && Py_TYPE(rec) == record_type) {
        PyObject *relayed = SLOT(rec, S_RELAYED), *f[7];
        const int from[7] = {S_TIME, S_PID, S_LINE, S_PRIORITY, S_FUNC, S_MESSAGE, S_SOURCE};
        int ok = relayed == Py_False || relayed == Py_True;
        for (int i = 0; i < 7; i++)
            ok = ok && ((f[i] = SLOT(rec, from[i])) != NULL || (i == 6 && relayed == Py_False));
        if (ok) {
            /* utf8_part encodes with no Python code run: the borrowed slots stay valid */
            PyObject *entry = pack(f[0], f[1], f[2], f[3], f[4], f[5],
                                   relayed == Py_True ? f[6] : NULL);
            if (entry != NULL || PyErr_Occurred())
                return entry;
        }
    }
    return defer(FB_PACK_RECORD, &rec, 1, NULL);
}

PyDoc_STRVAR(entry_text_doc,
"entry_text(entry, /)\n--\n\ntextformat.entry_text.");

static PyObject *
entry_text(PyObject *module, PyObject *entry)
{
    if (!PyBytes_CheckExact(entry))
        return defer(FB_ENTRY_TEXT, &entry, 1, NULL);
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(entry);
    Py_ssize_t n = PyBytes_GET_SIZE(entry);
    if (n == 0 || s[0] > PACKED_MARK)
        return PyUnicode_DecodeUTF8((const char *)s, n, "surrogateescape");
    if (s[0] != PACKED_MARK || n < PACKED_SIZE || level_name_len[1] == 0)
        return defer(FB_ENTRY_TEXT, &entry, 1, NULL);   /* older, cut short, or not bound */

    double when = PyFloat_Unpack8((const char *)s + 1, 1);
    if (when == -1.0 && PyErr_Occurred())
        return NULL;
    int32_t pid = (int32_t)rd32(s + 9);
    uint32_t line = rd32(s + 13);
    int level = s[17], relayed = s[18] != 0;
    uint64_t func_len = rd32(s + 19), source_len = rd32(s + 23);
    double product = when * 1000.0;
    if (level < 1 || level > 4 || !(product > -1.0 && product < (LAST_SECOND + 1) * 1000.0))
        return defer(FB_ENTRY_TEXT, &entry, 1, NULL);
    /* slices past the end are short or empty, as in Python; the source starts after the
     * declared func, the message after the declared source (relayed or not) */
    uint64_t rest = (uint64_t)(n - PACKED_SIZE);
    uint64_t func_end = func_len < rest ? func_len : rest;
    uint64_t source_end = func_len + source_len < rest ? func_len + source_len : rest;
    char prefix[PREFIX_MAX];
    Py_ssize_t prefix_len = make_prefix((long long)product, pid, level, prefix);
    if (prefix_len < 0)
        return defer(FB_ENTRY_TEXT, &entry, 1, NULL);
    const char *body = (const char *)s + PACKED_SIZE;
    PyObject *func = NULL, *source = NULL, *message = NULL, *result = NULL;
    if (func_end > 0 && (func = PyUnicode_DecodeUTF8(body, (Py_ssize_t)func_end,
                                                     "surrogateescape")) == NULL)
        goto done;
    if (relayed && (source = PyUnicode_DecodeUTF8(body + func_end,
                                                  (Py_ssize_t)(source_end - func_end),
                                                  "surrogateescape")) == NULL)
        goto done;
    if ((message = PyUnicode_DecodeUTF8(body + source_end, (Py_ssize_t)(rest - source_end),
                                        "surrogateescape")) == NULL)
        goto done;
    result = build_line(prefix, prefix_len, source, func, line, message);
done:
    Py_XDECREF(func);
    Py_XDECREF(source);
    Py_XDECREF(message);
    return result;
}

/* == RingCore: the ring buffer's circular area ============================================ */

#define PREFIX 4           /* u32 LE length before every entry */
#define POINTERS_SIZE 12   /* head, tail, used: u32 LE each */
typedef struct {
    PyObject_HEAD
    Py_buffer view;            /* view.obj is NULL until __init__ and once released */
    unsigned char *area;
    unsigned char *pointers;   /* NULL when there is no header to keep current */
    Py_ssize_t capacity, head, tail, used, skipped;
} RingObject;

/* n bytes from buf into the area at at (put), or back: n <= capacity and at < capacity, so
 * at most one wrap. */
static void
ring_copy(const RingObject *c, Py_ssize_t at, unsigned char *buf, Py_ssize_t n, int put)
{
    Py_ssize_t first = n <= c->capacity - at ? n : c->capacity - at;
    memmove(put ? c->area + at : buf, put ? buf : c->area + at, (size_t)first);
    if (n > first)
        memmove(put ? c->area : buf + first, put ? buf + first : c->area, (size_t)(n - first));
}
#define ring_put(c, at, src, n) ring_copy((c), (at), (unsigned char *)(src), (n), 1)
#define ring_get(c, at, dst, n) ring_copy((c), (at), (dst), (n), 0)

/* Unsigned, and compared in 64 bits by the callers: on a 32-bit build a prefix of 2 GiB or
 * more would be negative as a size. The prefix itself may straddle the end of the area. */
static uint32_t
length_at(const RingObject *c, Py_ssize_t at)
{
    unsigned char prefix[PREFIX];
    ring_get(c, at, prefix, PREFIX);
    return rd32(prefix);
}

static int
check_open(const RingObject *c)
{
    if (c->view.obj == NULL)
        PyErr_SetString(PyExc_ValueError, "ring buffer core is closed");
    return c->view.obj == NULL ? -1 : 0;
}

static void
drop_oldest(RingObject *c)
{
    uint64_t size = (uint64_t)PREFIX + length_at(c, c->tail);
    if (size > (uint64_t)c->used) {
        /* only a foreign write to the mapped file gets here: forget everything rather than
         * walk on through garbage */
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
publish(RingObject *c)
{
    unsigned char *p = c->pointers, pair[8];
    uint64_t word;
    if (p == NULL)
        return;
    atomic_signal_fence(memory_order_release);
    wr32(p, (uint32_t)c->head);
    /* recover() reads only tail and used: one 8-byte store, so a SIGKILL never leaves one
     * new and the other old. Atomic, not a memcpy: on a 32-bit machine a plain 64-bit store
     * may be split in two. __init__ checked that the word is 8-byte aligned. */
    wr32(pair, (uint32_t)c->tail);
    wr32(pair + 4, (uint32_t)c->used);
    memcpy(&word, pair, sizeof word);
    __atomic_store_n((uint64_t *)(void *)(p + 4), word, __ATOMIC_RELAXED);
}

static int
ring_append(RingObject *c, const unsigned char *data, Py_ssize_t len)
{
    unsigned char prefix[PREFIX];
    if (len > c->capacity - PREFIX) {       /* before the closed check: only counted */
        c->skipped++;
        return 0;
    }
    if (check_open(c) < 0)
        return -1;
    Py_ssize_t size = len + PREFIX;         /* <= capacity, checked above */
    if (size > c->capacity - c->used) {
        while (size > c->capacity - c->used)
            drop_oldest(c);
        /* the new entry overwrites the dropped ones: the header stops covering them before
         * its first byte lands */
        publish(c);
        atomic_signal_fence(memory_order_seq_cst);
    }
    wr32(prefix, (uint32_t)len);
    ring_put(c, c->head, prefix, PREFIX);
    ring_put(c, (c->head + PREFIX) % c->capacity, data, len);
    c->head = (c->head + size) % c->capacity;
    c->used += size;
    publish(c);
    return 0;
}

PyDoc_STRVAR(Ring_append_doc,
"append(data, /)\n--\n\nStore one entry (bytes-like), dropping the oldest whole ones.");

static PyObject *
Ring_append(RingObject *self, PyObject *data)
{
    Py_buffer buf;
    int rc;
    if (PyBytes_CheckExact(data))      /* what the daemon and the library pass */
        rc = ring_append(self, (const unsigned char *)PyBytes_AS_STRING(data),
                         PyBytes_GET_SIZE(data));
    else {
        if (PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE) < 0)
            return NULL;
        rc = ring_append(self, buf.buf, buf.len);
        PyBuffer_Release(&buf);
    }
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Append every stored entry to out, oldest first. The pointers are read only here, after
 * the caller allocated out: an allocation can start the garbage collector, whose finalisers
 * can let another thread append, and nothing below can. */
static int
collect(RingObject *self, PyObject *out)
{
    Py_ssize_t at = self->tail, left = self->used;
    while (left >= PREFIX) {
        uint32_t prefix = length_at(self, at);
        if ((uint64_t)prefix > (uint64_t)(left - PREFIX))
            break;                 /* a foreign write to the mapped file: stop, never overrun */
        Py_ssize_t len = (Py_ssize_t)prefix;
        PyObject *entry = PyBytes_FromStringAndSize(NULL, len);
        if (entry != NULL && len > 0)
            ring_get(self, (at + PREFIX) % self->capacity,
                     (unsigned char *)PyBytes_AS_STRING(entry), len);
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

/* entries() (clear 0) or take() (clear 1): one step, so that an append from another thread
 * (the library's lock-free debug path) lands wholly before it, and is taken, or after */
static PyObject *
read_entries(RingObject *self, int clear)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    /* an empty ring reads back even when closed */
    if (self->used != 0 && (check_open(self) < 0 || collect(self, out) < 0)) {
        Py_DECREF(out);
        return NULL;
    }
    if (clear) {
        self->head = self->tail = self->used = 0;
        publish(self);
    }
    return out;
}

static PyObject *Ring_entries(RingObject *self, PyObject *unused) { return read_entries(self, 0); }
static PyObject *Ring_take(RingObject *self, PyObject *unused) { return read_entries(self, 1); }

static PyObject *
Ring_clear(RingObject *self, PyObject *Py_UNUSED(ignored))
{
    self->head = self->tail = self->used = 0;
    publish(self);
    Py_RETURN_NONE;
}

static PyObject *
Ring_release(RingObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    self->area = self->pointers = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Ring_methods[] = {
    {"append", (PyCFunction)Ring_append, METH_O, Ring_append_doc},
    {"entries", (PyCFunction)Ring_entries, METH_NOARGS, "Every entry, oldest first."},
    {"take", (PyCFunction)Ring_take, METH_NOARGS, "entries() then clear(), as one step."},
    {"clear", (PyCFunction)Ring_clear, METH_NOARGS, "Forget every entry (skipped is kept)."},
    {"release", (PyCFunction)Ring_release, METH_NOARGS, "Give the buffer back (an mmap)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Ring_members[] = {
    {"capacity", T_PYSSIZET, offsetof(RingObject, capacity), READONLY, "size of the area"},
    {"head", T_PYSSIZET, offsetof(RingObject, head), READONLY, "where the next entry goes"},
    {"tail", T_PYSSIZET, offsetof(RingObject, tail), READONLY, "where the oldest starts"},
    {"used", T_PYSSIZET, offsetof(RingObject, used), READONLY, "bytes stored, prefixes too"},
    {"skipped", T_PYSSIZET, offsetof(RingObject, skipped), 0, "entries too large to store"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
Ring_get_closed(RingObject *self, void *unused) { return PyBool_FromLong(!self->view.obj); }

static PyGetSetDef Ring_getset[] = {
    {"closed", (getter)Ring_get_closed, NULL, "whether release() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static int
Ring_init(RingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "capacity", "area_at", "pointers_at", NULL};
    Py_buffer view;
    Py_ssize_t capacity, area_at = 0, pointers_at = -1;
    const char *error = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "w*n|nn:RingCore", kwlist, &view, &capacity,
                                     &area_at, &pointers_at))
        return -1;
    if (capacity < 0 || (uint64_t)capacity > UINT32_MAX || area_at < 0 ||
            area_at > view.len - capacity)
        error = "the area does not fit in the buffer";
    else if (pointers_at != -1 &&
             (pointers_at < 0 || pointers_at > view.len - POINTERS_SIZE ||
              (pointers_at + POINTERS_SIZE > area_at && pointers_at < area_at + capacity)))
        error = "the header pointers must fit in the buffer, outside the area";
    else if (pointers_at != -1 && ((uintptr_t)view.buf + (uintptr_t)pointers_at + 4) % 8 != 0)
        error = "the header's tail and used must be 8-byte aligned in the buffer";
    if (error != NULL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, error);
        return -1;
    }
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    self->view = view;
    self->area = (unsigned char *)view.buf + area_at;
    self->pointers = pointers_at == -1 ? NULL : (unsigned char *)view.buf + pointers_at;
    self->capacity = capacity;
    self->head = self->tail = self->used = self->skipped = 0;
    return 0;
}

static void
Ring_dealloc(RingObject *self)
{
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject Ring_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "virlogd._speedups.RingCore",
    .tp_basicsize = sizeof(RingObject),
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "RingCore(buffer, capacity, area_at=0, pointers_at=-1)\n--\n\nring.RingCore.",
    .tp_methods = Ring_methods,
    .tp_members = Ring_members,
    .tp_getset = Ring_getset,
    .tp_init = (initproc)Ring_init,
    .tp_new = PyType_GenericNew,
};

/* == module =============================================================================== */

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_VARARGS | METH_KEYWORDS, bind_doc},
    {"fallback", fallback, METH_O, fallback_doc},
    {"frames", (PyCFunction)(void (*)(void))frames, METH_FASTCALL, frames_doc},
    {"encode_parts", (PyCFunction)(void (*)(void))encode_parts, METH_FASTCALL | METH_KEYWORDS,
     encode_parts_doc},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL | METH_KEYWORDS, encode_doc},
    {"format_line", (PyCFunction)(void (*)(void))format_line, METH_FASTCALL | METH_KEYWORDS,
     format_line_doc},
    {"pack_record", pack_record, METH_O, pack_record_doc},
    {"pack_parts", (PyCFunction)(void (*)(void))pack_parts, METH_FASTCALL | METH_KEYWORDS,
     pack_parts_doc},
    {"entry_text", entry_text, METH_O, entry_text_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_speedups",
    .m_doc = "virlogd's compiled per-record data work (see core/speedups.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;
    for (int i = 0; i < NKW; i++)
        if (kw_interned[i] == NULL &&
                (kw_interned[i] = PyUnicode_InternFromString(kw_names[i])) == NULL)
            return NULL;
    if (encode_kwnames == NULL) {
        if ((encode_kwnames = PyTuple_New(NKW)) == NULL)
            return NULL;
        for (int i = 0; i < NKW; i++)
            PyTuple_SET_ITEM(encode_kwnames, i, Py_NewRef(kw_interned[i]));
    }
    if ((s_max_frame = PyUnicode_InternFromString("max_frame")) == NULL ||
            (s_pid = PyUnicode_InternFromString("pid")) == NULL ||
            (s_uid = PyUnicode_InternFromString("uid")) == NULL ||
            (s_gid = PyUnicode_InternFromString("gid")) == NULL)
        return NULL;
    /* append() is one C call, atomic under the GIL: the library appends without a lock */
    if (PyType_Ready(&Ring_Type) < 0 ||
            PyDict_SetItemString(Ring_Type.tp_dict, "atomic_append", Py_True) < 0 ||
            (m = PyModule_Create(&module)) == NULL)
        return NULL;
    PyType_Modified(&Ring_Type);
    if (PyModule_AddObject(m, "RingCore", Py_NewRef(&Ring_Type)) < 0) {
        Py_DECREF(&Ring_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
