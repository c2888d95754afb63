// Registration hooks of the fastxlt._C extension.
//
// Each hot path lives in its own csrc/<feature>.cpp and exposes exactly one
// `register_<feature>(module)` function declared here; module.cpp calls them all.
// To add a feature (e.g. QA n-best span decoding): write csrc/<feature>.cpp,
// declare its register function below and call it from module.cpp. CMake picks
// up every csrc/*.cpp on its own.
#pragma once

#include <pybind11/pybind11.h>

namespace fastxlt {

// csrc/build_info.cpp: build_info() -> dict (compiler, C++ standard, OpenMP).
void register_build_info(pybind11::module_& m);

// csrc/batching.cpp: pack_batches(lengths, token_budget, max_batch_size).
void register_batching(pybind11::module_& m);

// csrc/span_decode.cpp: decode_spans(...) -> n-best QA answer spans of many questions.
void register_span_decode(pybind11::module_& m);

// csrc/dropout.cpp: philox_words, dropout_forward_{f32,bf16}, dropout_apply_{f32,bf16} (fused CPU dropout).
void register_dropout(pybind11::module_& m);

}  // namespace fastxlt
