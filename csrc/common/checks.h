// Argument checks shared by every binding: readable messages that name the argument and what
// was expected. They throw c10::Error, which pybind11 turns into a Python RuntimeError
// (TORCH_CHECK_VALUE -> ValueError, TORCH_CHECK_TYPE -> TypeError).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <sstream>
#include <string>
#include <vector>

namespace fastrnn {

inline std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// Checks `t` has exactly `expected` sizes (a -1 entry matches anything).
inline void check_shape(const at::Tensor& t, const char* name, std::vector<int64_t> expected) {
  bool ok = t.dim() == static_cast<int64_t>(expected.size());
  for (size_t i = 0; ok && i < expected.size(); ++i)
    ok = expected[i] < 0 || t.size(i) == expected[i];
  TORCH_CHECK_VALUE(ok, "fastrnn: ", name, " must have shape ", shape_str(expected), ", got ",
                    shape_str(t.sizes()));
}

inline void check_same(const at::Tensor& t, const char* name, const at::Tensor& ref,
                       const char* ref_name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "fastrnn: ", name, " has dtype ",
                   t.scalar_type(), " but ", ref_name, " has dtype ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "fastrnn: ", name, " is on ", t.device(), " but ",
              ref_name, " is on ", ref.device());
}

inline void check_opt(const c10::optional<at::Tensor>& t, const char* name, const at::Tensor& ref,
                      const char* ref_name, std::vector<int64_t> expected) {
  if (t.has_value() && t->defined()) {
    check_same(*t, name, ref, ref_name);
    check_shape(*t, name, std::move(expected));
  }
}

inline bool defined(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

}  // namespace fastrnn
