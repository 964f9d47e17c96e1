"""Episodes for fine-tuning: a small npz format, chunked training samples, a synthetic generator.

One episode = one `.npz` file (np.savez_compressed, no pickles):
    images        (T, num_cameras, H, W, 3) uint8   RGB, cameras in the model's order
    proprio       (T, proprio_dim) float32          raw units
    actions       (T, action_dim) float32           raw units (what the robot executed at t)
    instruction   0-d str                           e.g. "pick up the alphabet soup"
    camera_names  (num_cameras,) str                optional, informational
    timestamps    (T,) float64                      optional, seconds (sim time or bag time)
    action_chunks (T, K, action_dim) float32        optional, raw units: the chunk the expert
                                                    planned from step t (lightvla-collect --plan-targets)
A dataset directory may hold `dataset.json` (format lightvla.dataset/1: cameras, rate, proprio
sources, where the episodes came from; docs/training.md).

A training sample at step t is (images at t, proprio at t, instruction, actions t..t+chunk-1),
the chunk padded past the episode end by repeating the last action (OFT's RLDS chunking). An
episode with `action_chunks` gives action_chunks[t] instead: what the expert would have done had
it planned a chunk at t, as the policy does whenever it is asked.
Actions and proprio are normalised with the checkpoint's dataset_statistics.json entry the
same way predict_action undoes it (as OpenVLA-OFT does): bounds_q99 / bounds, per-dim mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.preprocess import norm_bounds, normalize_proprio


@dataclass
class Episode:
    images: np.ndarray  # (T, num_cameras, H, W, 3) uint8
    proprio: np.ndarray  # (T, proprio_dim) float32, raw
    actions: np.ndarray  # (T, action_dim) float32, raw
    instruction: str
    camera_names: tuple[str, ...] = ()
    timestamps: np.ndarray | None = None  # (T,) float64 seconds, optional
    action_chunks: np.ndarray | None = None  # (T, K, action_dim) float32, raw, optional: planned at t

    def __post_init__(self):
        self.images = np.asarray(self.images)
        self.proprio = np.asarray(self.proprio, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.images.dtype != np.uint8 or self.images.ndim != 5 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be (T, num_cameras, H, W, 3) uint8, got "
                             f"{self.images.shape} {self.images.dtype}")
        T = self.images.shape[0]
        if T < 1:
            raise ValueError("an episode needs at least one step")
        for name, arr in (("proprio", self.proprio), ("actions", self.actions)):
            if arr.ndim != 2 or arr.shape[0] != T:
                raise ValueError(f"{name} must be (T={T}, dim), got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} has non-finite values")
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
            if self.timestamps.shape != (T,):
                raise ValueError(f"timestamps must be (T={T},), got {self.timestamps.shape}")
        if self.action_chunks is not None:
            self.action_chunks = np.asarray(self.action_chunks, dtype=np.float32)
            c = self.action_chunks
            if c.ndim != 3 or c.shape[0] != T or c.shape[2] != self.actions.shape[1] or c.shape[1] < 1:
                raise ValueError(f"action_chunks must be (T={T}, K, {self.actions.shape[1]}), got {c.shape}")
            if not np.isfinite(c).all():
                raise ValueError("action_chunks has non-finite values")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {self.instruction!r}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_cameras(self) -> int:
        return int(self.images.shape[1])


def save_episode(episode: Episode, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if episode.timestamps is None else {"timestamps": episode.timestamps}
    if episode.action_chunks is not None:
        extra["action_chunks"] = episode.action_chunks
    np.savez_compressed(path, images=episode.images, proprio=episode.proprio, actions=episode.actions,
                        instruction=np.array(episode.instruction),
                        camera_names=np.array(list(episode.camera_names), dtype=str), **extra)
    return path


def load_episode(path) -> Episode:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"images", "proprio", "actions", "instruction"} - set(f.files)
            if missing:
                raise ValueError(f"{path}: missing array(s) {sorted(missing)}")
            names = tuple(str(n) for n in f["camera_names"]) if "camera_names" in f.files else ()
            stamps = f["timestamps"] if "timestamps" in f.files else None
            chunks = f["action_chunks"] if "action_chunks" in f.files else None
            return Episode(f["images"], f["proprio"], f["actions"], str(f["instruction"]), names, stamps,
                           chunks)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read episode {path}: {e}") from e


def load_episodes(path) -> list[Episode]:
    """A directory of `*.npz` episodes (sorted by name) or a single `.npz` file."""
    path = Path(path)
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no episode .npz files at {path}")
    return [load_episode(f) for f in files]


# ---- normalisation ---------------------------------------------------------------------------
def normalize_actions(actions: np.ndarray, stats: dict, normalization: str) -> np.ndarray:
    """Raw (..., dim) -> [-1, 1] where mask (clipped, as OFT's RLDS pipeline); unmasked dims unchanged.

    Inverse of model.preprocess.unnormalize_actions inside the bounds.
    """
    low, high, mask = norm_bounds(stats, normalization)
    a = np.asarray(actions, dtype=np.float64)
    if a.shape[-1] != low.shape[0]:
        raise ValueError(f"actions have dim {a.shape[-1]} but the statistics have {low.shape[0]}")
    out = np.where(mask, np.clip(2 * (a - low) / (high - low + 1e-8) - 1, -1, 1), a)
    return out.astype(np.float32)


def compute_statistics(episodes: list[Episode], action_mask: list[bool] | None = None) -> dict:
    """dataset_statistics.json entry from episodes (mean/std/min/max/q01/q99; action mask)."""
    def entry(x: np.ndarray) -> dict:
        x = x.astype(np.float64)
        return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "max": x.max(0).tolist(),
                "min": x.min(0).tolist(), "q01": np.quantile(x, 0.01, axis=0).tolist(),
                "q99": np.quantile(x, 0.99, axis=0).tolist()}
    actions = np.concatenate([e.actions for e in episodes])
    proprio = np.concatenate([e.proprio for e in episodes])
    action = entry(actions)
    action["mask"] = list(action_mask) if action_mask is not None else [True] * actions.shape[1]
    return {"action": action, "proprio": entry(proprio), "num_transitions": int(actions.shape[0]),
            "num_trajectories": len(episodes)}


# ---- samples ---------------------------------------------------------------------------------
@dataclass
class Sample:
    images: list[np.ndarray]  # per camera (H, W, 3) uint8
    instruction: str
    proprio: np.ndarray  # (proprio_dim,) float32, normalised
    actions: np.ndarray  # (chunk, action_dim) float32, normalised


class ChunkDataset:
    """Every step of every episode as one sample (images, proprio, instruction, normalised chunk)."""

    def __init__(self, episodes: list[Episode], chunk_size: int, stats: dict, normalization: str,
                 num_images: int, action_dim: int, proprio_dim: int | None):
        if not episodes:
            raise ValueError("no episodes")
        for i, ep in enumerate(episodes):
            if ep.num_cameras != num_images:
                raise ValueError(f"episode {i}: {ep.num_cameras} camera(s), the model takes {num_images}")
            if ep.actions.shape[1] != action_dim:
                raise ValueError(f"episode {i}: action dim {ep.actions.shape[1]}, the model's is {action_dim}")
            if proprio_dim is not None and ep.proprio.shape[1] != proprio_dim:
                raise ValueError(f"episode {i}: proprio dim {ep.proprio.shape[1]}, the model's is {proprio_dim}")
            if ep.action_chunks is not None and ep.action_chunks.shape[1] < chunk_size:
                raise ValueError(f"episode {i}: planned chunks of {ep.action_chunks.shape[1]} steps, "
                                 f"the model predicts {chunk_size}")
        if "action" not in stats or (proprio_dim is not None and "proprio" not in stats):
            raise ValueError(f"statistics need 'action' (and 'proprio') entries, got {sorted(stats)}")
        self.episodes = episodes
        self.chunk_size = chunk_size
        self.stats = stats
        self.normalization = normalization
        self.use_proprio = proprio_dim is not None
        self.index = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Sample:
        e, t = self.index[i]
        ep = self.episodes[e]
        if ep.action_chunks is not None:   # the expert's own plan from this step
            raw = ep.action_chunks[t, :self.chunk_size]
        else:
            raw = ep.actions[np.minimum(np.arange(t, t + self.chunk_size), len(ep) - 1)]  # repeat the last
        actions = normalize_actions(raw, self.stats["action"], self.normalization)
        proprio = (normalize_proprio(ep.proprio[t], self.stats["proprio"], self.normalization)
                   if self.use_proprio else np.zeros(0, np.float32))
        return Sample([ep.images[t, c] for c in range(ep.num_cameras)], ep.instruction, proprio, actions)


# ---- synthetic episodes ----------------------------------------------------------------------
def make_synthetic_episodes(stats: dict, num_episodes: int = 4, length: int = 12, num_images: int = 2,
                            image_size: int = 224, action_dim: int = 7, proprio_dim: int = 8,
                            normalization: str = "bounds_q99", seed: int = 0,
                            instructions: tuple[str, ...] = ("pick up the bowl", "open the drawer")) -> list[Episode]:
    """Episodes whose actions are a simple function of what the model sees, so a loss can fall.

    Masked action dims: normalised value 0.8 * normalised proprio (dim j % proprio_dim), and the
    proprio drifts over the episode so the chunk has structure over time. Unmasked dims (the
    gripper): the low or high bound, picked by the episode's image brightness (dark or bright).
    """
    rng = np.random.default_rng(seed)
    low_a, high_a, mask_a = norm_bounds(stats["action"], normalization)
    low_p, high_p, _ = norm_bounds(stats["proprio"], normalization)
    if low_a.shape[0] != action_dim or low_p.shape[0] != proprio_dim:
        raise ValueError("statistics do not match action_dim / proprio_dim")
    episodes = []
    for k in range(num_episodes):
        bright = k % 2 == 1
        start = rng.uniform(-0.8, 0.8, proprio_dim)
        drift = rng.uniform(-0.05, 0.05, proprio_dim)
        p_norm = np.clip(start[None] + drift[None] * np.arange(length)[:, None], -1, 1)  # (T, pdim)
        proprio = (p_norm + 1) / 2 * (high_p - low_p) + low_p
        a_norm = 0.8 * p_norm[:, np.arange(action_dim) % proprio_dim]  # (T, adim)
        raw = (a_norm + 1) / 2 * (high_a - low_a) + low_a
        gripper = np.where(bright, high_a, low_a)[None].repeat(length, 0)
        actions = np.where(mask_a, raw, gripper)
        base = 190 if bright else 60
        images = rng.integers(base - 40, base + 40, (length, num_images, image_size, image_size, 3))
        episodes.append(Episode(images.astype(np.uint8), proprio.astype(np.float32),
                                actions.astype(np.float32), instructions[k % len(instructions)],
                                tuple(f"cam{c}" for c in range(num_images))))
    return episodes
