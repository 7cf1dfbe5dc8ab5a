// bounded_relu(x, t) = min(max(x, 0), t), with t rounded to x's dtype.
// Its backward reads the saved output: the gradient is 1 where 0 < out < t and 0 elsewhere, which is the same
// set as 0 < x < t, so nothing beyond the output (which the next layer saves anyway) is kept for backward.
// bounded_relu_masked keeps 1 bit per element instead of the output, so that its backward reads 4.125 bytes per
// float32 element instead of 8 (the forward writes 0.125 more).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nemesis_fast, m) {
  m.def("bounded_relu(Tensor x, float t) -> Tensor", {at::Tag::pointwise});
  m.def("bounded_relu_backward(Tensor grad, Tensor out, float t) -> Tensor", {at::Tag::pointwise});
  // The same function, saving a bit-packed mask (1 bit per element, ceil(n / 8) bytes) instead of the output:
  // forward returns (out, mask); backward reads only grad and the mask. Bit j of byte k is 1 where element 8k + j
  // of out, in memory order, passes the gradient (0 < x < t); the bits past the last element are 0. out has x's
  // layout when x is gap-free, else it is contiguous; grad must have out's strides.
  m.def("bounded_relu_masked(Tensor x, float t) -> (Tensor, Tensor)");
  m.def("bounded_relu_masked_backward(Tensor grad, Tensor mask) -> Tensor");
}
