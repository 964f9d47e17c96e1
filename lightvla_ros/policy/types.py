"""Plain types at the boundary between transports (ROS, bags, sim) and the policy. No ROS here."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Observation:
    """One synchronised observation, as the policy consumes it."""

    images: list[np.ndarray]          # per camera, (H, W, 3) uint8 RGB, in the configured camera order
    instruction: str                  # natural-language task, e.g. "pick up the alphabet soup"
    proprio: np.ndarray | None = None  # (proprio_dim,) float32, raw units (normalised inside the policy)
    stamp: int = 0                    # integer ns; time the observation was taken (oldest camera stamp)
    # the header stamp of every input it was assembled from: {'camera:<name>': ns, 'eef': ns,
    # 'joint:<name>': ns}; the node publishes it with each chunk, so a bag replays exactly these inputs
    inputs: dict[str, int] = field(default_factory=dict)


@dataclass
class PolicyOutput:
    """A whole action chunk from one forward pass, with what it cost and what the pruner kept."""

    actions: np.ndarray               # (chunk_size, action_dim) float32, unnormalised, ready to execute
    stamp: int                        # integer ns: the observation stamp this chunk was computed from
    timings: dict[str, float] = field(default_factory=dict)  # seconds: vision, pruner, llm, head, total
    kept_per_image: list[int] = field(default_factory=list)   # visual tokens kept, per image
    total_per_image: list[int] = field(default_factory=list)  # visual tokens before pruning, per image
    action_space: str = "eef_delta_pose_gripper"

    @property
    def chunk_size(self) -> int:
        return int(self.actions.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def kept_total(self) -> int:
        return int(sum(self.kept_per_image))

    @property
    def total_tokens(self) -> int:
        return int(sum(self.total_per_image))
