/* What the C twins use from CPython that older versions name differently.
 *
 * Debian bullseye's Python is 3.9: Py_NewRef is 3.10's, and PyFloat_Pack8 / PyFloat_Unpack8
 * became public in 3.11 (before that they were the private _PyFloat_Pack8 / _PyFloat_Unpack8
 * with unsigned char pointers). The twins are optional extensions, so without these a 3.9
 * build would fail quietly and every hot path would fall back to pure Python.
 */
#ifndef VIRLOGD_CCOMPAT_H
#define VIRLOGD_CCOMPAT_H

#include <Python.h>

#if PY_VERSION_HEX < 0x030A0000
/* its own name under the macro, as 3.10 does it: nothing to clash with a declaration */
static inline PyObject *
virlogd_new_ref(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}
#define Py_NewRef(obj) virlogd_new_ref((PyObject *)(obj))
#endif

#if PY_VERSION_HEX < 0x030B0000
#define PyFloat_Pack8(x, p, le) _PyFloat_Pack8((x), (unsigned char *)(p), (le))
#define PyFloat_Unpack8(p, le) _PyFloat_Unpack8((const unsigned char *)(p), (le))
#endif

/* Strings made by old C extensions may not be "ready" before 3.12; KIND/DATA need it. */
#if PY_VERSION_HEX < 0x030C0000
#define VIRLOGD_UNICODE_READY(s) PyUnicode_READY(s)
#else
#define VIRLOGD_UNICODE_READY(s) 0
#endif

#endif
