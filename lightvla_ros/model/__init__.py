"""LightVLA model core (no ROS): OpenVLA-OFT + TokenPruner, checkpoints, generator."""
from .checkpoint import build_vla, load_vla, save_checkpoint
from .errors import CheckpointError
from .make_checkpoint import make_checkpoint
from .vla import LightVLA, Prediction

__all__ = ["CheckpointError", "LightVLA", "Prediction", "build_vla", "load_vla", "make_checkpoint",
           "save_checkpoint"]
