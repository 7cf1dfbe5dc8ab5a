// gaussian_augment(x, copies, sigma, clip_min, clip_max, include_original, seed, offset, out_dtype): Gaussian data
// augmentation in one pass. The output holds the originals (when include_original) and then `copies` noisy copies
// of the batch: row c * B + b of the noisy part is clip(x[b] + sigma * noise(seed, c, offset + b)), where the noise
// of each element depends only on (seed, copy, global sample index offset + b, feature index); see csrc/philox.h
// and nemesis_fast/reference/gaussian_augment.py. uint8 input is scaled to [0, 1]. It has no gradient.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nemesis_fast, m) {
  m.def(
      "gaussian_augment(Tensor x, int copies, float sigma, float? clip_min, float? clip_max, bool include_original, "
      "int seed, SymInt offset, ScalarType? out_dtype) -> Tensor");
}
