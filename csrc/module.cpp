// The extension module nemesis_fast._C. It holds no Python functions: importing it runs the static
// initialisers that register the operators. Each op declares its schema in csrc/<op>.cpp and its kernels
// in csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu.
#include <Python.h>
#include <torch/library.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(nemesis_fast, m) {
  // Schemas are added by TORCH_LIBRARY_FRAGMENT blocks, one per op.
  (void)m;
}
