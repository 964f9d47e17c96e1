"""Fixtures shared by the whole suite. The tiny checkpoint is generated once per session."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random LightVLA checkpoint in the released directory layout (LIBERO platform, 2 images)."""
    from lightvla_ros.model.make_checkpoint import make_checkpoint

    out = tmp_path_factory.mktemp("ckpt") / "lightvla-tiny"
    make_checkpoint(out, size="tiny", seed=0)
    return out
