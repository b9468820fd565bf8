/* The C twin of textformat.py's per-record functions: format_line, pack_record, pack_parts,
 * pack_here and entry_text.
 *
 * The contract is "the same result as the pure-Python function, for every input". This
 * code only takes the common case (a virlogd.record.Record, exact int/float/str values in
 * range, no stack to print) and hands anything else, unchanged, to the pure-Python function
 * that textformat.py gave setup(): odd values then get Python's exact result or exception,
 * and this file stays small enough to check by reading.
 *
 * Everything runs with the GIL held. The caches are C statics that are read and written with
 * no Python call in between (a call could run another thread's format_line), and a record's
 * strings are held by a strong reference while the result is built, because an allocation can
 * run a finaliser that rebinds the record's slots.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_ccompat.h"
#include "_ccaller.h"
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ setup */

static PyObject *py_format_line, *py_pack_record, *py_pack_parts, *py_entry_text,
    *py_pack_here;

/* Reading Record's slots at their offsets saves a generic attribute lookup per field. The
 * offsets are those of the member descriptors found on the class; they stay right only while
 * the class is unchanged, which its version tag tells (any change to a type clears it). */
static PyTypeObject *record_type;
static unsigned int record_version;
enum { F_TIME, F_PRIORITY, F_MESSAGE, F_FUNC, F_LINE, F_STACK, F_PID, F_SOURCE, F_RELAYED,
       N_FIELDS };
static const char *const field_names[N_FIELDS] = {
    "time", "priority", "message", "func", "line", "stack", "pid", "source", "relayed"};
static Py_ssize_t field_offset[N_FIELDS];

/* priority.NAMES for 1..4, copied at setup so that the hot path does no dict lookup */
#define NAME_MAX_LEN 15
static char level_name[5][NAME_MAX_LEN + 1];
static Py_ssize_t level_name_len[5];

static int
learn_record_type(void)
{
    PyTypeObject *tp = record_type;
    record_version = 0;
    if (tp->tp_getattro != PyObject_GenericGetAttr)
        return 0;
    for (int i = 0; i < N_FIELDS; i++) {
        /* interned, so that the lookup gives the type a version tag if it has none yet */
        PyObject *name = PyUnicode_InternFromString(field_names[i]);
        if (name == NULL)
            return -1;
        PyObject *descr = PyObject_GetAttr((PyObject *)tp, name);
        Py_DECREF(name);
        if (descr == NULL) {
            PyErr_Clear();
            return 0;
        }
        int usable = Py_IS_TYPE(descr, &PyMemberDescr_Type)
            && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX
            && PyType_IsSubtype(tp, PyDescr_TYPE(descr));
        if (usable)
            field_offset[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!usable)
            return 0;
    }
    record_version = tp->tp_version_tag;
    return 0;
}

/* Whether *rec*'s fields can be read at the known offsets; -1 with an exception set. */
static int
is_plain_record(PyObject *rec)
{
    if (Py_TYPE(rec) != record_type || record_type == NULL)
        return 0;
    if (record_version == 0 || record_type->tp_version_tag != record_version) {
        if (learn_record_type() < 0)
            return -1;
        if (record_version == 0)
            return 0;
    }
    return 1;
}

#define FIELD(rec, f) (*(PyObject **)((char *)(rec) + field_offset[f]))

static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *type, *names, *fl, *pr, *pp, *et, *ph;
    if (!PyArg_ParseTuple(args, "O!O!OOOOO:setup", &PyType_Type, &type, &PyDict_Type, &names,
                          &fl, &pr, &pp, &et, &ph))
        return NULL;
    for (long level = 1; level <= 4; level++) {
        PyObject *key = PyLong_FromLong(level);
        if (key == NULL)
            return NULL;
        PyObject *name = PyDict_GetItemWithError(names, key);
        Py_DECREF(key);
        if (name == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "setup: no name for level %ld", level);
            return NULL;
        }
        if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name)
                || PyUnicode_GET_LENGTH(name) > NAME_MAX_LEN) {
            PyErr_Format(PyExc_ValueError, "setup: unusable name for level %ld", level);
            return NULL;
        }
        memcpy(level_name[level], PyUnicode_DATA(name), PyUnicode_GET_LENGTH(name));
        level_name_len[level] = PyUnicode_GET_LENGTH(name);
    }
    Py_INCREF(type);
    Py_XSETREF(record_type, (PyTypeObject *)type);
    if (learn_record_type() < 0)
        return NULL;
    Py_INCREF(fl);
    Py_XSETREF(py_format_line, fl);
    Py_INCREF(pr);
    Py_XSETREF(py_pack_record, pr);
    Py_INCREF(pp);
    Py_XSETREF(py_pack_parts, pp);
    Py_INCREF(et);
    Py_XSETREF(py_entry_text, et);
    Py_INCREF(ph);
    Py_XSETREF(py_pack_here, ph);
    Py_RETURN_NONE;
}

static PyObject *
defer(PyObject *fallback, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "virlogd._ctext: setup() was not called");
        return NULL;
    }
    return PyObject_Vectorcall(fallback, args, nargs, kwnames);
}

/* ------------------------------------------------------------------ time */

/* 9999-12-31 23:59:59, the last second whose date has DATE_LEN characters: Python formats
 * later ones */
#define LAST_SECOND 253402300799LL

/* Python's int(when * 1000) when it is a non-negative millisecond count up to LAST_SECOND:
 * 1 and *ms set, else 0 (Python handles it, or raises). The product is the same IEEE double
 * multiply Python does, and the cast truncates toward zero as int() does. */
static int
milliseconds(PyObject *when, long long *ms)
{
    if (PyFloat_CheckExact(when)) {
        double product = PyFloat_AS_DOUBLE(when) * 1000.0;
        /* > -1.0: int() of (-1, 0) is 0; NaN fails both tests */
        if (!(product > -1.0 && product < (LAST_SECOND + 1) * 1000.0))
            return 0;
        *ms = (long long)product;
        return 1;
    }
    if (PyLong_CheckExact(when)) {
        int overflow;
        long long seconds = PyLong_AsLongLongAndOverflow(when, &overflow);
        if (overflow || seconds < 0 || seconds > LAST_SECOND)
            return 0;      /* -1 with no error is a real -1: out of range too */
        *ms = seconds * 1000;
        return 1;
    }
    return 0;
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
    if (value < 0) {
        *p++ = '-';
        return put_digits(p, 0ULL - (unsigned long long)value, 1);
    }
    return put_digits(p, (unsigned long long)value, 1);
}

/* The twin's own copies of textformat.py's caches, per second and per (millisecond, pid,
 * level): sharing the Python tuples would cost more than the formatting saved. */
#define DATE_LEN 19     /* YYYY-MM-DD HH:MM:SS */
static struct {
    long long second;
    char text[DATE_LEN];
} last_second = {-1, ""};

#define PREFIX_MAX 96   /* date, .mmm+0000: , a 20-character pid, ": ", a name, " : " */
static struct {
    long long ms, pid;
    int level;
    Py_ssize_t len;
    char text[PREFIX_MAX];
} last_prefix = {-1, 0, 0, 0, ""};

/* "YYYY-MM-DD HH:MM:SS.mmm+0000: PID: LEVEL : " into *out*; its length, or -1 if gmtime fails
 * (Python then decides). Python's time.gmtime is gmtime_r too, so a right/ zoneinfo's leap
 * seconds come out the same. */
static Py_ssize_t
make_prefix(long long ms, long long pid, int level, char *out)
{
    if (last_prefix.ms == ms && last_prefix.pid == pid && last_prefix.level == level) {
        memcpy(out, last_prefix.text, last_prefix.len);
        return last_prefix.len;
    }
    long long second = ms / 1000;
    if (last_second.second != second) {
        time_t t = (time_t)second;
        struct tm tm;
        /* a 32-bit time_t cannot hold it (after 2038): Python decides, as it raises */
        if ((long long)t != second || gmtime_r(&t, &tm) == NULL)
            return -1;
        char *p = last_second.text;
        p = put_digits(p, (unsigned long long)tm.tm_year + 1900, 4);
        *p++ = '-';
        p = put_digits(p, (unsigned long long)tm.tm_mon + 1, 2);
        *p++ = '-';
        p = put_digits(p, (unsigned long long)tm.tm_mday, 2);
        *p++ = ' ';
        p = put_digits(p, (unsigned long long)tm.tm_hour, 2);
        *p++ = ':';
        p = put_digits(p, (unsigned long long)tm.tm_min, 2);
        *p++ = ':';
        p = put_digits(p, (unsigned long long)tm.tm_sec, 2);
        last_second.second = second;
    }
    char *p = out;
    memcpy(p, last_second.text, DATE_LEN);
    p += DATE_LEN;
    *p++ = '.';
    p = put_digits(p, (unsigned long long)(ms % 1000), 3);
    memcpy(p, "+0000: ", 7);
    p += 7;
    p = put_ll(p, pid);
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, level_name[level], level_name_len[level]);
    p += level_name_len[level];
    memcpy(p, " : ", 3);
    p += 3;
    Py_ssize_t len = p - out;
    memcpy(last_prefix.text, out, len);
    last_prefix.len = len;
    last_prefix.ms = ms;
    last_prefix.pid = pid;
    last_prefix.level = level;
    return len;
}

/* ------------------------------------------------------------------ the line */

static int
exact_ll(PyObject *value, long long *out)
{
    if (!PyLong_CheckExact(value))
        return 0;
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    return !overflow;
}

static int
level_of(PyObject *priority)
{
    long long level;
    if (!exact_ll(priority, &level) || level < 1 || level > 4)
        return 0;
    return (int)level;
}

/* _CONTROL of textformat.py: [\x00-\x08\x0a-\x1f\x7f] */
#define IS_CONTROL(c) (((c) < 0x20 && (c) != '\t') || (c) == 0x7f)
#define CONTINUATION "  | "
#define CONTINUATION_LEN 4

/* Whether the 8 bytes at *s* may hold a control character (a tab is a false alarm): none below
 * 0x20, none 0x7f. A byte at a time, this scan cost more than the rest of format_line. */
static inline int
word_may_have_control(const unsigned char *s)
{
    uint64_t x, del;
    memcpy(&x, s, 8);
    del = x ^ 0x7F7F7F7F7F7F7F7FULL;
    return ((((x - 0x2020202020202020ULL) & ~x) | ((del - 0x0101010101010101ULL) & ~del))
            & 0x8080808080808080ULL) != 0;
}

/* The index of the first control character of *data* from *i*, or *n*. Inlined with a
 * constant *kind*, so that each kind gets its own loop rather than a switch per character. */
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

/* How much longer neutralise() makes *text*: "\r\n" and "\n" become "\n" CONTINUATION,
 * any other control character its 4-character \xNN escape. */
static inline Py_ssize_t
growth_of(int kind, const void *data, Py_ssize_t n)
{
    Py_ssize_t growth = 0;
    for (Py_ssize_t i = next_control(kind, data, 0, n); i < n;
            i = next_control(kind, data, i + 1, n)) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c == '\n')
            growth += CONTINUATION_LEN;
        else if (c == '\r' && i + 1 < n && PyUnicode_READ(kind, data, i + 1) == '\n') {
            growth += CONTINUATION_LEN - 1;
            i++;
        }
        else
            growth += 3;
    }
    return growth;
}

static Py_ssize_t
neutralise_growth(PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const void *data = PyUnicode_DATA(text);
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        return growth_of(PyUnicode_1BYTE_KIND, data, n);
    case PyUnicode_2BYTE_KIND:
        return growth_of(PyUnicode_2BYTE_KIND, data, n);
    default:
        return growth_of(PyUnicode_4BYTE_KIND, data, n);
    }
}

/* How much longer field() makes *text*: every control character becomes its 4-character
 * \xNN escape, newlines included (a field never ends its line). */
static inline Py_ssize_t
field_growth_of(int kind, const void *data, Py_ssize_t n)
{
    Py_ssize_t growth = 0;
    for (Py_ssize_t i = next_control(kind, data, 0, n); i < n;
            i = next_control(kind, data, i + 1, n))
        growth += 3;
    return growth;
}

static Py_ssize_t
field_growth(PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const void *data = PyUnicode_DATA(text);
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        return field_growth_of(PyUnicode_1BYTE_KIND, data, n);
    case PyUnicode_2BYTE_KIND:
        return field_growth_of(PyUnicode_2BYTE_KIND, data, n);
    default:
        return field_growth_of(PyUnicode_4BYTE_KIND, data, n);
    }
}

static Py_ssize_t
put_ascii(int kind, void *data, Py_ssize_t pos, const char *s, Py_ssize_t n)
{
    if (kind == PyUnicode_1BYTE_KIND)
        memcpy((char *)data + pos, s, n);
    else
        for (Py_ssize_t i = 0; i < n; i++)
            PyUnicode_WRITE(kind, data, pos + i, (unsigned char)s[i]);
    return pos + n;
}

/* characters [start, end) of *s* at *pos* of the result (whose kind is at least as wide) */
static Py_ssize_t
put_slice(int kind, void *data, Py_ssize_t pos, int skind, const void *sdata, Py_ssize_t start,
          Py_ssize_t end)
{
    if (skind == kind)
        memcpy((char *)data + pos * kind, (const char *)sdata + start * kind,
               (end - start) * kind);
    else
        for (Py_ssize_t i = start; i < end; i++)
            PyUnicode_WRITE(kind, data, pos + i - start, PyUnicode_READ(skind, sdata, i));
    return pos + end - start;
}

static Py_ssize_t
put_str(int kind, void *data, Py_ssize_t pos, PyObject *s)
{
    return put_slice(kind, data, pos, PyUnicode_KIND(s), PyUnicode_DATA(s), 0,
                     PyUnicode_GET_LENGTH(s));
}

/* neutralise(): the runs between control characters copied whole */
static Py_ssize_t
put_neutralised(int kind, void *data, Py_ssize_t pos, PyObject *s)
{
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int skind = PyUnicode_KIND(s);
    const void *sdata = PyUnicode_DATA(s);
    Py_ssize_t run = 0;
    for (Py_ssize_t i = next_control(skind, sdata, 0, n); i < n;
            i = next_control(skind, sdata, i + 1, n)) {
        pos = put_slice(kind, data, pos, skind, sdata, run, i);
        Py_UCS4 c = PyUnicode_READ(skind, sdata, i);
        if (c == '\r' && i + 1 < n && PyUnicode_READ(skind, sdata, i + 1) == '\n') {
            c = '\n';
            i++;
        }
        if (c == '\n') {
            pos = put_ascii(kind, data, pos, "\n" CONTINUATION, 1 + CONTINUATION_LEN);
        }
        else {
            char escape[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            pos = put_ascii(kind, data, pos, escape, 4);
        }
        run = i + 1;
    }
    return put_slice(kind, data, pos, skind, sdata, run, n);
}

/* field(): the runs between control characters copied whole, each control escaped */
static Py_ssize_t
put_field(int kind, void *data, Py_ssize_t pos, PyObject *s)
{
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int skind = PyUnicode_KIND(s);
    const void *sdata = PyUnicode_DATA(s);
    Py_ssize_t run = 0;
    for (Py_ssize_t i = next_control(skind, sdata, 0, n); i < n;
            i = next_control(skind, sdata, i + 1, n)) {
        pos = put_slice(kind, data, pos, skind, sdata, run, i);
        Py_UCS4 c = PyUnicode_READ(skind, sdata, i);
        char escape[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
        pos = put_ascii(kind, data, pos, escape, 4);
        run = i + 1;
    }
    return put_slice(kind, data, pos, skind, sdata, run, n);
}

/* prefix, "source : " when relayed (source not NULL; "-" when empty), "func:line : " when
 * there is a func, the neutralised message, "\n" */
static PyObject *
build_line(const char *prefix, Py_ssize_t prefix_len, PyObject *source, PyObject *func,
           long long line, PyObject *message)
{
    char tail[32];      /* ":LINE : " */
    Py_ssize_t tail_len = 0, func_growth = 0, source_growth = 0;
    Py_UCS4 maxchar = PyUnicode_MAX_CHAR_VALUE(message);
    Py_ssize_t growth = neutralise_growth(message);
    Py_ssize_t len = prefix_len + PyUnicode_GET_LENGTH(message) + growth + 1;
    if (source != NULL) {
        if (PyUnicode_GET_LENGTH(source) == 0)
            len += 4;                   /* "- : " */
        else {
            source_growth = field_growth(source);
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
        func_growth = field_growth(func);
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
            pos = source_growth ? put_field(kind, data, pos, source)
                                : put_str(kind, data, pos, source);
        pos = put_ascii(kind, data, pos, " : ", 3);
    }
    if (func != NULL) {
        pos = func_growth ? put_field(kind, data, pos, func) : put_str(kind, data, pos, func);
        pos = put_ascii(kind, data, pos, tail, tail_len);
    }
    pos = growth ? put_neutralised(kind, data, pos, message) : put_str(kind, data, pos, message);
    PyUnicode_WRITE(kind, data, pos, '\n');
    return result;
}

PyDoc_STRVAR(format_line_doc,
"format_line($module, /, record, with_stack=False)\n--\n\n"
"The full text line with its trailing newline; with the stack when asked (``+``).");

static PyObject *
format_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs < 1 || nargs > 2)
        return defer(py_format_line, args, nargs, kwnames);
    PyObject *rec = args[0];
    int plain = is_plain_record(rec);
    if (plain <= 0)
        return plain < 0 ? NULL : defer(py_format_line, args, nargs, kwnames);

    PyObject *func = FIELD(rec, F_FUNC), *when = FIELD(rec, F_TIME), *pid = FIELD(rec, F_PID);
    PyObject *priority = FIELD(rec, F_PRIORITY), *message = FIELD(rec, F_MESSAGE);
    PyObject *relayed = FIELD(rec, F_RELAYED), *source = NULL;
    long long ms, pid_value, line = 0;
    int level;
    if (func == NULL || when == NULL || pid == NULL || priority == NULL || message == NULL
            || !milliseconds(when, &ms) || !exact_ll(pid, &pid_value)
            || !(level = level_of(priority)) || !PyUnicode_CheckExact(message)
            || (relayed != Py_True && relayed != Py_False))
        return defer(py_format_line, args, nargs, kwnames);
    if (relayed == Py_True) {
        /* a relayed record names its source (only an exact str is taken here) */
        source = FIELD(rec, F_SOURCE);
        if (source == NULL || !PyUnicode_CheckExact(source))
            return defer(py_format_line, args, nargs, kwnames);
        if (VIRLOGD_UNICODE_READY(source) < 0)
            return NULL;
    }
    if (VIRLOGD_UNICODE_READY(message) < 0
            || (PyUnicode_CheckExact(func) && VIRLOGD_UNICODE_READY(func) < 0))
        return NULL;
    /* the line is at most five characters per one of the message's, plus four per one of the
     * func's and the source's: sizes that could overflow that sum (only possible on a 32-bit
     * build) go to Python */
    if (PyUnicode_GET_LENGTH(message) > (PY_SSIZE_T_MAX - 1024) / 16
            || (PyUnicode_CheckExact(func) && PyUnicode_GET_LENGTH(func) > PY_SSIZE_T_MAX / 16)
            || (source != NULL && PyUnicode_GET_LENGTH(source) > PY_SSIZE_T_MAX / 16))
        return defer(py_format_line, args, nargs, kwnames);
    if (func == Py_None || (PyUnicode_CheckExact(func) && PyUnicode_GET_LENGTH(func) == 0))
        func = NULL;
    else if (!PyUnicode_CheckExact(func) || FIELD(rec, F_LINE) == NULL
             || !exact_ll(FIELD(rec, F_LINE), &line))
        return defer(py_format_line, args, nargs, kwnames);
    if (nargs == 2 && args[1] != Py_False && args[1] != Py_None) {
        /* a stack is rare (the + filter): only "there is none" is taken here */
        PyObject *stack = FIELD(rec, F_STACK);
        if (args[1] != Py_True || stack == NULL || !(stack == Py_None
                || (PyUnicode_CheckExact(stack) && PyUnicode_GET_LENGTH(stack) == 0)))
            return defer(py_format_line, args, nargs, kwnames);
    }

    char prefix[PREFIX_MAX];
    Py_ssize_t prefix_len = make_prefix(ms, pid_value, level, prefix);
    if (prefix_len < 0)
        return defer(py_format_line, args, nargs, kwnames);
    Py_XINCREF(source);
    Py_XINCREF(func);
    Py_INCREF(message);
    PyObject *result = build_line(prefix, prefix_len, source, func, line, message);
    Py_XDECREF(source);
    Py_XDECREF(func);
    Py_DECREF(message);
    return result;
}

/* ------------------------------------------------------------------ packing */

/* <BdiIBBII: 1, time, pid, line, priority, relayed, len(func), len(source); then func,
 * source, message. (Entries that start with NUL are an older version's: Python reads them.) */
#define PACKED_MARK 1
#define PACKED_SIZE 27
#define U32_MAX 4294967295LL

/* Whether the 8 bytes at *s* are all ASCII */
static inline int
word_is_ascii(const unsigned char *s)
{
    uint64_t x;
    memcpy(&x, s, 8);
    return (x & 0x8080808080808080ULL) == 0;
}

/* Inlined with a constant *kind*, so that each kind gets its own loop (as next_control). */
static inline Py_ssize_t
utf8_len_of(int kind, const void *data, Py_ssize_t n)
{
    Py_ssize_t len = 0, i = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        /* Latin-1: one byte more for each character from 0x80, which has its top bit set */
        const unsigned char *s = data;
        for (; i + 8 <= n; i += 8) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            len += 8 + __builtin_popcountll(x & 0x8080808080808080ULL);
        }
        for (; i < n; i++)
            len += 1 + (s[i] >> 7);
        return len;
    }
    for (; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80)
            len += 1;
        else if (c < 0x800)
            len += 2;
        else if (c >= 0xD800 && c <= 0xDFFF) {
            if (c < 0xDC80 || c > 0xDCFF)
                return -1;
            len += 1;
        }
        else if (c < 0x10000)
            len += 3;
        else
            len += 4;
    }
    return len;
}

/* The length of text.encode("utf-8", "surrogateescape"), or -1 if that raises (a surrogate
 * that is not an escaped byte): Python then raises its own UnicodeEncodeError. */
static Py_ssize_t
utf8_len(PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const void *data = PyUnicode_DATA(text);
    if (PyUnicode_IS_ASCII(text))
        return n;
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        return utf8_len_of(PyUnicode_1BYTE_KIND, data, n);
    case PyUnicode_2BYTE_KIND:
        return utf8_len_of(PyUnicode_2BYTE_KIND, data, n);
    default:
        return utf8_len_of(PyUnicode_4BYTE_KIND, data, n);
    }
}

static inline char *
put_utf8_of(int kind, const void *data, Py_ssize_t n, char *p)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (kind == PyUnicode_1BYTE_KIND && (i & 7) == 0) {
            /* accented text is mostly ASCII */
            while (i + 8 <= n && word_is_ascii((const unsigned char *)data + i)) {
                memcpy(p, (const char *)data + i, 8);
                p += 8;
                i += 8;
            }
            if (i >= n)
                break;
        }
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80)
            *p++ = (char)c;
        else if (c < 0x800) {
            *p++ = (char)(0xC0 | (c >> 6));
            *p++ = (char)(0x80 | (c & 0x3F));
        }
        else if (c >= 0xDC80 && c <= 0xDCFF)
            *p++ = (char)(c - 0xDC00);       /* surrogateescape: the byte it stood for */
        else if (c < 0x10000) {
            *p++ = (char)(0xE0 | (c >> 12));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        }
        else {
            *p++ = (char)(0xF0 | (c >> 18));
            *p++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        }
    }
    return p;
}

/* *text* as UTF-8 at *p*, utf8_len() having said it can be encoded */
static char *
put_utf8(char *p, PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const void *data = PyUnicode_DATA(text);
    if (PyUnicode_IS_ASCII(text)) {
        memcpy(p, data, n);
        return p + n;
    }
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        return put_utf8_of(PyUnicode_1BYTE_KIND, data, n, p);
    case PyUnicode_2BYTE_KIND:
        return put_utf8_of(PyUnicode_2BYTE_KIND, data, n, p);
    default:
        return put_utf8_of(PyUnicode_4BYTE_KIND, data, n, p);
    }
}

static int
exact_int32(PyObject *value, long long *out)
{
    return exact_ll(value, out) && *out >= -2147483648LL && *out <= 2147483647LL;
}

static int
exact_uint32(PyObject *value, long long *out)
{
    return exact_ll(value, out) && *out >= 0 && *out <= U32_MAX;
}

static char *
put_le(char *p, unsigned long long value, int size)
{
    for (int i = 0; i < size; i++, value >>= 8)
        *p++ = (char)(value & 0xFF);
    return p;
}

/* The entry, or NULL: with an exception set on a real error, without one when the values are
 * not the common case (Python then packs them or raises what struct or encode raises).
 * *source* is NULL for a record that is not relayed. */
static PyObject *
pack(PyObject *when, PyObject *pid, PyObject *line, PyObject *priority, PyObject *func,
     PyObject *message, PyObject *source)
{
    double time_value;
    long long pid_value, line_value = 0, level;
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
    if (!exact_int32(pid, &pid_value) || (line != Py_None && !exact_uint32(line, &line_value))
            || !exact_ll(priority, &level) || level < 0 || level > 255
            || !PyUnicode_CheckExact(message) || !(func == Py_None || PyUnicode_CheckExact(func))
            || (source != NULL && !PyUnicode_CheckExact(source)))
        return NULL;
    if (VIRLOGD_UNICODE_READY(message) < 0 || (func != Py_None && VIRLOGD_UNICODE_READY(func) < 0)
            || (source != NULL && VIRLOGD_UNICODE_READY(source) < 0))
        return NULL;
    /* UTF-8 is at most four bytes a character: sizes that could overflow (a 32-bit build), or
     * a func or source over the u32 length field, go to Python */
    Py_ssize_t quarter = (PY_SSIZE_T_MAX - PACKED_SIZE) / 12;
    if (PyUnicode_GET_LENGTH(message) > quarter
            || (func != Py_None && PyUnicode_GET_LENGTH(func) > quarter)
            || (source != NULL && PyUnicode_GET_LENGTH(source) > quarter))
        return NULL;
    Py_ssize_t func_len = func == Py_None ? 0 : utf8_len(func);
    Py_ssize_t source_len = source == NULL ? 0 : utf8_len(source);
    Py_ssize_t message_len = utf8_len(message);
    if (func_len < 0 || (long long)func_len > U32_MAX || source_len < 0
            || (long long)source_len > U32_MAX || message_len < 0)
        return NULL;

    PyObject *entry = PyBytes_FromStringAndSize(NULL, PACKED_SIZE + func_len + source_len
                                                      + message_len);
    if (entry == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(entry);
    *p++ = PACKED_MARK;
    if (PyFloat_Pack8(time_value, p, 1) < 0) {
        Py_DECREF(entry);
        return NULL;
    }
    p += 8;
    p = put_le(p, (unsigned long long)pid_value, 4);
    p = put_le(p, (unsigned long long)line_value, 4);
    p = put_le(p, (unsigned long long)level, 1);
    p = put_le(p, source != NULL, 1);
    p = put_le(p, (unsigned long long)func_len, 4);
    p = put_le(p, (unsigned long long)source_len, 4);
    if (func != Py_None)
        p = put_utf8(p, func);
    if (source != NULL)
        p = put_utf8(p, source);
    put_utf8(p, message);
    return entry;
}

PyDoc_STRVAR(pack_parts_doc,
"pack_parts($module, when, pid, line, priority, func, message, /)\n--\n\n"
"The ring entry of a record no output formats, from its parts (no Record needed).");

static PyObject *
pack_parts(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs != 6)
        return defer(py_pack_parts, args, nargs, kwnames);
    PyObject *entry = pack(args[0], args[1], args[2], args[3], args[4], args[5], NULL);
    if (entry == NULL && !PyErr_Occurred())
        return defer(py_pack_parts, args, nargs, kwnames);
    return entry;
}

PyDoc_STRVAR(pack_record_doc,
"pack_record($module, record, /)\n--\n\n"
"The ring entry of a record no output formats (cheaper than ``format_line``).");

static PyObject *
pack_record(PyObject *module, PyObject *rec)
{
    int plain = is_plain_record(rec);
    if (plain < 0)
        return NULL;
    if (plain) {
        PyObject *f[N_FIELDS];
        for (int i = 0; i < N_FIELDS; i++)
            f[i] = FIELD(rec, i);
        /* relayed must be exactly True or False (anything else: Python), and the source is
         * read only when it is True */
        if (f[F_TIME] && f[F_PID] && f[F_LINE] && f[F_PRIORITY] && f[F_FUNC] && f[F_MESSAGE]
                && (f[F_RELAYED] == Py_False || (f[F_RELAYED] == Py_True && f[F_SOURCE]))) {
            /* nothing in pack() can run Python code before the last read of these */
            PyObject *entry = pack(f[F_TIME], f[F_PID], f[F_LINE], f[F_PRIORITY], f[F_FUNC],
                                   f[F_MESSAGE], f[F_RELAYED] == Py_True ? f[F_SOURCE] : NULL);
            if (entry != NULL || PyErr_Occurred())
                return entry;
        }
    }
    return defer(py_pack_record, &rec, 1, NULL);
}

/* ------------------------------------------------------------------ the call site */

PyDoc_STRVAR(pack_here_doc,
"pack_here($module, priority, msg, args, pid, depth, /)\n--\n\n"
"The ring entry of a call depth frames above the caller (msg % args, now, that frame's\n"
"function and line): the library's debug path, with no Record.");

static PyObject *
pack_here(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs != 5 || !PyTuple_CheckExact(args[2]) || !PyLong_Check(args[4]))
        return defer(py_pack_here, args, nargs, kwnames);
    long depth = PyLong_AsLong(args[4]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    PyObject *func, *line;
    if (call_site(depth, &func, &line, NULL) < 0)
        return NULL;
    PyObject *message = PyTuple_GET_SIZE(args[2]) ? PyNumber_Remainder(args[1], args[2])
                                                  : PyObject_Str(args[1]);
    PyObject *when = NULL, *entry = NULL;
    if (message == NULL)
        goto done;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    when = PyFloat_FromDouble((double)now.tv_sec + (double)now.tv_nsec * 1e-9);
    if (when == NULL)
        goto done;
    entry = pack(when, args[3], line, args[0], func, message, NULL);
    if (entry == NULL && !PyErr_Occurred()) {
        PyObject *parts[6] = {when, args[3], line, args[0], func, message};
        entry = defer(py_pack_parts, parts, 6, NULL);
    }
done:
    Py_XDECREF(when);
    Py_XDECREF(message);
    Py_XDECREF(line);
    Py_DECREF(func);
    return entry;
}

/* ------------------------------------------------------------------ dump */

PyDoc_STRVAR(entry_text_doc,
"entry_text($module, entry, /)\n--\n\n"
"The text line of a ring entry, packed or not.");

static PyObject *
entry_text(PyObject *module, PyObject *entry)
{
    if (!PyBytes_CheckExact(entry))
        return defer(py_entry_text, &entry, 1, NULL);
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(entry);
    Py_ssize_t n = PyBytes_GET_SIZE(entry);
    if (n == 0 || s[0] > PACKED_MARK)
        return PyUnicode_DecodeUTF8((const char *)s, n, "surrogateescape");
    if (s[0] != PACKED_MARK || n < PACKED_SIZE)     /* an older version's, or cut short */
        return defer(py_entry_text, &entry, 1, NULL);

    double when = PyFloat_Unpack8((const char *)s + 1, 1);
    if (when == -1.0 && PyErr_Occurred())
        return NULL;
    /* int32 little-endian; via unsigned, since shifting into the sign bit is undefined */
    int32_t pid = (int32_t)((uint32_t)s[9] | (uint32_t)s[10] << 8 | (uint32_t)s[11] << 16
                            | (uint32_t)s[12] << 24);
    uint32_t line = (uint32_t)s[13] | (uint32_t)s[14] << 8 | (uint32_t)s[15] << 16
                    | (uint32_t)s[16] << 24;
    int level = s[17], relayed = s[18] != 0;
    uint64_t func_len = (uint64_t)s[19] | (uint64_t)s[20] << 8 | (uint64_t)s[21] << 16
                        | (uint64_t)s[22] << 24;
    uint64_t source_len = (uint64_t)s[23] | (uint64_t)s[24] << 8 | (uint64_t)s[25] << 16
                          | (uint64_t)s[26] << 24;
    double product = when * 1000.0;
    if (level < 1 || level > 4 || !(product > -1.0 && product < (LAST_SECOND + 1) * 1000.0))
        return defer(py_entry_text, &entry, 1, NULL);

    /* slices past the end are short or empty, as in Python; the source starts after the
     * declared func, the message after the declared source (relayed or not) */
    uint64_t rest = (uint64_t)(n - PACKED_SIZE);
    uint64_t func_at = 0, func_end = func_len < rest ? func_len : rest;
    uint64_t source_at = func_len < rest ? func_len : rest;
    uint64_t source_end = func_len + source_len < rest ? func_len + source_len : rest;
    uint64_t message_at = source_end;
    char prefix[PREFIX_MAX];
    Py_ssize_t prefix_len = make_prefix((long long)product, pid, level, prefix);
    if (prefix_len < 0)
        return defer(py_entry_text, &entry, 1, NULL);
    const char *body = (const char *)s + PACKED_SIZE;
    PyObject *func = NULL, *source = NULL, *message = NULL, *result = NULL;
    if (func_end > func_at
            && (func = PyUnicode_DecodeUTF8(body + func_at, (Py_ssize_t)(func_end - func_at),
                                            "surrogateescape")) == NULL)
        goto done;
    if (relayed && (source = PyUnicode_DecodeUTF8(body + source_at,
                                                  (Py_ssize_t)(source_end - source_at),
                                                  "surrogateescape")) == NULL)
        goto done;
    if ((message = PyUnicode_DecodeUTF8(body + message_at, (Py_ssize_t)(rest - message_at),
                                        "surrogateescape")) == NULL)
        goto done;
    result = build_line(prefix, prefix_len, source, func, line, message);
done:
    Py_XDECREF(func);
    Py_XDECREF(source);
    Py_XDECREF(message);
    return result;
}

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"format_line", (PyCFunction)(void (*)(void))format_line, METH_FASTCALL | METH_KEYWORDS,
     format_line_doc},
    {"pack_record", pack_record, METH_O, pack_record_doc},
    {"pack_parts", (PyCFunction)(void (*)(void))pack_parts, METH_FASTCALL | METH_KEYWORDS,
     pack_parts_doc},
    {"pack_here", (PyCFunction)(void (*)(void))pack_here, METH_FASTCALL | METH_KEYWORDS,
     pack_here_doc},
    {"entry_text", entry_text, METH_O, entry_text_doc},
    {"setup", setup, METH_VARARGS,
     "setup(Record, NAMES, format_line, pack_record, pack_parts, entry_text, pack_here)\n\n"
     "The record class, the level names and the pure-Python functions that take whatever\n"
     "is not the common case; textformat.py calls it once."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ctext",
    "C twin of virlogd.textformat's per-record functions (see textformat.py).", -1, methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__ctext(void) { return PyModule_Create(&module); }
