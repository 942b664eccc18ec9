"""CPU tuning is opt-in: the library leaves the process as it found it, `tune_cpu()` and the
command line tune it (threads, OpenMP wait policy, glibc allocator)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter: whether torch is loaded, the environment, torch's thread count
# and glibc's thresholds are all per process. `torch.set_num_threads` is wrapped to record
# calls; a 64 MiB malloc tells whether glibc's mmap threshold is still its default (then
# such a block is mmapped, `mallinfo2().hblks` grows) or was raised by `allocator.tune`.
PRELUDE = textwrap.dedent("""
    import ctypes, json, os, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    def big_block_mmapped():
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "mallinfo2"):
            return None
        libc.mallinfo2.restype = MallInfo2
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        before = libc.mallinfo2().hblks
        block = libc.malloc(64 << 20)
        after = libc.mallinfo2().hblks
        libc.free(block)
        return after > before

    def record_thread_calls(torch):
        calls, original = [], torch.set_num_threads
        torch.set_num_threads = lambda n: (calls.append(n), original(n))[1]
        return calls
""")

LIBRARY = PRELUDE + textwrap.dedent("""
    env = dict(os.environ)
    import napari_sam
    out = {"torch_after_import": "torch" in sys.modules}
    import numpy as np
    import torch
    calls = record_thread_calls(torch)
    threads = torch.get_num_threads()
    from napari_sam import Predictor, build_model
    pred = Predictor(build_model("test_vit"), device="cpu", diameter="off")
    pred.set_image(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    pred.predict(points=[[10, 20]])
    pred.predict(box=[5, 5, 30, 40], multimask=False)
    out.update(env_same=dict(os.environ) == env, threads_same=torch.get_num_threads() == threads,
               thread_calls=list(calls), mmapped=big_block_mmapped(),
               decode_chunk=pred.decode_chunk)
    t = napari_sam.tune_cpu()  # after torch: threads and allocator, no wait policy
    out["tuned"] = dict(allocator=t.allocator, policy_set=t.wait_policy_set,
                        mmapped=big_block_mmapped(), threads=t.threads,
                        torch_threads=torch.get_num_threads(),
                        again_same=napari_sam.tune_cpu() == t)
    print(json.dumps(out))
""")

CLI = PRELUDE + textwrap.dedent("""
    from napari_sam.cli import main
    code = main(["models", "list", "--cache", sys.argv[1]])
    from napari_sam import allocator
    print(json.dumps(dict(code=code, policy=os.environ.get("OMP_WAIT_POLICY"),
                          allocator=allocator.tuned(), mmapped=big_block_mmapped())))
""")


def _run(script, *args, **env_changes):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NAPARI_SAM_", "OMP_", "GOMP_", "MKL_"))}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_library_leaves_the_process_alone_until_tune_cpu():
    r = _run(LIBRARY)
    assert r["torch_after_import"] is False  # `import napari_sam` loads neither torch nor Qt
    assert r["env_same"] and r["threads_same"] and r["thread_calls"] == []
    assert r["mmapped"] in (True, None)  # glibc's default mmap threshold is untouched
    from napari_sam.model.config import TEST_VIT
    from napari_sam.predictor import cpu_decode_chunk

    assert r["decode_chunk"] == cpu_decode_chunk(TEST_VIT)  # from the model alone
    tuned = r["tuned"]
    assert tuned["policy_set"] is False  # torch (libgomp) was loaded already
    assert tuned["threads"] == tuned["torch_threads"] and tuned["again_same"]
    if r["mmapped"] is not None:
        assert tuned["allocator"] is True and tuned["mmapped"] is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_command_line_tunes_its_process_unless_told_not_to(tmp_path):
    r = _run(CLI, str(tmp_path))
    assert r["code"] == 0
    assert r["policy"] == "PASSIVE"  # set before torch was loaded
    assert r["allocator"] is True and r["mmapped"] in (False, None)
    r = _run(CLI, str(tmp_path), OMP_WAIT_POLICY="ACTIVE", NAPARI_SAM_MALLOC_TUNING="0")
    assert r["policy"] == "ACTIVE" and r["allocator"] is False  # the user's choices win
    assert r["mmapped"] in (True, None)
    # NAPARI_SAM_TUNE_CPU=0 (no tuning at all): test_plugin_tunes_only_when_asked


def test_plugin_tunes_only_when_asked(monkeypatch):
    from napari_sam.runtime import cpu

    monkeypatch.setattr(cpu, "tune_cpu", lambda: "tuned")
    monkeypatch.delenv(cpu.ENV, raising=False)
    assert cpu.tune_cpu_if_requested(default=False) is None
    assert cpu.tune_cpu_if_requested(default=True) == "tuned"
    for value, want in (("1", "tuned"), ("on", "tuned"), ("0", None), ("off", None)):
        monkeypatch.setenv(cpu.ENV, value)
        assert cpu.tune_cpu_if_requested(default=False) == want
        assert cpu.tune_cpu_if_requested(default=True) == want
    monkeypatch.setenv(cpu.ENV, "maybe")
    with pytest.raises(ValueError, match="NAPARI_SAM_TUNE_CPU"):
        cpu.tune_cpu_if_requested(default=False)


def test_wait_policy_is_set_only_where_it_can_still_work(monkeypatch):
    from napari_sam.runtime import cpu

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert cpu.openmp_loaded()  # this process runs torch
    assert cpu.set_wait_policy() is False and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(cpu, "openmp_loaded", lambda: False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    assert cpu.set_wait_policy() is False and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert cpu.set_wait_policy() is True and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"

