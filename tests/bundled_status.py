"""Markers for tests that need the shipped bundled model, and whether it meets its goals.

The shipped weights are a checkpoint of a training run that goes on across working
sessions (issue 3). Until the model reaches its accuracy goals, the tests that assert
those goals still run, and report XFAIL (never PASS) when they fall short; an XPASS means
the goal is met. Set GOALS_MET = True when docs/models.md records the goals as met: from
then on a shortfall fails the suite.
"""

import pytest

from napari_sam.model.registry import BUNDLED_PATH

GOALS_MET = False

needs_bundled = pytest.mark.skipif(not BUNDLED_PATH.is_file(),
                                   reason="napari_sam/weights/bundled.pt is missing")
accuracy_goal = pytest.mark.xfail(
    not GOALS_MET, strict=False,
    reason="bundled model still in training: its accuracy goals are not met yet (docs/models.md)")
