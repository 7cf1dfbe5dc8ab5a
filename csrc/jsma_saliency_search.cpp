// jsma_saliency_search(target_grad, other_grad, search_domain, increase) -> (p, q, found): per sample, the pair
// of features p < q in the search domain with the highest JSMA saliency score (Papernot et al. 2016), found by
// scanning the pairs in tiles and keeping the running best: O(B * n) extra memory, never an n x n matrix.
// The meaning is nemesis_fast/reference/jsma_saliency_search.py; the per-pair math is in the header.
// Integer outputs: the op has no autograd.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nemesis_fast, m) {
  m.def(
      "jsma_saliency_search(Tensor target_grad, Tensor other_grad, Tensor search_domain, bool increase) -> "
      "(Tensor p, Tensor q, Tensor found)");
}
