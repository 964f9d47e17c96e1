"""LightVLA TokenPruner: parameter-free visual-token pruning by patch voting.

Faithful to the reference, `TokenPruner` in LiAutoAD/LightVLA prismatic/extern/hf/modeling_prismatic.py:
every patch builds a task-aware query (attention over the task tokens), scores all patches,
and votes for its argmax. Inference keeps the voted-for patches (original order, ORIGINAL
position ids and mask entries); training keeps the length and replaces each patch by the one
it voted for with a straight-through estimator.

Beyond the reference: batch > 1 in eval mode. The reference's `patches[mask].view(B, -1, D)`
mixes samples when keep counts differ; here each sample is gathered on its own and the patch
block is right-padded to the largest kept count, with attention mask 0 on the padding; prompts
of different lengths (right-padded) vote without their padding (get_score's task_mask).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenPruner(nn.Module):
    """Prunes the patch block of `[BOS] + [num_patches patches] + [task]` (the reference's place for it).

    No learnable parameters; `config` only needs `.hidden_size`. After each forward,
    `last_keep_mask` (B, P) bool and `last_kept_counts` (B,) long describe the votes.
    """

    def __init__(self, config, num_patches: int):
        super().__init__()
        self.hidden_size = int(config.hidden_size)
        self.num_patches = num_patches
        self.noise_scale = None  # set by the fine-tuning schedule (1 - step / max_steps)
        self.scale_factor = 1 / math.sqrt(self.hidden_size)
        self.last_keep_mask = None  # (B, P) bool
        self.last_kept_counts = None  # (B,) long

    @property
    def num_patches(self) -> int:
        return self._num_patches

    @num_patches.setter
    def num_patches(self, value: int) -> None:
        # P = 256 x number of images; all images are pruned jointly, as in the reference
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"num_patches must be a positive int, got {value!r}")
        self._num_patches = value

    def set_noise_scale(self, noise_scale) -> None:
        """Uniform exploration noise for training votes; None or 0 disables it (section 8.6)."""
        self.noise_scale = None if noise_scale is None else float(noise_scale)

    @staticmethod
    def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Weightless RMS norm over the last dim, computed in float32, cast back."""
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        return x32.to(x.dtype)

    def get_score(self, patches: torch.Tensor, task: torch.Tensor,
                  task_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Patch-to-patch vote scores (the reference's get_score).

        patches (B, P, D), task (B, T, D) -> score (B, P, P); row i scores patch i's candidates.
        task_mask (B, T) 0/1: a right-padded batch's padding is not attended to, so each sample
        votes as it would alone.
        """
        patches = self.rms_norm(patches)  # (B, P, D)
        task = self.rms_norm(task)  # (B, T, D)
        attn_mask = None if task_mask is None else task_mask.bool()[:, None, :]  # (B, 1, T)
        queries = F.scaled_dot_product_attention(patches, task, task, attn_mask=attn_mask)  # (B, P, D), one head
        queries = self.rms_norm(queries)
        return queries @ patches.transpose(-2, -1) * self.scale_factor  # (B, P, P)

    def score_to_mask(self, score: torch.Tensor) -> torch.Tensor:
        """Inference keep mask (section 3.2.3): score (B, P, P) -> (B, P) bool.

        A patch is kept iff at least one row's argmax points at it.
        """
        indices = score.argmax(dim=-1)  # (B, P)
        mask = torch.zeros(score.shape[:2], dtype=torch.bool, device=score.device)
        return mask.scatter(1, indices, True)

    def score_to_indices(self, score: torch.Tensor, patches: torch.Tensor):
        """Training votes with straight-through aggregation (section 3.2.4).

        score (B, P, P), patches (B, P, D) -> indices (B, P) long, patches (B, P, D).
        Forward value is the hard one-hot selection; gradients follow the softmax.
        """
        if self.noise_scale is not None:
            score = score + torch.rand_like(score) * self.noise_scale  # uniform, not Gumbel
        soft = torch.softmax(score, dim=-1)  # (B, P, P)
        hard = F.one_hot(score.argmax(dim=-1), num_classes=score.shape[-1]).to(soft.dtype)
        weights = hard + soft - soft.detach()
        return weights.argmax(dim=-1), weights @ patches

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: torch.Tensor, keep_mask: torch.Tensor | None = None):
        """tokens (B, L, D), position_ids (B, L) long, attention_mask (B, L) 0/1.

        Eval: returns (B, 1 + M + T, ...) with M = max kept count in the batch.
        Train: returns the same length L.
        keep_mask (B, P) bool, eval only: votes already cast by `vote` on these tokens (the static
        path casts them inside a CUDA graph); None casts them here.
        """
        position_ids, attention_mask = self._check(tokens, position_ids, attention_mask)
        bsz, seq_len, dim = tokens.shape
        P = self.num_patches
        split = [1, P, seq_len - P - 1]
        bos, patches, task = torch.split(tokens, split, dim=1)  # (B,1,D) (B,P,D) (B,T,D)
        pos_bos, pos_patches, pos_task = torch.split(position_ids, split, dim=1)
        am_bos, am_patches, am_task = torch.split(attention_mask, split, dim=1)

        if self.training:
            score = self.get_score(patches, task)  # (B, P, P), the reference's votes
            indices, patches = self.score_to_indices(score, patches)  # (B, P), (B, P, D)
            # each slot takes the position id and mask entry of the patch it voted for
            pos_patches = pos_patches.gather(1, indices)
            am_patches = am_patches.gather(1, indices)
            keep_mask = torch.zeros_like(indices, dtype=torch.bool).scatter(1, indices, True)
        else:
            if keep_mask is None:
                keep_mask = self.vote(tokens, attention_mask)  # (B, P)
            patches, pos_patches, am_patches = self._gather_kept(
                keep_mask, patches, pos_patches, am_patches)

        self.last_keep_mask = keep_mask.detach()
        self.last_kept_counts = keep_mask.sum(dim=1)  # (B,) long

        tokens = torch.cat([bos, patches, task], dim=1)
        position_ids = torch.cat([pos_bos, pos_patches, pos_task], dim=1)
        attention_mask = torch.cat([am_bos, am_patches, am_task], dim=1)
        return tokens, position_ids, attention_mask

    def vote(self, tokens: torch.Tensor, attention_mask: torch.Tensor,
             task_padded: bool | None = None) -> torch.Tensor:
        """Eval votes on `[BOS] + patches + task`: tokens (B, L, D), attention_mask (B, L) -> keep_mask (B, P) bool.

        task_padded: whether some task token is padding (a right-padded batch of prompts), so the
        votes must not look at it; None looks at the mask (a host sync, which a CUDA graph cannot
        hold: the static path passes it). All-valid prompts vote exactly as the reference.
        """
        P = self.num_patches
        patches, task = tokens[:, 1:1 + P], tokens[:, 1 + P:]  # (B, P, D), (B, T, D)
        am_task = attention_mask[:, 1 + P:]  # (B, T)
        if task_padded is None:
            task_padded = not bool(am_task.bool().all())
        if task_padded:  # a right-padded batch (prompts of different lengths): padding must not sway the votes
            score = self.get_score(patches, task, am_task)  # (B, P, P)
        else:
            score = self.get_score(patches, task)  # the reference's votes
        return self.score_to_mask(score)

    @staticmethod
    def _gather_kept(keep_mask, patches, pos_patches, am_patches):
        """Per-sample gather of kept patches in original order, right-padded to the max count.

        keep_mask (B, P) bool -> patches (B, M, D), position ids (B, M), mask (B, M).
        Padding: zero vectors, mask 0, position id repeated from the last kept patch.
        """
        counts = keep_mask.sum(dim=1)  # (B,), each >= 1 since every row votes
        max_kept = int(counts.max())
        # stable sort puts kept indices first, in their original order
        order = torch.argsort((~keep_mask).to(torch.int8), dim=1, stable=True)  # (B, P)
        idx = order[:, :max_kept]  # (B, M)
        valid = torch.arange(max_kept, device=idx.device)[None, :] < counts[:, None]  # (B, M)
        last = idx.gather(1, (counts - 1)[:, None])  # (B, 1)
        idx = torch.where(valid, idx, last)
        patches = patches.gather(1, idx[..., None].expand(-1, -1, patches.shape[-1]))
        patches = patches * valid[..., None].to(patches.dtype)
        pos_patches = pos_patches.gather(1, idx)
        am_patches = am_patches.gather(1, idx) * valid.to(am_patches.dtype)
        return patches, pos_patches, am_patches

    def _check(self, tokens, position_ids, attention_mask):
        if tokens.dim() != 3:
            raise ValueError(f"tokens must be (B, L, D), got shape {tuple(tokens.shape)}")
        bsz, seq_len, dim = tokens.shape
        if dim != self.hidden_size:
            raise ValueError(f"tokens width {dim} != config.hidden_size {self.hidden_size}")
        if seq_len < self.num_patches + 2:
            raise ValueError(
                f"sequence length {seq_len} too short for [BOS] + {self.num_patches} patches"
                f" + at least 1 task token (need >= {self.num_patches + 2}); is num_patches"
                " in sync with the number of images?")
        if position_ids is None or attention_mask is None:
            raise ValueError("position_ids and a 2-D attention_mask are required")
        if position_ids.dim() == 2 and position_ids.shape[0] == 1 and bsz > 1:
            position_ids = position_ids.expand(bsz, -1)
        if tuple(position_ids.shape) != (bsz, seq_len):
            raise ValueError(f"position_ids must be {(bsz, seq_len)}, got "
                             f"{tuple(position_ids.shape)}")
        if tuple(attention_mask.shape) != (bsz, seq_len):
            raise ValueError(f"attention_mask must be 2-D {(bsz, seq_len)}, got "
                             f"{tuple(attention_mask.shape)}")
        return position_ids, attention_mask
