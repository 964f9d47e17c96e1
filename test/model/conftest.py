"""Fixtures for the model tests: images, proprio and a loaded tiny model."""
import numpy as np
import pytest

from lightvla_ros.model import load_vla

INSTRUCTION = "Pick up the alphabet soup and place it in the basket"

@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2)]

@pytest.fixture
def proprio():
    return np.array([-0.05, 0.0, 1.0, 3.1, -0.05, 0.0, 0.02, -0.02], dtype=np.float32)

@pytest.fixture
def vla(tiny_checkpoint):
    """A fresh model per test (loading the tiny checkpoint takes ~0.1 s), so tests may mutate it."""
    return load_vla(tiny_checkpoint, device="cpu", dtype="float32")
