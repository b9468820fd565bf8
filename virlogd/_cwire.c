/* Placeholder: the C twin of wire (to be written). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cwire", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__cwire(void) { return PyModule_Create(&module); }
