"""Fine-tune a LightVLA checkpoint with the L1 action loss and the TokenPruner in train mode.

    lightvla-finetune CHECKPOINT_DIR OUT_DIR --data EPISODES_DIR [--steps N] [--lora] ...
    lightvla-finetune CHECKPOINT_DIR OUT_DIR --synthetic        (a toy dataset, to try it out)

What one step does (as LiAutoAD/LightVLA vla-scripts/finetune.py does it):
  - pruner.set_noise_scale(1 - step / max_steps): uniform vote noise decays linearly to 0;
  - forward in train mode: the pruner replaces each patch by the one it voted for with a
    straight-through estimator, so the sequence length is unchanged (training is not faster,
    the speed-up comes at inference, where the voted-for patches alone are kept); with
    `pruner_training="drop"` (not in the reference) the pruner runs as at inference instead;
  - L1 loss between the action head's chunk and the normalised ground-truth chunk; AdamW;
    grad-norm clipping. The head reads the "oft" rows (one row before the chunk*dim placeholders:
    the label-shifted action mask of both references' vla-scripts/finetune.py), per sample with
    right padding, and every saved checkpoint records that convention (docs/model.md).
The pruner has no parameters: nothing to unfreeze for it (the reference's LoRA "unfreeze the
pruner" step is a no-op). With LoRA the LLM's linear layers get adapters, and the action head
and proprio projector are trained in full; the saved checkpoint has the adapters merged in.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model import LightVLA, load_vla, save_checkpoint
from ..model.config import resolve_device, resolve_dtype
from ..model.preprocess import images_to_pixel_values, resize_for_policy
from ..model.vla import TRAIN_ACTION_ROWS
from .augment import ImageAugment, normalize_pixels
from .dataset import ChunkDataset, Episode, Sample, compute_statistics, load_episodes, make_synthetic_episodes

PRUNER_TRAINING = ("ste", "drop")  # FinetuneConfig.pruner_training: the reference's, or on the pruned sequence
# The LLM's linear layers (Llama attention + MLP); lm_head is unused by the L1 head.
LORA_TARGET = r"language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


@dataclass
class FinetuneConfig:
    checkpoint: str = ""  # input checkpoint directory (released layout)
    out_dir: str = "runs/lightvla-finetune"
    data: str = ""  # directory of episode .npz files; "" with synthetic=True for a toy set
    synthetic: bool = False
    max_steps: int = 200
    batch_size: int = 4
    learning_rate: float = 5e-4  # OFT's default
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max grad norm; <= 0 disables
    noise_schedule: bool = True  # noise_scale = 1 - step / max_steps (the reference's schedule)
    use_lora: bool = False
    lora_rank: int = 32
    lora_alpha: int = 16  # OFT: min(rank, 16)
    lora_dropout: float = 0.0
    lora_target: str = LORA_TARGET  # regex on module names (peft full match)
    freeze_vision_backbone: bool = False  # full fine-tuning without the ViTs (cheaper; projector still trains)
    statistics: str = "checkpoint"  # "checkpoint": the checkpoint's dataset_statistics.json; "data": recompute
    dataset_name: str = "finetune_dataset"  # unnorm_key written when statistics == "data"
    # statistics == "data": action dims whose q99 - q01 is below this are left unnormalised (mask
    # False), so near-constant dims (a scripted expert's tiny rotations) are not scaled up to
    # +-1 noise that dominates the L1 loss. 0: the checkpoint's mask as is (the reference's rule).
    min_action_range: float = 0.0
    unnorm_key: str | None = None  # which checkpoint statistics to use (default: the checkpoint's)
    center_crop: bool = True  # as predict_action's default
    device: str = "auto"
    dtype: str = "auto"  # bf16 on cuda, fp32 on cpu
    seed: int = 0
    log_every: int = 10
    save: bool = True
    prune: str = "keep"  # on | off | keep (the checkpoint's setting): the TokenPruner in this stage
    lr_schedule: str = "constant"  # constant | cosine (to lr * min_lr_ratio at max_steps)
    warmup_steps: int = 0  # linear warm-up from 0 (any schedule)
    min_lr_ratio: float = 0.1
    save_every: int = 0  # also save (checkpoint + train_state.pt) every N steps; 0: at the end only
    resume: bool = False  # continue from out_dir's train_state.pt (same max_steps and schedule)
    time_budget_s: float = 0.0  # stop (and save) after this much wall time; 0: no budget
    cache_images: bool = True  # preprocess each frame once (pixel values kept in memory)
    # the reference's training-time image augmentation (random 90 % crop + colour jitter, train/augment.py);
    # OFT's image_aug default is on. Off: every frame gets predict_action's center crop, as at inference.
    image_aug: bool = True
    # how the pruner trains when it is on. "ste": the reference's (the length is kept, each patch
    # replaced by the one it voted for, straight-through gradients, the noise schedule). "drop" (not
    # in the reference): the pruner runs as at inference, the patches no one voted for are dropped
    # and the rest of the model learns on exactly the sequence it will see; the votes themselves
    # get no gradient (docs/training.md).
    pruner_training: str = "ste"


@dataclass
class StepRecord:
    step: int
    loss: float
    noise_scale: float | None
    grad_norm: float
    seq_len_in: int  # tokens into the pruner
    seq_len_out: int  # tokens out of it (equal in train mode)
    pruner_training: bool
    kept_mean: float  # distinct patches voted for, mean over the batch
    seconds: float


@dataclass
class FinetuneResult:
    model: LightVLA  # trained, eval mode; LoRA merged once saved
    peft_model: object | None = None  # the peft wrapper while adapters are attached
    history: list[StepRecord] = field(default_factory=list)
    out_dir: Path | None = None
    steps_per_second: float = 0.0


# ---- batches ---------------------------------------------------------------------------------
class PixelCache:
    """`make(images)` per sample's camera frames, computed once: keyed by the frames' memory
    addresses, which are stable while the episodes stay loaded (a Sample's images are views)."""

    def __init__(self, make):
        self.make = make
        self._cache: dict[tuple, torch.Tensor] = {}

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        key = tuple((im.ctypes.data, im.shape) for im in images)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self.make(images)
        return hit

    def __len__(self) -> int:
        return len(self._cache)


def resized_frames(images: list[np.ndarray], transform) -> torch.Tensor:
    """Camera frames -> (cameras, 3, S, S) in [0, 1] at the policy's input size (resize_for_policy:
    the node's resize and JPEG round trip), before any crop: what augmentation starts from."""
    frames = np.stack([resize_for_policy(np.ascontiguousarray(im), transform) for im in images])
    return torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def frame_pipeline(vla: LightVLA, cfg: FinetuneConfig):
    """images -> what collate stacks: normalised pixel values (no augmentation; predict_action's
    preprocessing) or resized frames (augmented per step); cached when cfg.cache_images."""
    if cfg.image_aug:
        def make(images):
            return resized_frames(images, vla.image_transform)
    else:
        def make(images):
            return images_to_pixel_values(images, vla.image_transform, cfg.center_crop)
    return PixelCache(make) if cfg.cache_images else make


def collate(vla: LightVLA, samples: list[Sample], center_crop: bool = True, frames=None,
            augment: ImageAugment | None = None, generator: torch.Generator | None = None):
    """Samples -> model inputs on the model's device, right-padded with PAD (mask 0).

    pixel_values (B, C, S, S), input_ids / attention_mask (B, T), proprio (B, pdim) | None,
    actions (B, chunk, dim) normalised targets. frames: frame_pipeline's function (default:
    predict_action's preprocessing); with `augment` it must give resized frames.
    """
    param = next(vla.parameters())
    if augment is None:
        frames = frames or (lambda images: images_to_pixel_values(images, vla.image_transform, center_crop))
        pixel_values = torch.cat([frames(s.images) for s in samples])
    else:
        frames = frames or (lambda images: resized_frames(images, vla.image_transform))
        raw = torch.cat([frames(s.images) for s in samples])  # (B * cameras, 3, S, S)
        pixels = normalize_pixels(augment(raw, generator), vla.image_transform)
        pixel_values = pixels.reshape(len(samples), -1, *pixels.shape[2:])
    input_ids, attention_mask = vla.prompt_batch([s.instruction for s in samples])  # the serving layout
    proprio = None
    if vla.proprio_projector is not None:
        proprio = torch.from_numpy(np.stack([s.proprio for s in samples])).to(param.device, param.dtype)
    actions = torch.from_numpy(np.stack([s.actions for s in samples])).to(param.device, param.dtype)
    return (pixel_values.to(param.device, param.dtype), input_ids.to(param.device),
            attention_mask.to(param.device), proprio, actions)


# ---- model preparation -----------------------------------------------------------------------
def prepare_model(vla: LightVLA, cfg: FinetuneConfig):
    """Set what trains. Full: every parameter. LoRA: adapters on the LLM + head + proprio projector.

    -> the peft wrapper (LoRA) or None. Adapters are injected in place, so `vla` itself runs
    them; keep the wrapper for save_finetuned (merge_and_unload).
    """
    peft_model = None
    if cfg.use_lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_target, init_lora_weights="gaussian")
        peft_model = get_peft_model(vla, lora)  # freezes every non-LoRA parameter
        if peft_model.base_model.model is not vla:
            raise RuntimeError("peft did not wrap the model in place")
        for module in (vla.action_head, vla.proprio_projector):
            if module is not None:
                module.requires_grad_(True)
    else:
        vla.requires_grad_(True)
    if cfg.freeze_vision_backbone:
        vla.vision_backbone.requires_grad_(False)
    # the TokenPruner has no parameters: nothing to unfreeze (the reference unfreezes it under LoRA)
    assert not list(vla.pruner.parameters())
    return peft_model


def trainable_parameters(vla: LightVLA) -> list[torch.nn.Parameter]:
    return [p for p in vla.parameters() if p.requires_grad]


# ---- training --------------------------------------------------------------------------------
def lr_factor(step: int, cfg: FinetuneConfig) -> float:
    """Multiplier of cfg.learning_rate at `step`: linear warm-up, then constant or cosine decay."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule must be constant or cosine, got {cfg.lr_schedule!r}")
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def train(vla: LightVLA, dataset: ChunkDataset, cfg: FinetuneConfig, log=print, start_step: int = 0,
          optimizer_state: dict | None = None, on_save=None) -> list[StepRecord]:
    """Run optimizer steps start_step..cfg.max_steps-1 (batches drawn by reshuffling the dataset per
    epoch), or until cfg.time_budget_s; on_save(steps_done, optimizer, history) every
    cfg.save_every steps and when the budget stops the run."""
    if cfg.max_steps < 1 or cfg.batch_size < 1:
        raise ValueError("max_steps and batch_size must be >= 1")
    params = trainable_parameters(vla)
    if not params:
        raise ValueError("no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    rng = np.random.default_rng(cfg.seed + start_step)
    frames = frame_pipeline(vla, cfg)
    augment = ImageAugment() if cfg.image_aug else None
    generator = torch.Generator().manual_seed(cfg.seed + start_step)
    if cfg.pruner_training not in PRUNER_TRAINING:
        raise ValueError(f"pruner_training must be one of {PRUNER_TRAINING}, got {cfg.pruner_training!r}")

    def train_mode() -> None:
        vla.train()
        if cfg.pruner_training == "drop":
            vla.pruner.eval()  # inference's votes and sequence; everything else in train mode
    began = time.perf_counter()
    seen: dict = {}

    def record_lengths(module, args, output):  # pruner hook: length in and out, train or eval
        seen.update(seq_in=args[0].shape[1], seq_out=output[0].shape[1], training=module.training)

    hook = vla.pruner.register_forward_hook(record_lengths)
    if vla.action_rows != TRAIN_ACTION_ROWS and log:
        log(f"action rows: training on {TRAIN_ACTION_ROWS!r} (the checkpoint ran {vla.action_rows!r}); "
            "the saved checkpoint records it")
    vla.action_rows = TRAIN_ACTION_ROWS  # the references' training rows; saved with the checkpoint
    history: list[StepRecord] = []
    order: list[int] = []
    train_mode()
    try:
        for step in range(start_step, cfg.max_steps):
            if cfg.time_budget_s > 0 and time.perf_counter() - began > cfg.time_budget_s:
                if log:
                    log(f"time budget of {cfg.time_budget_s:.0f} s used: stopping at step {step}")
                if on_save is not None:  # resumable: the optimizer state goes with it
                    vla.eval()
                    on_save(step, optimizer, history)
                break
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = cfg.learning_rate * lr_factor(step, cfg)
            noise = 1 - step / cfg.max_steps if cfg.noise_schedule else None
            vla.pruner.set_noise_scale(noise)
            if len(order) < cfg.batch_size:
                order += list(rng.permutation(len(dataset)))
            batch = [dataset[i] for i in order[:cfg.batch_size]]
            del order[:cfg.batch_size]
            pixel_values, input_ids, attention_mask, proprio, target = collate(vla, batch, cfg.center_crop, frames,
                                                                       augment, generator)

            predicted = vla(pixel_values, input_ids, attention_mask, proprio=proprio)  # (B, chunk, dim)
            loss = F.l1_loss(predicted.float(), target.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()

            rec = StepRecord(step=step, loss=float(loss.detach()), noise_scale=vla.pruner.noise_scale,
                             grad_norm=float(grad_norm), seq_len_in=int(seen.get("seq_in", 0)),
                             seq_len_out=int(seen.get("seq_out", 0)), pruner_training=bool(seen.get("training")),
                             kept_mean=float(vla.pruner.last_kept_counts.float().mean()) if vla.prune
                             else float(vla.pruner.num_patches),
                             seconds=time.perf_counter() - start)
            history.append(rec)
            if log and (step % max(cfg.log_every, 1) == 0 or step == cfg.max_steps - 1):
                recent = [r.loss for r in history[-max(cfg.log_every, 1):]]
                log(f"step {step + 1:5d}/{cfg.max_steps}  loss {np.mean(recent):.4f}  "
                    f"lr {optimizer.param_groups[0]['lr']:.2e}  noise {noise if noise is not None else 0:.3f}  "
                    f"grad {rec.grad_norm:.3f}  kept {rec.kept_mean:.0f}/{vla.pruner.num_patches}  "
                    f"{rec.seconds:.2f}s/step  {time.perf_counter() - began:.0f}s")
            if on_save is not None and cfg.save_every > 0 and (step + 1) % cfg.save_every == 0 \
                    and step + 1 < cfg.max_steps:
                vla.pruner.set_noise_scale(None)
                vla.eval()
                on_save(step + 1, optimizer, history)
                train_mode()
    finally:
        hook.remove()
        vla.pruner.set_noise_scale(None)  # inference has no noise
        vla.eval()
    return history


def save_finetuned(vla: LightVLA, out_dir, step: int, peft_model=None) -> tuple[LightVLA, Path]:
    """Merge LoRA (if any) into the base weights and save in the released layout.

    Returns the plain (merged) model and the directory; it reloads with load_vla.
    """
    if peft_model is not None:
        vla = peft_model.merge_and_unload()
        lora_left = [n for n, _ in vla.named_parameters() if "lora_" in n]
        if lora_left:
            raise RuntimeError(f"LoRA parameters left after merging: {lora_left[:3]}")
    vla.eval()
    return vla, save_checkpoint(vla, out_dir, step=step)


# ---- whole run -------------------------------------------------------------------------------
def build_dataset(vla: LightVLA, episodes: list[Episode], cfg: FinetuneConfig) -> ChunkDataset:
    """Statistics from the checkpoint (default) or recomputed from the episodes (then stored in the model)."""
    plat = vla.platform
    if cfg.statistics == "data":
        mask = vla.norm_stats[vla.resolve_unnorm_key(cfg.unnorm_key)]["action"].get("mask") \
            if vla.norm_stats else None
        stats = compute_statistics(episodes, mask)
        if cfg.min_action_range > 0:
            spread = np.asarray(stats["action"]["q99"]) - np.asarray(stats["action"]["q01"])
            stats["action"]["mask"] = [bool(m and r >= cfg.min_action_range)
                                       for m, r in zip(stats["action"]["mask"], spread)]
        vla.norm_stats = dict(vla.norm_stats, **{cfg.dataset_name: stats})
        vla.default_unnorm_key = cfg.dataset_name
        # the model now emits the dataset's actions as the robot applied them: the sim runner must not
        # convert its gripper as it does for OFT's LIBERO checkpoints ([0, 1], 1 = open)
        vla.config = dict(vla.config, lightvla={**vla.config.get("lightvla", {}), "gripper_postprocess": "none"})
        stats = vla.norm_stats[cfg.dataset_name]
    elif cfg.statistics == "checkpoint":
        key = vla.resolve_unnorm_key(cfg.unnorm_key)
        vla.default_unnorm_key = key
        stats = vla.norm_stats[key]
    else:
        raise ValueError(f"statistics must be 'checkpoint' or 'data', got {cfg.statistics!r}")
    proprio_dim = plat.proprio_dim if vla.proprio_projector is not None else None
    return ChunkDataset(episodes, plat.chunk_size, stats, plat.normalization, vla.num_images,
                        plat.action_dim, proprio_dim)


def log_flushed(text: str) -> None:
    print(text, flush=True)


TRAIN_STATE = "train_state.pt"  # optimizer state and step, beside a checkpoint saved mid-run


def finetune(cfg: FinetuneConfig, episodes: list[Episode] | None = None, log=log_flushed) -> FinetuneResult:
    """Load cfg.checkpoint (or, with cfg.resume, the run in cfg.out_dir), train on `episodes` (or
    cfg.data / a synthetic set), save to cfg.out_dir (also every cfg.save_every steps)."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    out = Path(cfg.out_dir)
    state_path = out / TRAIN_STATE
    start_step, optimizer_state = 0, None
    source = cfg.checkpoint
    if cfg.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        start_step, optimizer_state, source = int(state["step"]), state["optimizer"], str(out)
        torch.set_rng_state(state["torch_rng"])
        if log:
            log(f"resuming {out} at step {start_step}/{cfg.max_steps}")
    vla = load_vla(source, device=str(device), dtype=dtype, unnorm_key=cfg.unnorm_key)
    if cfg.prune not in ("on", "off", "keep"):
        raise ValueError(f"prune must be on, off or keep, got {cfg.prune!r}")
    if cfg.prune != "keep":
        vla.prune = cfg.prune == "on"  # recorded in the saved checkpoint ("lightvla.prune")
    if episodes is None:
        if cfg.data:
            episodes = load_episodes(cfg.data)
        elif cfg.synthetic:
            stats = vla.norm_stats[vla.resolve_unnorm_key(cfg.unnorm_key)]
            episodes = make_synthetic_episodes(stats, num_images=vla.num_images,
                                               action_dim=vla.platform.action_dim,
                                               proprio_dim=vla.platform.proprio_dim,
                                               normalization=vla.platform.normalization, seed=cfg.seed)
        else:
            raise ValueError("no data: pass episodes, cfg.data or cfg.synthetic=True")
    if start_step and cfg.statistics == "data":
        cfg = FinetuneConfig(**{**asdict(cfg), "statistics": "checkpoint", "unnorm_key": vla.default_unnorm_key})
    dataset = build_dataset(vla, episodes, cfg)
    peft_model = prepare_model(vla, cfg)
    if log:
        n_train = sum(p.numel() for p in trainable_parameters(vla))
        n_all = sum(p.numel() for p in vla.parameters())
        log(f"{len(dataset)} samples from {len(episodes)} episodes; training {n_train:,} of {n_all:,} "
            f"parameters ({'LoRA' if cfg.use_lora else 'full'}) on {device} {dtype}; pruner "
            f"{'on' if vla.prune else 'off'}; lr {cfg.learning_rate:g} {cfg.lr_schedule}, warm-up {cfg.warmup_steps}")
    history_path = out / "finetune_log.json"
    previous = json.loads(history_path.read_text())["history"] if start_step and history_path.is_file() else []

    def save(step: int, optimizer, history) -> None:
        if cfg.use_lora:  # merging would end the run: LoRA runs save at the end only
            return
        save_checkpoint(vla, out, step=step)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
                   state_path)
        history_path.write_text(json.dumps({"config": asdict(cfg), "history": previous + [asdict(r) for r in history]},
                                           indent=1))
        if log:
            log(f"saved {out} at step {step}")

    start = time.perf_counter()
    history = train(vla, dataset, cfg, log=log, start_step=start_step, optimizer_state=optimizer_state,
                    on_save=save if cfg.save else None)
    result = FinetuneResult(vla, peft_model, history,
                            steps_per_second=len(history) / max(time.perf_counter() - start, 1e-9))
    if cfg.save:
        steps_done = start_step + len(history)
        result.model, result.out_dir = save_finetuned(vla, out, step=steps_done, peft_model=peft_model)
        result.peft_model = None
        if steps_done >= cfg.max_steps:
            state_path.unlink(missing_ok=True)  # finished: nothing to resume (a budget stop left one)
        history_path.write_text(json.dumps(
            {"config": asdict(cfg), "steps_per_second": result.steps_per_second,
             "history": previous + [asdict(r) for r in history]}, indent=1))
        if log:
            log(f"saved {out} at step {steps_done} ({result.steps_per_second:.2f} steps/s)")
    return result


def main(argv: list[str] | None = None) -> int:
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(prog="lightvla-finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="input checkpoint directory (released layout)")
    parser.add_argument("out_dir", help="where to write the fine-tuned checkpoint")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="directory of episode .npz files (see lightvla_ros.train.dataset)")
    data.add_argument("--synthetic", action="store_true", help="train on a toy synthetic episode set")
    parser.add_argument("--steps", type=int, default=defaults.max_steps, dest="max_steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, dest="learning_rate")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--grad-clip", type=float, default=defaults.grad_clip)
    parser.add_argument("--no-noise", action="store_false", dest="noise_schedule",
                        help="disable the 1 - step/max_steps vote-noise schedule")
    parser.add_argument("--lora", action="store_true", dest="use_lora")
    parser.add_argument("--lora-rank", type=int, default=defaults.lora_rank)
    parser.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha)
    parser.add_argument("--lora-dropout", type=float, default=defaults.lora_dropout)
    parser.add_argument("--freeze-vision", action="store_true", dest="freeze_vision_backbone")
    parser.add_argument("--statistics", choices=["checkpoint", "data"], default=defaults.statistics)
    parser.add_argument("--dataset-name", default=defaults.dataset_name)
    parser.add_argument("--min-action-range", type=float, default=defaults.min_action_range,
                        help="with --statistics data: leave action dims with q99 - q01 below this unnormalised")
    parser.add_argument("--unnorm-key", default=None)
    parser.add_argument("--no-center-crop", action="store_false", dest="center_crop")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--dtype", default=defaults.dtype)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument("--prune", choices=["on", "off", "keep"], default=defaults.prune,
                        help="the TokenPruner in this run (keep: the checkpoint's setting)")
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default=defaults.lr_schedule)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--min-lr-ratio", type=float, default=defaults.min_lr_ratio)
    parser.add_argument("--save-every", type=int, default=defaults.save_every,
                        help="also save (resumable) every N steps")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT_DIR (train_state.pt)")
    parser.add_argument("--time-budget", type=float, default=defaults.time_budget_s, dest="time_budget_s",
                        help="seconds; stop and save (resumable) when used up")
    parser.add_argument("--no-image-cache", action="store_false", dest="cache_images")
    parser.add_argument("--pruner-training", choices=PRUNER_TRAINING, default=defaults.pruner_training,
                        help="ste: the reference's straight-through votes; drop: train on the pruned "
                             "sequence inference runs (not in the reference)")
    parser.add_argument("--no-image-aug", action="store_false", dest="image_aug",
                        help="no random crop / colour jitter: train on predict_action's center crop")
    args = parser.parse_args(argv)
    values = vars(args)
    values["data"] = values["data"] or ""
    cfg = FinetuneConfig(**values)
    if cfg.max_steps < 1 or cfg.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")
    finetune(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
