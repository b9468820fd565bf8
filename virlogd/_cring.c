/* Placeholder: the C twin of ring (to be written). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cring", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__cring(void) { return PyModule_Create(&module); }
