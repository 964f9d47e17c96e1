"""LIBERO gripper post-processing, kept out of the policy so the sim runner applies it explicitly.

OFT's LIBERO models predict the gripper in [0, 1] with 1 = open, 0 = close (OpenVLA's LIBERO
data transform clips and flips it); robosuite expects -1 = open, +1 = close. So:
[0, 1] -> [-1, 1], binarise with sign, invert sign (OFT normalize_gripper_action + invert_gripper_action).
"""
from __future__ import annotations

import numpy as np


def libero_gripper_postprocess(actions: np.ndarray) -> np.ndarray:
    """actions (..., dim) with the gripper last -> copy with the gripper in {-1, 0, +1}, inverted."""
    out = np.array(actions, dtype=np.float32, copy=True)
    gripper = 2.0 * out[..., -1] - 1.0  # [0, 1] -> [-1, 1]
    out[..., -1] = -np.sign(gripper)  # binarise, then invert
    return out
