"""Render quality and image orientation for robosuite/LIBERO offscreen cameras.

Rendering dominates step cost on CPU (Mesa llvmpipe): 250k-415k triangles drawn with 4x MSAA,
planar reflections and shadows (cost measured in docs/benchmarks.md). "fast" turns those three
off; the picture changes, so train and evaluate with the same quality.
"""
from __future__ import annotations

import mujoco
import numpy as np

RENDER_QUALITIES = ("fast", "full")
IMAGE_CONVENTIONS = ("openvla", "raw", "upright")


def apply_render_quality(sim, quality: str) -> None:
    """Applies `quality` to the sim's offscreen render context (idempotent; call after every reset)."""
    ctx = getattr(sim, "_render_context_offscreen", None)
    if ctx is None or quality == "full" or getattr(ctx, "_lightvla_quality", None) == quality:
        return  # "full" keeps MuJoCo's defaults: a fresh context (hard reset) already has them
    # MSAA samples are read when the GL context is made: set them, then rebuild the context
    sim.model._model.vis.quality.offsamples = 0
    ctx.gl_ctx.make_current()
    ctx.con.free()
    ctx._set_mujoco_context_and_buffers()
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    ctx._lightvla_quality = quality


def to_convention(raw: np.ndarray, convention: str) -> np.ndarray:
    """robosuite's raw frame (H, W, 3), upside down, -> the configured convention, contiguous."""
    if convention == "openvla":  # 180 degree rotation: what OpenVLA/LIBERO checkpoints saw in training
        img = raw[::-1, ::-1]
    elif convention == "upright":  # the true camera view
        img = raw[::-1]
    elif convention == "raw":
        img = raw
    else:
        raise ValueError(f"unknown image_convention {convention!r}; valid: {', '.join(IMAGE_CONVENTIONS)}")
    return np.ascontiguousarray(img)
