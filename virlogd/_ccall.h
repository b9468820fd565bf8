/* The arguments of a C object called as Python's "def __call__(self, record, line="", /)"
 * (or "line, /" when the line is required), with Python's TypeError messages word for word,
 * so that a twin's wrong call reads as its Python twin's. Shared by FrameSender (_cwire.c)
 * and LineAppender (_croute.c), the objects outputs hand the router as their handle().
 */
#ifndef VIRLOGD_CCALL_H
#define VIRLOGD_CCALL_H

#include <Python.h>
#include <string.h>

/* 0, or -1 with TypeError; *who* is "Type.__call__()", *need* 1 or 2 positional arguments.
 * CPython's order: positional-only names given by keyword, then an unknown keyword, then
 * too many positional arguments, then missing ones. */
static int
record_line_arguments(const char *who, int need, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[3] = {"self", "record", "line"};
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *unknown = NULL;
    int given[3] = {0, 0, 0}, any = 0;

#if PY_VERSION_HEX < 0x030A0000
    who = "__call__()";          /* 3.9 names the bare function in these messages */
#endif
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int i = 0;
        while (i < 3 && PyUnicode_CompareWithASCIIString(name, names[i]) != 0)
            i++;
        if (i < 3)
            given[i] = any = 1;
        else if (unknown == NULL)
            unknown = name;
    }
    if (any) {
        /* the positional-only names given by keyword, in the signature's order */
        char listed[32] = "";
        for (int i = 0; i < 3; i++) {
            if (given[i]) {
                if (listed[0])
                    strcat(listed, ", ");
                strcat(listed, names[i]);
            }
        }
        PyErr_Format(PyExc_TypeError, "%s got some positional-only arguments passed as "
                     "keyword arguments: '%s'", who, listed);
        return -1;
    }
    if (unknown != NULL) {
        PyErr_Format(PyExc_TypeError, "%s got an unexpected keyword argument '%U'", who,
                     unknown);
        return -1;
    }
    if (nargs > 2) {
        if (need == 2)
            PyErr_Format(PyExc_TypeError,
                         "%s takes 3 positional arguments but %zd were given", who, nargs + 1);
        else
            PyErr_Format(PyExc_TypeError,
                         "%s takes from 2 to 3 positional arguments but %zd were given", who,
                         nargs + 1);
        return -1;
    }
    if (nargs < need) {
        if (need - nargs == 2)
            PyErr_Format(PyExc_TypeError, "%s missing 2 required positional arguments: "
                         "'record' and 'line'", who);
        else
            PyErr_Format(PyExc_TypeError, "%s missing 1 required positional argument: '%s'",
                         who, nargs == 0 ? "record" : "line");
        return -1;
    }
    return 0;
}

#endif
