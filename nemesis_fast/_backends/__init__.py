"""One module per op: fake kernels and autograd for its custom ops, and its backend table."""
