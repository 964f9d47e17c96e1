"""Load and save LightVLA / OpenVLA-OFT checkpoint directories in the released layout.

    config.json                              Prismatic/OpenVLA config (+ our optional "lightvla" block:
                                             platform, num_images_in_input, unnorm_key, action_rows, ...)
    preprocessor_config.json                 optional: PrismaticImageProcessor settings (normalisation,
                                             image_resize_strategy); honoured when present, else timm's
    model-0000k-of-0000n.safetensors         backbone, projector, Llama (bf16 in released ones)
    model.safetensors.index.json             weight_map: key -> shard file
    tokenizer.json, tokenizer_config.json, special_tokens_map.json
    dataset_statistics.json                  {unnorm_key: {"action": {...}, "proprio": {...}}}
    action_head--<step>_checkpoint.pt        torch.save'd state dict ("module." prefix from DDP)
    proprio_projector--<step>_checkpoint.pt  idem; optional (checkpoints trained without proprio)

All released-name <-> module-name translation lives in KEY_RENAMES and the two functions below.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import PLATFORMS, Platform, get_platform, resolve_device, resolve_dtype
from .errors import CheckpointError
from .preprocess import RESIZE_STRATEGIES, ImageTransform
from .static import resolve_inference_path
from .tokenizer import PromptTokenizer
from .vla import ACTION_ROWS, LightVLA, resolve_action_rows

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
INDEX_FILE = "model.safetensors.index.json"
STATS_FILE = "dataset_statistics.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
ACTION_HEAD_GLOB = "action_head--*_checkpoint.pt"
PROPRIO_GLOB = "proprio_projector--*_checkpoint.pt"

# Released name <-> module name, both directions side by side. OpenVLA's HF export renames
# timm's LayerScale `gamma` to `scale_factor` (HF mangles parameters named gamma); every other
# key (vision_backbone.featurizer.*, vision_backbone.fused_featurizer.*, projector.fc1..3,
# language_model.model.embed_tokens / layers.N / norm, language_model.lm_head) keeps its name.
_LAYER_SCALE = r"^(vision_backbone\.(?:fused_)?featurizer\.blocks\.\d+\.ls[12])"
RELEASED_TO_MODULE = [(_LAYER_SCALE + r"\.scale_factor$", r"\1.gamma")]
MODULE_TO_RELEASED = [(_LAYER_SCALE + r"\.gamma$", r"\1.scale_factor")]
# Heads live in their own files, saved from DDP: "module." + the head's own state-dict keys.
HEAD_MODULES = {"action_head": ACTION_HEAD_GLOB, "proprio_projector": PROPRIO_GLOB}


def released_to_module_key(key: str) -> str:
    for pattern, repl in RELEASED_TO_MODULE:
        key = re.sub(pattern, repl, key)
    return key


def module_to_released_key(key: str) -> str:
    for pattern, repl in MODULE_TO_RELEASED:
        key = re.sub(pattern, repl, key)
    return key


def _strip_ddp(state: dict) -> dict:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError("missing file", file=path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"invalid JSON ({e})", file=path) from e


def _find_one(ckpt: Path, pattern: str, required: bool, step: int | None = None) -> Path | None:
    """The one head file matching `pattern`, or the one of `step` when given.

    Several steps side by side are refused without a step (the reference requires exactly one):
    picking one silently could pair heads that were never trained with these weights.
    """
    files = sorted(ckpt.glob(pattern), key=lambda p: _step_of(p))
    if step is not None:
        wanted = ckpt / pattern.replace("*", str(int(step)))
        if wanted.is_file():
            return wanted
        if required or files:
            raise CheckpointError(f"no head file for step {step}", file=wanted,
                                  expected=wanted.name, found=[f.name for f in files])
        return None
    if not files:
        if required:
            raise CheckpointError("missing head file", file=ckpt / pattern)
        return None
    if len(files) > 1:
        raise CheckpointError(f"{len(files)} head files for {pattern}: pass step= to choose one",
                              file=ckpt, expected="exactly one", found=[f.name for f in files])
    return files[0]


def _step_of(path: Path) -> int:
    m = re.search(r"--(\d+)_checkpoint\.pt$", path.name)
    return int(m.group(1)) if m else -1


# ---- configuration ----------------------------------------------------------------------------
def infer_platform(config: dict, stats: dict, platform: str | None) -> Platform:
    """Explicit argument > config "lightvla.platform" > dataset names in the statistics."""
    if platform is not None:
        return get_platform(platform)
    block = config.get("lightvla", {})
    if block.get("platform"):
        return get_platform(block["platform"])
    found = {name for name in PLATFORMS for key in stats if name in key.lower()}
    if len(found) == 1:
        return get_platform(found.pop())
    raise CheckpointError("cannot tell the robot platform (chunk size / action dim): pass platform=",
                          file=CONFIG_FILE, key="lightvla.platform", expected=f"one of {sorted(PLATFORMS)}",
                          found=sorted(stats))


def recorded_action_rows(config: dict, file="config.json") -> str | None:
    """The action-row convention a checkpoint records (config "lightvla.action_rows"), or None."""
    value = config.get("lightvla", {}).get("action_rows")
    if value is not None and value not in ACTION_ROWS:
        raise CheckpointError("unknown action-row convention", file=file, key="lightvla.action_rows",
                              expected=f"one of {list(ACTION_ROWS)}", found=value)
    return value


def checkpoint_prune(config: dict, prune: bool | None = None) -> bool:
    """Pruning on or off: the argument, else config "lightvla.prune", else on."""
    return bool(config.get("lightvla", {}).get("prune", True) if prune is None else prune)


def read_action_rows(checkpoint_dir, action_rows: str = "auto", prune: bool | None = None) -> str:
    """The convention load_vla(checkpoint_dir, action_rows=..., prune=...) will run, from config.json
    alone (no weights): for reports of processes that do not load the model themselves."""
    path = Path(checkpoint_dir) / CONFIG_FILE
    config = _read_json(path)
    return resolve_action_rows(action_rows, recorded_action_rows(config, path), checkpoint_prune(config, prune))


def read_gripper_postprocess(checkpoint_dir) -> str | None:
    """What the sim runner must do to this checkpoint's gripper output, from config.json's
    "lightvla.gripper_postprocess": "none" for checkpoints fine-tuned on a dataset's own actions
    (lightvla-finetune --statistics data: they emit what the robot applied), None when the
    checkpoint does not say (the released OFT LIBERO ones: the suite config's "libero")."""
    value = _read_json(Path(checkpoint_dir) / CONFIG_FILE).get("lightvla", {}).get("gripper_postprocess")
    return None if value is None else str(value)


def image_transform_from_config(config: dict, preprocessor: dict | None, norm_stats_timm: list,
                                file=PREPROCESSOR_FILE) -> ImageTransform:
    """The image pipeline's settings: preprocessor_config.json when present, else config.json and timm.

    What the released PrismaticImageProcessor applies is its serialised `tvf_normalize_params`
    (set as attributes after __init__, so they win over `means` / `stds`; in released files the
    DINOv2 statistics are bf16-rounded ImageNet values), and `image_resize_strategy`.
    """
    size = int(config.get("image_sizes", [224])[0])
    strategy = config.get("image_resize_strategy", "resize-naive")
    if preprocessor is None:
        return ImageTransform(size=size, norm_stats=tuple(norm_stats_timm), resize_strategy=strategy, source="timm")
    n = len(norm_stats_timm)
    if preprocessor.get("tvf_normalize_params"):
        stats = [(p.get("mean"), p.get("std")) for p in preprocessor["tvf_normalize_params"]]
        key = "tvf_normalize_params"
    elif preprocessor.get("means") and preprocessor.get("stds"):
        stats, key = list(zip(preprocessor["means"], preprocessor["stds"])), "means"
    else:
        raise CheckpointError("no normalisation statistics", file=file, key="tvf_normalize_params")
    if len(stats) != n:
        raise CheckpointError("normalisation entries do not match the vision backbones", file=file, key=key,
                              expected=n, found=len(stats))
    for mean, std in stats:
        ok = all(isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
                 for v in (mean, std))
        if not ok or any(x <= 0 for x in std):
            raise CheckpointError("bad mean/std (3 numbers each, std > 0)", file=file, key=key,
                                  found=[mean, std])
    for entry in preprocessor.get("input_sizes") or []:
        if list(entry)[-2:] != [size, size]:
            raise CheckpointError("input size differs from config.json image_sizes", file=file,
                                  key="input_sizes", expected=[3, size, size], found=entry)
    strategy = preprocessor.get("image_resize_strategy", strategy)
    if strategy not in RESIZE_STRATEGIES:
        raise CheckpointError("unknown image_resize_strategy", file=file, key="image_resize_strategy",
                              expected=f"one of {list(RESIZE_STRATEGIES)}", found=strategy)
    fill = preprocessor.get("tvf_letterbox_fill")
    if not (isinstance(fill, (list, tuple)) and len(fill) == 3):
        means = preprocessor.get("means") or [m for m, _ in stats]
        fill = [int(x * 255) for x in means[-1]]  # Prismatic: the last backbone's mean
    return ImageTransform(size=size, norm_stats=tuple(stats), resize_strategy=strategy,
                          letterbox_fill=tuple(int(v) for v in fill), source=PREPROCESSOR_FILE)


def build_vla(config: dict, platform: Platform, num_images: int, use_proprio: bool = True,
              device: str | torch.device = "cpu") -> LightVLA:
    """Instantiate the modules for `config` (random init; on 'meta' it allocates nothing)."""
    with torch.device(device):
        return LightVLA(config, platform, num_images, use_proprio=use_proprio)


# ---- loading ----------------------------------------------------------------------------------
def _load_shards(ckpt: Path, expected: dict[str, torch.Tensor], device, dtype) -> dict[str, torch.Tensor]:
    """Read every shard listed in the index; check keys and shapes against the model's."""
    index = _read_json(ckpt / INDEX_FILE)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError("index has no weight_map", file=ckpt / INDEX_FILE)
    module_keys = {released_to_module_key(k): k for k in weight_map}
    missing = sorted(set(expected) - set(module_keys))
    if missing:
        raise CheckpointError(f"{len(missing)} missing key(s) in the index, first: {missing[:3]}",
                              file=ckpt / INDEX_FILE, key=module_to_released_key(missing[0]))
    unexpected = sorted(set(module_keys) - set(expected))
    if unexpected:
        raise CheckpointError(f"{len(unexpected)} unexpected key(s), first: {unexpected[:3]}",
                              file=ckpt / INDEX_FILE, key=module_keys[unexpected[0]])
    by_file: dict[str, list[str]] = {}
    for key, fname in weight_map.items():
        by_file.setdefault(fname, []).append(key)
    state = {}
    for fname, keys in sorted(by_file.items()):
        path = ckpt / fname
        if not path.is_file():
            raise CheckpointError("missing shard listed in the index", file=path, key=keys[0])
        with safe_open(str(path), framework="pt", device="cpu") as f:
            present = set(f.keys())
            for key in keys:
                if key not in present:
                    raise CheckpointError("key listed in the index is not in its shard", file=path, key=key)
                mkey = released_to_module_key(key)
                shape = tuple(f.get_slice(key).get_shape())
                want = tuple(expected[mkey].shape)
                if shape != want:
                    raise CheckpointError("shape mismatch", file=path, key=key, expected=want, found=shape)
                state[mkey] = f.get_tensor(key).to(device=device, dtype=dtype)
    return state


def _load_head(path: Path, prefix: str, expected: dict[str, torch.Tensor], device, dtype) -> dict:
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or not a state dict
        raise CheckpointError(f"cannot read head file ({e})", file=path) from e
    state = {f"{prefix}.{k}": v for k, v in _strip_ddp(raw).items()}
    want = {k: v for k, v in expected.items() if k.startswith(prefix + ".")}
    for key in sorted(set(want) - set(state)):
        raise CheckpointError("missing key", file=path, key=key[len(prefix) + 1:])
    for key in sorted(set(state) - set(want)):
        raise CheckpointError("unexpected key", file=path, key=key[len(prefix) + 1:])
    for key, value in state.items():
        if tuple(value.shape) != tuple(want[key].shape):
            raise CheckpointError("shape mismatch", file=path, key=key[len(prefix) + 1:],
                                  expected=tuple(want[key].shape), found=tuple(value.shape))
    return {k: v.to(device=device, dtype=dtype) for k, v in state.items()}


def load_vla(checkpoint_dir, device: str = "auto", dtype: str = "auto", compile: bool = False,
             platform: str | None = None, num_images: int | None = None,
             unnorm_key: str | None = None, prune: bool | None = None, action_rows: str = "auto",
             step: int | None = None, inference_path: str = "dynamic") -> LightVLA:
    """Load a local checkpoint directory (released LightVLA / OpenVLA-OFT layout) for inference.

    platform / num_images / unnorm_key default to the config's "lightvla" block, then to what the
    statistics and the platform imply. prune=False runs without the TokenPruner (plain
    OpenVLA-OFT; default: the config's "lightvla.prune", else True). action_rows: which hidden
    states feed the action head, "oft" | "lightvla" | "auto" (the config's "lightvla.action_rows",
    else "lightvla" with pruning and "oft" without; vla.resolve_action_rows). step picks the head
    files when several steps sit side by side (otherwise an error). inference_path: "dynamic" |
    "static" | "graphed" | "auto" (model/static.py; VLAPolicy and the node default to auto). The
    model comes back in eval mode on `device`.
    """
    ckpt = Path(checkpoint_dir)
    if not ckpt.is_dir():
        raise CheckpointError("checkpoint directory not found", file=ckpt)
    config = _read_json(ckpt / CONFIG_FILE)
    for key in ("timm_model_ids", "text_config"):
        if key not in config:
            raise CheckpointError("config is missing a field", file=ckpt / CONFIG_FILE, key=key)
    if (ckpt / STATS_FILE).is_file():
        stats = _read_json(ckpt / STATS_FILE)  # overrides config.norm_stats, as in OFT
    elif config.get("norm_stats"):
        stats = config["norm_stats"]
    else:
        raise CheckpointError("no normalisation statistics (and config.json has no norm_stats)",
                              file=ckpt / STATS_FILE)
    if not (ckpt / "tokenizer.json").is_file():
        raise CheckpointError("missing tokenizer", file=ckpt / "tokenizer.json")
    block = config.get("lightvla", {})
    plat = infer_platform(config, stats, platform)
    n_images = int(num_images or block.get("num_images_in_input") or config.get("num_images_in_input")
                   or plat.num_images)
    head_file = _find_one(ckpt, ACTION_HEAD_GLOB, required=True, step=step)
    proprio_file = _find_one(ckpt, PROPRIO_GLOB, required=bool(block.get("use_proprio", False)), step=step)
    preprocessor = _read_json(ckpt / PREPROCESSOR_FILE) if (ckpt / PREPROCESSOR_FILE).is_file() else None
    recorded_rows = recorded_action_rows(config, ckpt / CONFIG_FILE)

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    resolve_inference_path(inference_path, device, compile)  # a bad value fails before the weights load
    vla = build_vla(config, plat, n_images, use_proprio=proprio_file is not None, device="meta")
    expected = vla.state_dict()
    heads = ("action_head.", "proprio_projector.")
    backbone_expected = {k: v for k, v in expected.items() if not k.startswith(heads)}
    trimmed = block.get("lm_head") == "trimmed"  # a compact export: the L1 head never reads lm_head
    if trimmed:
        backbone_expected.pop(LM_HEAD_KEY)
    state = _load_shards(ckpt, backbone_expected, device, dtype)
    if trimmed:
        state[LM_HEAD_KEY] = torch.zeros(tuple(expected[LM_HEAD_KEY].shape), device=device, dtype=dtype)
    state.update(_load_head(head_file, "action_head", expected, device, dtype))
    if proprio_file is not None:
        state.update(_load_head(proprio_file, "proprio_projector", expected, device, dtype))
    vla.load_state_dict(state, strict=True, assign=True)
    _materialize_buffers(vla, device)

    vla.norm_stats = stats
    vla.tokenizer = PromptTokenizer.from_file(ckpt / "tokenizer.json")
    vla.tokenizer_files = {n: (ckpt / n).read_bytes() for n in TOKENIZER_FILES if (ckpt / n).is_file()}
    vla.default_unnorm_key = unnorm_key or block.get("unnorm_key")
    vla.resolve_unnorm_key()  # fail now, not at the first inference
    vla.checkpoint_step = _step_of(head_file)
    vla.prune = checkpoint_prune(config, prune)
    vla.action_rows = resolve_action_rows(action_rows, recorded_rows, vla.prune)
    vla.preprocessor_config = preprocessor
    vla.image_transform = image_transform_from_config(config, preprocessor, vla.vision_backbone.norm_stats(),
                                                      ckpt / PREPROCESSOR_FILE)
    vla.eval()
    if compile:
        vla.enable_compile()
    vla.set_inference_path(inference_path)
    return vla


LM_HEAD_KEY = "language_model.lm_head.weight"


def export_compact(checkpoint_dir, out_dir, dtype: str = "float16", trim_lm_head: bool = True) -> Path:
    """A smaller copy for shipping: weights stored in `dtype` and, with trim_lm_head, without the
    LLM's output table (the L1 action head reads hidden states, never logits; load_vla puts zeros
    there, recorded as "lightvla.lm_head": "trimmed"). Everything else is the released layout."""
    vla = load_vla(checkpoint_dir, device="cpu", dtype="float32")
    vla.to(getattr(torch, dtype))
    if trim_lm_head:
        vla.config = dict(vla.config, lightvla=dict(vla.config.get("lightvla", {}), lm_head="trimmed"))
    return save_checkpoint(vla, out_dir, step=vla.checkpoint_step, skip=(LM_HEAD_KEY,) if trim_lm_head else ())


def _materialize_buffers(vla: LightVLA, device: torch.device) -> None:
    """Non-persistent buffers are not in checkpoints: rebuild them (Llama rotary inv_freq)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    with torch.device(device):
        vla.language_model.model.rotary_emb = LlamaRotaryEmbedding(vla.text_config)
    left = [name for name, b in vla.named_buffers() if b.is_meta]
    left += [name for name, p in vla.named_parameters() if p.is_meta]
    if left:
        raise CheckpointError("tensors left uninitialised after loading", key=left[0])


# ---- saving -----------------------------------------------------------------------------------
def _config_for_save(vla: LightVLA) -> dict:
    config = dict(vla.config)
    config["norm_stats"] = vla.norm_stats
    block = dict(config.get("lightvla", {}))
    block.update(platform=vla.platform.name, num_images_in_input=vla.num_images,
                 use_proprio=vla.proprio_projector is not None, action_space=vla.platform.action_space)
    if vla.default_unnorm_key is not None:
        block["unnorm_key"] = vla.default_unnorm_key
    block["action_rows"] = vla.action_rows  # the rows its action head was trained on / runs with
    block["prune"] = bool(vla.prune)  # TokenPruner on at inference (what it was trained with last)
    config["lightvla"] = block
    config["torch_dtype"] = str(next(vla.parameters()).dtype).replace("torch.", "")
    return config


def save_checkpoint(vla: LightVLA, out_dir, step: int = 0, max_shard_bytes: int = 5 * 10**9,
                    min_shards: int = 2, skip: tuple[str, ...] = ()) -> Path:
    """Write `vla` in the released layout (reloads with load_vla). Tensors keep their dtype.
    A model loaded from a trimmed checkpoint stays trimmed: its config says so, and the zeros
    load_vla put in lm_head are not written (fine-tuning the shipped checkpoint saved them, and
    the result refused to load: "1 unexpected key(s)")."""
    if vla.config.get("lightvla", {}).get("lm_head") == "trimmed":
        skip = (*skip, LM_HEAD_KEY)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heads = ("action_head.", "proprio_projector.")
    state = {module_to_released_key(k): v.detach().contiguous().cpu()
             for k, v in vla.state_dict().items() if not k.startswith(heads) and k not in skip}
    total = sum(v.numel() * v.element_size() for v in state.values())
    limit = min(max_shard_bytes, math.ceil(total / min_shards))
    shards: list[dict] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: v.clone() for k, v in shard.items()}, str(out / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    (out / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                             indent=2))
    (out / CONFIG_FILE).write_text(json.dumps(_config_for_save(vla), indent=2))
    (out / STATS_FILE).write_text(json.dumps(vla.norm_stats, indent=2))
    for name, data in getattr(vla, "tokenizer_files", {}).items():
        (out / name).write_bytes(data)
    if getattr(vla, "preprocessor_config", None) is not None:
        (out / PREPROCESSOR_FILE).write_text(json.dumps(vla.preprocessor_config, indent=2))
    for old in list(out.glob(ACTION_HEAD_GLOB)) + list(out.glob(PROPRIO_GLOB)):
        old.unlink()  # one step per directory: no stale heads beside the new ones
    for prefix, pattern in HEAD_MODULES.items():
        module = getattr(vla, prefix)
        if module is None:
            continue
        head_state = {f"module.{k}": v.detach().cpu().clone() for k, v in module.state_dict().items()}
        torch.save(head_state, out / pattern.replace("*", str(int(step))))
    return out
