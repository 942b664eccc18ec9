"""The glibc allocator tuning: set once per process, switched off by the environment."""

import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent("""
    import sys
    from napari_sam import allocator
    from napari_sam.model import build_model
    from napari_sam.predictor import Predictor
    assert not allocator.tuned()
    Predictor(build_model("bundled"), device="cpu")
    print(allocator.tuned())
""")


def _run(env_value):
    import os

    env = dict(os.environ)
    env.pop("NAPARI_SAM_MALLOC_TUNING", None)
    if env_value is not None:
        env["NAPARI_SAM_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_predictor_tunes_the_allocator_unless_switched_off():
    assert _run(None) == "True"
    assert _run("0") == "False"


def test_tune_is_idempotent():
    from napari_sam import allocator

    first = allocator.tune()
    assert allocator.tune() == first == allocator.tuned()
