"""The runtime layer: how napari-sam runs on this machine, apart from what it computes.

`cpu.tune_cpu()` is the opt-in tuning of the process (threads, OpenMP wait policy, glibc
allocator). Importing this package imports nothing else (not even torch).
"""
