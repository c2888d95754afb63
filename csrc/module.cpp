// Entry point of the fastxlt._C extension: one module, one register call per feature.
#include <pybind11/pybind11.h>

#include "features.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastxlt C++ hot paths (numpy in, numpy out). Python wrappers live in fastxlt/*.";
  fastxlt::register_build_info(m);
  fastxlt::register_batching(m);
  fastxlt::register_span_decode(m);
  fastxlt::register_dropout(m);
}
