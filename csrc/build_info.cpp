// build_info(): how this extension was compiled.
//
// Why: a slow or misbehaving post-processing step is often a build problem
// (no OpenMP, a debug build, an old compiler). Reports and bug notes print this
// dict so the build is visible without digging through pip logs.
#include <pybind11/pybind11.h>

#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "features.h"

namespace py = pybind11;

namespace fastxlt {
namespace {

std::string compiler_name() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

py::dict build_info() {
  py::dict info;
  info["compiler"] = compiler_name();
  info["cplusplus"] = static_cast<long>(__cplusplus);
#ifdef NDEBUG
  info["debug"] = false;
#else
  info["debug"] = true;
#endif
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_version"] = static_cast<long>(_OPENMP);
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_version"] = py::none();
  info["openmp_max_threads"] = 1;
#endif
  info["pybind11_version"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." +
                             std::to_string(PYBIND11_VERSION_MINOR) + "." +
                             std::to_string(PYBIND11_VERSION_PATCH);
  return info;
}

}  // namespace

void register_build_info(py::module_& m) {
  m.def("build_info", &build_info,
        "Compiler, C++ standard, debug flag, OpenMP availability and pybind11 version of this build.");
}

}  // namespace fastxlt
