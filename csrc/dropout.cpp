// Fused CPU dropout: Philox4x32-10 keep masks, generated, compared and applied in one pass.
//
// Why: torch's CPU dropout draws each element's Bernoulli sample serially and then multiplies in two more passes;
// in a bf16-autocast training step of an XLM-R-sized encoder on 2 cores that is 15-18 % of the step (issue 13).
// Philox (Salmon et al., SC'11; the generator CUDA and Triton use) is counter-based: element i's 32-bit word is
// word i % 4 of Philox4x32-10(counter = i / 4, key = seed), so any element is computed independently and the loop
// runs in parallel. An element is kept when its word is below `threshold` = round((1 - p) * 2^32).
//
// The torch reference, fastxlt.training.dropout.philox_words_reference, computes the same words with int64 tensor
// arithmetic; tests require both to agree bit for bit, and both to reproduce Random123's known-answer vectors.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "features.h"

namespace py = pybind11;

namespace fastxlt {
namespace {

constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;  // Philox4x32 multipliers
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // key schedule increments
constexpr int kRounds = 10;

struct Block {
  uint32_t v[4];
};

inline Block philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < kRounds; ++round) {
    if (round > 0) {
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
  }
  return Block{{c0, c1, c2, c3}};
}

inline float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

inline uint16_t float_to_bf16(float value) {  // round to nearest even, as torch's float -> bfloat16 conversion
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0u;  // torch's canonical NaN
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

template <typename T>
T* mutable_data(py::array_t<T, py::array::c_style>& array, const char* what) {
  if (!array.writeable()) throw py::value_error(std::string("dropout: ") + what + " must be writeable");
  return array.mutable_data();
}

void check_sizes(py::ssize_t a, py::ssize_t b, const char* what) {
  if (a != b) {
    throw py::value_error(std::string("dropout: ") + what + " has " + std::to_string(b) + " elements, expected " +
                          std::to_string(a));
  }
}

using U32Array = py::array_t<uint32_t, py::array::c_style>;
using F32Array = py::array_t<float, py::array::c_style>;
using U16Array = py::array_t<uint16_t, py::array::c_style>;
using BoolArray = py::array_t<bool, py::array::c_style>;

U32Array philox_words(int64_t count, uint64_t seed) {
  if (count < 0) throw py::value_error("philox_words: count must be >= 0, got " + std::to_string(count));
  U32Array words(count);
  uint32_t* out = words.mutable_data();
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const int64_t blocks = (count + 3) / 4;
  {
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const Block r = philox4x32(static_cast<uint32_t>(b), static_cast<uint32_t>(static_cast<uint64_t>(b) >> 32),
                                 0u, 0u, k0, k1);
      for (int j = 0; j < 4 && 4 * b + j < count; ++j) out[4 * b + j] = r.v[j];
    }
  }
  return words;
}

template <typename T>
inline float load(const T* data, int64_t i) {
  if constexpr (sizeof(T) == 2) {
    return bf16_to_float(data[i]);
  } else {
    return data[i];
  }
}

template <typename T>
inline T store(float value) {
  if constexpr (sizeof(T) == 2) {
    return float_to_bf16(value);
  } else {
    return value;
  }
}

// x * (keep ? scale : 0) without a branch (a data-dependent branch on a random mask mispredicts every tenth element)
inline float masked(float x, bool keep, float scale) { return x * (scale * static_cast<float>(keep)); }

// x -> out, keep: the fused forward (T: float, or uint16 holding bfloat16 bit patterns).
template <typename T>
void forward_impl(const T* __restrict__ x, T* __restrict__ out, bool* __restrict__ keep, int64_t count, uint64_t seed,
                  uint64_t threshold, float scale) {
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const int64_t blocks = (count + 3) / 4;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const Block r = philox4x32(static_cast<uint32_t>(b), static_cast<uint32_t>(static_cast<uint64_t>(b) >> 32),
                               0u, 0u, k0, k1);
    const int64_t first = 4 * b;
    const int words = count - first < 4 ? static_cast<int>(count - first) : 4;
    for (int j = 0; j < words; ++j) {
      const bool kept = static_cast<uint64_t>(r.v[j]) < threshold;
      keep[first + j] = kept;
      out[first + j] = store<T>(masked(load(x, first + j), kept, scale));
    }
  }
}

template <typename T>
void apply_impl(const T* __restrict__ grad, T* __restrict__ out, const bool* __restrict__ keep, int64_t count,
                float scale) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) out[i] = store<T>(masked(load(grad, i), keep[i], scale));
}

template <typename T>
void dropout_forward(py::array_t<T, py::array::c_style> x, py::array_t<T, py::array::c_style> out, BoolArray keep,
                     uint64_t seed, uint64_t threshold, float scale) {
  check_sizes(x.size(), out.size(), "out");
  check_sizes(x.size(), keep.size(), "keep");
  if (threshold > (uint64_t{1} << 32)) throw py::value_error("dropout: threshold must be <= 2^32");
  const T* in = x.data();
  T* result = mutable_data(out, "out");
  bool* mask = mutable_data(keep, "keep");
  py::gil_scoped_release release;
  forward_impl(in, result, mask, x.size(), seed, threshold, scale);
}

template <typename T>
void dropout_apply(py::array_t<T, py::array::c_style> grad, py::array_t<T, py::array::c_style> out, BoolArray keep,
                   float scale) {
  check_sizes(grad.size(), out.size(), "out");
  check_sizes(grad.size(), keep.size(), "keep");
  const T* in = grad.data();
  T* result = mutable_data(out, "out");
  const bool* mask = keep.data();
  py::gil_scoped_release release;
  apply_impl(in, result, mask, grad.size(), scale);
}

}  // namespace

void register_dropout(py::module_& m) {
  m.def("philox_words", &philox_words, py::arg("count"), py::arg("seed"),
        "Philox4x32-10 words 0..count-1 of key `seed` (word i = word i % 4 of the block with counter i / 4).");
  m.def("philox4x32", [](uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
        const Block r = philox4x32(c0, c1, c2, c3, k0, k1);
        return py::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
      }, "One Philox4x32-10 block (Random123's known-answer tests).");
  m.def("dropout_forward_f32", &dropout_forward<float>, py::arg("x"), py::arg("out"), py::arg("keep"),
        py::arg("seed"), py::arg("threshold"), py::arg("scale"),
        "out = x * (keep ? scale : 0) with keep[i] = philox word i < threshold (float32).");
  m.def("dropout_forward_bf16", &dropout_forward<uint16_t>, py::arg("x"), py::arg("out"), py::arg("keep"),
        py::arg("seed"), py::arg("threshold"), py::arg("scale"), "The same on bfloat16 bit patterns (uint16).");
  m.def("dropout_apply_f32", &dropout_apply<float>, py::arg("grad"), py::arg("out"), py::arg("keep"),
        py::arg("scale"), "out = grad * (keep ? scale : 0) with a given mask (the backward), float32.");
  m.def("dropout_apply_bf16", &dropout_apply<uint16_t>, py::arg("grad"), py::arg("out"), py::arg("keep"),
        py::arg("scale"), "The same on bfloat16 bit patterns (uint16).");
}

}  // namespace fastxlt
