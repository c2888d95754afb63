// pack_batches: length-sorted token-budget batching for evaluation.
//
// Why: evaluation pads every batch to its longest row, so grouping rows of similar
// length and sizing each batch by a token budget (rows x longest row) keeps the
// padded tensor small and the per-batch cost even. The Python oracle is
// fastxlt.evaluation.batching.pack_batches_reference; both must agree exactly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "features.h"

namespace py = pybind11;

namespace fastxlt {
namespace {

using Int64Array = py::array_t<int64_t, py::array::c_style>;

void validate(const Int64Array& lengths, int64_t token_budget, int64_t max_batch_size) {
  if (lengths.ndim() != 1) {
    throw py::value_error("pack_batches: lengths must be a 1-D array, got " +
                          std::to_string(lengths.ndim()) + " dimensions; flatten it first");
  }
  if (token_budget < 1) {
    throw py::value_error("pack_batches: token_budget must be >= 1, got " +
                          std::to_string(token_budget));
  }
  if (max_batch_size < 1) {
    throw py::value_error("pack_batches: max_batch_size must be >= 1, got " +
                          std::to_string(max_batch_size));
  }
  const int64_t* data = lengths.data();
  for (py::ssize_t i = 0; i < lengths.shape(0); ++i) {
    if (data[i] < 0) {
      throw py::value_error("pack_batches: lengths must be >= 0, got " + std::to_string(data[i]) +
                            " at index " + std::to_string(i));
    }
  }
}

// Indices sorted by length, longest first; ties keep input order (stable).
std::vector<int64_t> sort_longest_first(const int64_t* lengths, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [lengths](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  return order;
}

// Greedy cut of the sorted rows. The first row of a batch is its longest, so a batch
// of `size` rows pads to size * first_length tokens. `size <= budget / longest` is the
// overflow-free form of `size * longest <= budget`. The first row is always taken, so
// a row longer than the budget ends up alone.
std::vector<int64_t> cut_batches(const int64_t* lengths, const std::vector<int64_t>& order,
                                 int64_t token_budget, int64_t max_batch_size) {
  const int64_t n = static_cast<int64_t>(order.size());
  std::vector<int64_t> offsets{0};
  int64_t start = 0;
  while (start < n) {
    const int64_t longest = lengths[order[start]];
    int64_t cap = longest > 0 ? token_budget / longest : max_batch_size;
    cap = std::max<int64_t>(1, std::min(cap, max_batch_size));
    const int64_t end = std::min(n, start + cap);
    offsets.push_back(end);
    start = end;
  }
  return offsets;
}

// Hands the vector's buffer to numpy without a copy; the capsule frees it with the array.
py::array_t<int64_t> to_numpy(std::vector<int64_t>&& values) {
  auto* owned = new std::vector<int64_t>(std::move(values));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<int64_t>*>(p); });
  return py::array_t<int64_t>(static_cast<py::ssize_t>(owned->size()), owned->data(), free_when_done);
}

py::tuple pack_batches(const Int64Array& lengths, int64_t token_budget, int64_t max_batch_size) {
  validate(lengths, token_budget, max_batch_size);
  const int64_t n = lengths.shape(0);
  const int64_t* data = lengths.data();
  std::vector<int64_t> order;
  std::vector<int64_t> offsets;
  {
    py::gil_scoped_release no_gil;
    order = sort_longest_first(data, n);
    offsets = cut_batches(data, order, token_budget, max_batch_size);
  }
  return py::make_tuple(to_numpy(std::move(order)), to_numpy(std::move(offsets)));
}

}  // namespace

void register_batching(py::module_& m) {
  m.def("pack_batches", &pack_batches, py::arg("lengths"), py::arg("token_budget"),
        py::arg("max_batch_size"),
        "Sort rows longest first (stable) and cut batches with rows * longest <= token_budget and\n"
        "rows <= max_batch_size; a row longer than the budget gets its own batch.\n"
        "Returns (order, offsets): batch b holds rows order[offsets[b]:offsets[b+1]].");
}

}  // namespace fastxlt
