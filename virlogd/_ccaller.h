/* The call site of a log call, for the twins that take it themselves (_ctext.pack_here,
 * _cwire.here_at): the function, line and file of the frame `depth` levels above the
 * Python function that called the C function, as sys._getframe(depth) would see it from
 * there.
 *
 * The line is cached by (code, instruction) from 3.11 on: there f_lineno walks the code's
 * line table from its start, which costs microseconds in a long function (2.7 µs at line 400
 * on these machines), and a program logs from the same few places over and over. An entry
 * holds a reference to its code object, so the address cannot be reused by another code
 * object while it is cached. Each module that includes this has its own cache.
 */
#ifndef VIRLOGD_CCALLER_H
#define VIRLOGD_CCALLER_H

#include <Python.h>
#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h>     /* PyFrame_GetBack: declared by Python.h only from 3.11 */
#endif
#include <stdint.h>

#include "_ccompat.h"

#if PY_VERSION_HEX >= 0x030B0000
#define VIRLOGD_LINE_CACHE_SIZE 256
static struct { PyObject *code; int lasti; int line; } line_cache[VIRLOGD_LINE_CACHE_SIZE];

static int
frame_line(PyFrameObject *frame, PyCodeObject *code)
{
    int lasti = PyFrame_GetLasti(frame);
    size_t slot = (((uintptr_t)code >> 4) ^ ((size_t)(unsigned)lasti * 2654435761u))
                  % VIRLOGD_LINE_CACHE_SIZE;
    if (line_cache[slot].code == (PyObject *)code && line_cache[slot].lasti == lasti)
        return line_cache[slot].line;
    int line = PyFrame_GetLineNumber(frame);
    PyObject *old = line_cache[slot].code;
    line_cache[slot].code = Py_NewRef(code);
    line_cache[slot].lasti = lasti;
    line_cache[slot].line = line;
    Py_XDECREF(old);           /* last: freeing a code object may run Python code */
    return line;
}
#else
static int
frame_line(PyFrameObject *frame, PyCodeObject *code)
{
    (void)code;
    return PyFrame_GetLineNumber(frame);
}
#endif

/* New references to the function name, the line (an int, or None when the code does not
 * know it) and, when file is not NULL, the
 * file name; -1 with ValueError as sys._getframe raises it. */
static int
call_site(long depth, PyObject **func, PyObject **line, PyObject **file)
{
    if (depth < 0) {
        PyErr_SetString(PyExc_ValueError, "depth must be 0 or more");
        return -1;
    }
    /* the current frame is the caller's (a C function has none) */
    PyFrameObject *frame = PyEval_GetFrame();
    Py_XINCREF(frame);
    for (long i = 0; i < depth && frame != NULL; i++)
        Py_SETREF(frame, PyFrame_GetBack(frame));
    if (frame == NULL) {
        PyErr_SetString(PyExc_ValueError, "call stack is not deep enough");
        return -1;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    int number = frame_line(frame, code);
    /* an unknown line is None, as f_lineno gives it */
    *line = number < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(number);
    Py_DECREF(frame);
    if (*line == NULL) {
        Py_DECREF(code);
        return -1;
    }
    *func = Py_NewRef(code->co_name);
    if (file != NULL)
        *file = Py_NewRef(code->co_filename);
    Py_DECREF(code);
    return 0;
}

#endif
