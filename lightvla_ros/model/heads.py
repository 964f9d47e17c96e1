"""Small MLPs around the LLM: vision projector, proprio projector, L1-regression action head.

Module and parameter names follow the released checkpoints (Prismatic `projector.fc1..fc3`,
OFT `ProprioProjector.fc1/fc2`, OFT `L1RegressionActionHead.model.*`) so keys map one to one.
"""
from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Patch features (B, N, vision_dim) -> LLM embeddings (B, N, llm_dim).

    Fused backbone: fc1 vision->4*vision, GELU, fc2 ->llm, GELU, fc3 llm->llm.
    Single backbone: fc1 vision->llm, GELU, fc2 llm->llm.
    """

    def __init__(self, vision_dim: int, llm_dim: int, fused: bool):
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
            self.act_fn2 = nn.GELU()
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act_fn1(self.fc1(features)))
        if self.fused:
            x = self.fc3(self.act_fn2(x))
        return x


class ProprioProjector(nn.Module):
    """Normalised proprio (B, proprio_dim) -> one LLM token (B, llm_dim)."""

    def __init__(self, llm_dim: int, proprio_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class MLPResNetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm, fc1, ReLU, residual blocks, LayerNorm, fc2."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList([MLPResNetBlock(hidden_dim) for _ in range(num_blocks)])
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Action-position hidden states (B, chunk * dim, H) -> normalised actions (B, chunk, dim)."""

    def __init__(self, llm_dim: int, hidden_dim: int, action_dim: int, chunk_size: int):
        super().__init__()
        self.action_dim = action_dim
        self.chunk_size = chunk_size
        self.model = MLPResNet(num_blocks=2, input_dim=llm_dim * action_dim, hidden_dim=hidden_dim,
                               output_dim=action_dim)

    def predict_action(self, actions_hidden_states: torch.Tensor) -> torch.Tensor:
        bsz = actions_hidden_states.shape[0]
        # one row per timestep: the dim tokens of a step side by side (B, chunk, dim * H)
        x = actions_hidden_states.reshape(bsz, self.chunk_size, -1)
        return self.model(x)  # (B, chunk, dim)

    forward = predict_action
