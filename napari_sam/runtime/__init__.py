"""The runtime layer: how napari-sam runs on this machine, apart from what it computes.

- `cpu.tune_cpu()`: the opt-in tuning of the process (threads, OpenMP wait policy, glibc
  allocator); never called on import or by a `Predictor`.
- `session.InferenceSession`: the one owner of the speed state of a model's calls (tensors
  derived from the weights, constants, scratch buffers, per-image caches), held by the
  predictors; while one is active the model modules run their fast forms.
- `kernels`: the fused CPU kernels (oneDNN linear with bias / activation / residual, stacked
  projections with a positional table), each with its plain fallback, and the session's
  stores as seen from model code.
- `vit_attention`, `two_way`: the fast forms of the ViT encoder's windowed attention and of
  SAM's mask decoder; the modules in `napari_sam.model` hold the plain forms.

Importing this package imports nothing else (not even torch).
"""
