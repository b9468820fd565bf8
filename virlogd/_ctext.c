/* Placeholder: the C twin of text (to be written). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ctext", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__ctext(void) { return PyModule_Create(&module); }
