// Python's str() of the values that argument errors print, so that a check in C++ says exactly
// what its twin in Python says (the ops raise the same messages on every backend).
#pragma once
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

namespace seqkern {

// Python's str() of a list of ints.
inline std::string python_list(at::IntArrayRef values) {
  std::ostringstream text;
  text << "[";
  for (size_t i = 0; i < values.size(); ++i) {
    text << (i ? ", " : "") << values[i];
  }
  text << "]";
  return text.str();
}

// Python's str() of a tuple of ints: "(3,)" for one.
inline std::string python_tuple(at::IntArrayRef values) {
  std::string list = python_list(values);
  return "(" + list.substr(1, list.size() - 2) + (values.size() == 1 ? ",)" : ")");
}

// Python's str() of a dtype ("torch.int16").
inline std::string python_dtype(at::ScalarType dtype) { return "torch." + std::string(c10::getDtypeNames(dtype).first); }

// Python's str() of a float: integral values keep a ".0".
inline std::string python_float(double value) {
  std::ostringstream text;
  text << value;
  if (std::isfinite(value) && value == std::trunc(value) && std::fabs(value) < 1e16) {
    text << ".0";
  }
  return text.str();
}

}  // namespace seqkern
