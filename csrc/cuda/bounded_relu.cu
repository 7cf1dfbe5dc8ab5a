// CUDA kernels of bounded_relu: ATen's gpu_kernel over a TensorIterator (vectorised loads for contiguous
// data, any strides otherwise, 64-bit indexing by splitting), launched on the current stream.
#include <ATen/Dispatch.h>
#include <ATen/native/cuda/Loops.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "bounded_relu.h"

namespace nemesis_fast::bounded_relu {
namespace {

at::Tensor forward_cuda(const at::Tensor& x, double t) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out;
  auto iter = forward_iterator(x, t, out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bounded_relu_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t top = rounded_threshold<scalar_t>(t);
    at::native::gpu_kernel(iter, [top] GPU_LAMBDA(scalar_t v) -> scalar_t {
      return static_cast<scalar_t>(forward(static_cast<opmath_t>(v), top));
    });
  });
  return out;
}

at::Tensor backward_cuda(const at::Tensor& grad, const at::Tensor& out, double t) {
  const c10::cuda::CUDAGuard guard(out.device());
  at::Tensor grad_in;
  auto iter = backward_iterator(grad, out, t, grad_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "bounded_relu_backward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t top = rounded_threshold<scalar_t>(t);
    at::native::gpu_kernel(iter, [top] GPU_LAMBDA(scalar_t g, scalar_t o) -> scalar_t {
      return passes_gradient(static_cast<opmath_t>(o), top) ? g : scalar_t(0);
    });
  });
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(nemesis_fast, CUDA, m) {
  m.impl("bounded_relu", &forward_cuda);
  m.impl("bounded_relu_backward", &backward_cuda);
}

}  // namespace nemesis_fast::bounded_relu
