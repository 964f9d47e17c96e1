"""Configuration facts: platform constants, backbone ids, model sizes, device and dtype.

Platform constants come from the checkpoint configuration, never from argv (OpenVLA-OFT's
prismatic/vla/constants.py picks them by scanning sys.argv; a ROS node must not).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Token ids fixed by the Llama-2 vocabulary and OpenVLA-OFT.
BOS_TOKEN_ID = 1
STOP_TOKEN_ID = 2  # "</s>": closes the action placeholders
EMPTY_TOKEN_ID = 29871  # "▁": appended after "Out:" as at training time
ACTION_TOKEN_BEGIN_IDX = 31743
IGNORE_INDEX = -100
PAD_TOKEN_ID = 32000

PROMPT_TEMPLATE = "In: What action should the robot take to {task}?\nOut:"


@dataclass(frozen=True)
class Platform:
    """Per-robot constants of OpenVLA-OFT (prismatic/vla/constants.py)."""

    name: str
    chunk_size: int  # NUM_ACTIONS_CHUNK
    action_dim: int  # ACTION_DIM
    proprio_dim: int  # PROPRIO_DIM
    normalization: str  # "bounds_q99" (q01/q99) or "bounds" (min/max)
    action_space: str  # what an action means, for the transport layer
    num_images: int  # cameras the released checkpoints use


PLATFORMS = {
    "libero": Platform("libero", 8, 7, 8, "bounds_q99", "eef_delta_pose_gripper", 2),
    "aloha": Platform("aloha", 25, 14, 14, "bounds", "joint_position", 3),
    "bridge": Platform("bridge", 5, 7, 7, "bounds_q99", "eef_delta_pose_gripper", 1),
}


def get_platform(name: str) -> Platform:
    key = str(name).lower()
    if key not in PLATFORMS:
        raise ValueError(f"unknown platform {name!r}; known: {sorted(PLATFORMS)}")
    return PLATFORMS[key]


# Vision backbones as Prismatic names them -> timm model ids (one or two, fused channel-wise).
VISION_BACKBONES = {
    "dinosiglip-vit-so-224px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "dinov2-vit-l-224px": ["vit_large_patch14_reg4_dinov2.lvd142m"],
    "siglip-vit-so400m-224px": ["vit_so400m_patch14_siglip_224"],
}
VISION_SHORT_NAMES = {
    "dinosiglip": "dinosiglip-vit-so-224px",
    "dinov2": "dinov2-vit-l-224px",
    "siglip": "siglip-vit-so400m-224px",
}

# Llama-2-7B as OpenVLA uses it (vocab padded 32001 -> 32064, a multiple of 64). rms_norm_eps:
# released configs leave it out, so they run with LlamaConfig's default 1e-6.
LLAMA2_7B = dict(
    vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
    rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2, pad_token_id=PAD_TOKEN_ID,
)

# Model sizes for generated checkpoints. timm overrides are per backbone, in backbone order
# (DINOv2 first, SigLIP second, as Prismatic fuses them). None = the released geometry.
SIZES = {
    "tiny": dict(
        timm_overrides={"dinov2": dict(embed_dim=32, depth=2, num_heads=2),
                        "siglip": dict(embed_dim=48, depth=2, num_heads=2)},
        text=dict(LLAMA2_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4),
    ),
    "small": dict(
        timm_overrides={"dinov2": dict(embed_dim=128, depth=4, num_heads=4),
                        "siglip": dict(embed_dim=144, depth=4, num_heads=4)},
        text=dict(LLAMA2_7B, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=4),
    ),
    "7b": dict(timm_overrides={"dinov2": None, "siglip": None}, text=dict(LLAMA2_7B)),
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    return device


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """'auto' -> bf16 on cuda, fp32 on cpu (bf16 matmuls are slow on most CPUs)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device is not None and torch.device(device).type == "cuda" else torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use auto or one of {sorted(names)}")
    return names[dtype]
