"""The runtime layer: how napari-sam runs on this machine, apart from what it computes.

- `cpu.tune_cpu()`: the opt-in tuning of the process (threads, OpenMP wait policy, glibc
  allocator); never called on import or by a `Predictor`.
- `kernels`: the fused CPU kernels with their plain fallbacks, the tensors derived from the
  weights that they keep, and per-thread scratch buffers.

Importing this package imports nothing else (not even torch).
"""
