"""Fast CPU kernels: NumPy tuned for cache and BLAS, each registered under its reference op."""
