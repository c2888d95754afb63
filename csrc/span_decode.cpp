// decode_spans: n-best answer-span decoding for extractive QA over many questions at once.
//
// Why: the Hugging Face post-processing loops in Python over the top-n start x top-n end tokens of
// every window of every question; on CPU that loop costs more than nothing else in QA evaluation.
// Here it runs in C++ with OpenMP over questions. The oracle is
// fastxlt.tasks.span_decode.decode_spans_reference; the algorithm (and its total tie order) is
// described there and both must return identical arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "features.h"

namespace py = pybind11;

namespace fastxlt {
namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

struct Candidate {
  float score;
  int64_t feature;
  int64_t start;  // token index inside the window
  int64_t end;
};

// Score descending, then window, start, end ascending: a total order, identical to the reference.
bool better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.feature != b.feature) return a.feature < b.feature;
  if (a.start != b.start) return a.start < b.start;
  return a.end < b.end;
}

// The k highest of n strided values (indices into `out`), highest first; equal values: lower index
// first. One pass with a small sorted buffer: once it is full, almost every value is rejected by one
// comparison with the k-th; `kept` holds the buffered values so that no comparison reads back.
void top_k(const float* values, int64_t stride, int64_t n, int64_t k, std::vector<int64_t>& out,
           std::vector<float>& kept) {
  out.resize(static_cast<size_t>(k));
  kept.resize(static_cast<size_t>(k));
  int64_t size = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = values[i * stride];
    if (size == k) {
      if (!(x > kept[k - 1])) continue;  // an equal value keeps the earlier index
      --size;
    }
    int64_t j = size;
    while (j > 0 && kept[j - 1] < x) {
      kept[j] = kept[j - 1];
      out[j] = out[j - 1];
      --j;
    }
    kept[j] = x;
    out[j] = i;
    ++size;
  }
  out.resize(static_cast<size_t>(size));
}

struct Inputs {
  const float* logits;  // (tokens, 2): start, end
  const int64_t* context;  // (windows, 2): [begin, end)
  const int64_t* token_offsets;
  const int64_t* example_offsets;
  int64_t n_best;
  int64_t max_answer_length;
};

struct Outputs {
  int64_t* count;
  float* score;
  int64_t* feature;
  int64_t* start_token;
  int64_t* end_token;
  float* null_score;
};

// Keeps the n best candidates seen so far, best first (a sorted small buffer).
class BestCandidates {
 public:
  explicit BestCandidates(int64_t n) : n_(static_cast<size_t>(n)) {}
  void clear() { items_.clear(); }
  bool full() const { return items_.size() == n_; }
  float worst_score() const { return items_.back().score; }
  const std::vector<Candidate>& items() const { return items_; }

  void offer(const Candidate& c) {
    if (full()) {
      if (!better(c, items_.back())) return;
      items_.pop_back();
    }
    auto position = items_.end();
    while (position != items_.begin() && better(c, *(position - 1))) --position;
    items_.insert(position, c);
  }

 private:
  size_t n_;
  std::vector<Candidate> items_;
};

void decode_one(const Inputs& in, const Outputs& out, int64_t q, BestCandidates& best,
                std::vector<int64_t>& starts, std::vector<int64_t>& ends, std::vector<float>& scratch) {
  best.clear();
  float null_score = std::numeric_limits<float>::quiet_NaN();
  bool has_null = false;
  for (int64_t f = in.example_offsets[q]; f < in.example_offsets[q + 1]; ++f) {
    const int64_t a = in.token_offsets[f];
    const int64_t length = in.token_offsets[f + 1] - a;
    if (length == 0) continue;
    const float* start = in.logits + 2 * a;
    const float* end = start + 1;
    const int64_t begin = in.context[2 * f], stop = in.context[2 * f + 1];
    const float window_null = start[0] + end[0];
    if (!has_null || window_null < null_score) {
      null_score = window_null;
      has_null = true;
    }
    top_k(start, 2, length, in.n_best, starts, scratch);
    top_k(end, 2, length, in.n_best, ends, scratch);
    // Every pair is offered in the reference's order. Both lists are sorted by logit, so once a
    // score falls strictly below the n-th best, every later end (and every later start, paired with
    // the highest end) scores no more: the rest of the loop cannot change the kept list.
    for (int64_t s : starts) {
      if (best.full() && start[2 * s] + end[2 * ends.front()] < best.worst_score()) break;
      if (s < begin || s >= stop) continue;
      for (int64_t e : ends) {
        const float score = start[2 * s] + end[2 * e];
        if (best.full() && score < best.worst_score()) break;
        if (e < s || e >= stop || e - s + 1 > in.max_answer_length) continue;  // s >= begin already
        best.offer({score, f, s, e});
      }
    }
  }
  const auto& kept = best.items();
  out.count[q] = static_cast<int64_t>(kept.size());
  out.null_score[q] = null_score;
  for (size_t k = 0; k < kept.size(); ++k) {
    const Candidate& c = kept[k];
    const int64_t row = q * in.n_best + static_cast<int64_t>(k);
    out.score[row] = c.score;
    out.feature[row] = c.feature;
    out.start_token[row] = c.start;
    out.end_token[row] = c.end;
  }
}

void check_offsets(const Int64Array& offsets, int64_t last, const char* name, const char* what) {
  if (offsets.ndim() != 1) {
    throw py::value_error(std::string("decode_spans: ") + name + " must be 1-D; pack the windows with span_decode.pack");
  }
  const int64_t* data = offsets.data();
  const int64_t n = offsets.shape(0);
  if (n < 1 || data[0] != 0 || data[n - 1] != last) {
    throw py::value_error(std::string("decode_spans: ") + name + " must start at 0 and end at the number of " +
                          what + " (" + std::to_string(last) + "); pack the windows with span_decode.pack");
  }
  for (int64_t i = 1; i < n; ++i) {
    if (data[i] < data[i - 1]) {
      throw py::value_error(std::string("decode_spans: ") + name + " decreases at index " + std::to_string(i));
    }
  }
}

void check_context(const Int64Array& context, const Int64Array& token_offsets) {
  const int64_t windows = token_offsets.shape(0) - 1;
  if (context.ndim() != 2 || context.shape(0) != windows || context.shape(1) != 2) {
    throw py::value_error("decode_spans: context must have shape (windows, 2) = [begin, end) per window");
  }
  const int64_t* range = context.data();
  const int64_t* offsets = token_offsets.data();
  for (int64_t f = 0; f < windows; ++f) {
    if (range[2 * f] < 0 || range[2 * f + 1] < range[2 * f] || range[2 * f + 1] > offsets[f + 1] - offsets[f]) {
      throw py::value_error("decode_spans: context range of window " + std::to_string(f) +
                            " is not within 0 <= begin <= end <= window length");
    }
  }
}

template <typename T>
py::array_t<T> filled(std::vector<py::ssize_t> shape, T value) {
  py::array_t<T> array(shape);
  std::fill(array.mutable_data(), array.mutable_data() + array.size(), value);
  return array;
}

py::dict decode_spans(const FloatArray& logits, const Int64Array& context, const Int64Array& token_offsets,
                      const Int64Array& example_offsets, int64_t n_best, int64_t max_answer_length) {
  if (logits.ndim() != 2 || logits.shape(1) != 2) {
    throw py::value_error("decode_spans: logits must have shape (tokens, 2); pack the windows with span_decode.pack");
  }
  if (n_best < 1 || max_answer_length < 1) {
    throw py::value_error("decode_spans: n_best and max_answer_length must be >= 1");
  }
  check_offsets(token_offsets, logits.shape(0), "token_offsets", "tokens");
  check_offsets(example_offsets, token_offsets.shape(0) - 1, "example_offsets", "windows");
  check_context(context, token_offsets);

  const int64_t questions = example_offsets.shape(0) - 1;
  auto count = filled<int64_t>({questions}, 0);
  auto score = filled<float>({questions, n_best}, std::numeric_limits<float>::quiet_NaN());
  auto feature = filled<int64_t>({questions, n_best}, -1);
  auto start_token = filled<int64_t>({questions, n_best}, -1);
  auto end_token = filled<int64_t>({questions, n_best}, -1);
  auto null_score = filled<float>({questions}, std::numeric_limits<float>::quiet_NaN());

  const Inputs in{logits.data(), context.data(), token_offsets.data(), example_offsets.data(), n_best,
                  max_answer_length};
  const Outputs out{count.mutable_data(), score.mutable_data(), feature.mutable_data(),
                    start_token.mutable_data(), end_token.mutable_data(), null_score.mutable_data()};
  {
    py::gil_scoped_release no_gil;
#pragma omp parallel if (questions > 256)
    {
      BestCandidates best(n_best);
      std::vector<int64_t> starts, ends;
      std::vector<float> scratch;
#pragma omp for schedule(dynamic, 64)
      for (int64_t q = 0; q < questions; ++q) {
        decode_one(in, out, q, best, starts, ends, scratch);
      }
    }
  }
  py::dict result;
  result["count"] = count;
  result["score"] = score;
  result["feature"] = feature;
  result["start_token"] = start_token;
  result["end_token"] = end_token;
  result["null_score"] = null_score;
  return result;
}

}  // namespace

void register_span_decode(py::module_& m) {
  m.def("decode_spans", &decode_spans, py::arg("logits"), py::arg("context"), py::arg("token_offsets"),
        py::arg("example_offsets"), py::arg("n_best"), py::arg("max_answer_length"),
        "N-best answer spans of many questions (see fastxlt.tasks.span_decode for the layout and the\n"
        "algorithm). Returns a dict of numpy arrays: count (Q,), score/feature/start_token/end_token\n"
        "(Q, n_best), null_score (Q,).");
}

}  // namespace fastxlt
