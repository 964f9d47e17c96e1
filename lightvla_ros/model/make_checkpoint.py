"""Generate a random-weight LightVLA checkpoint in the released directory layout.

    lightvla-make-checkpoint OUT_DIR [--size tiny|small|7b] [--platform libero|aloha|bridge]
                             [--num-images N] [--seed S] [--vision dinosiglip|dinov2|siglip]
                             [--action-rows oft|lightvla]

No download: the ViTs come from timm with pretrained=False (shrunk by recorded overrides),
the Llama from a LlamaConfig, the tokenizer is built locally. Weights are random, so actions
are meaningless, but every shape, file and code path is the real one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

from .checkpoint import TOKENIZER_FILES, build_vla, save_checkpoint
from .config import PAD_TOKEN_ID, SIZES, VISION_BACKBONES, VISION_SHORT_NAMES, get_platform
from .tokenizer import PromptTokenizer, build_llama_like_tokenizer, save_tokenizer_files
from .vla import ACTION_ROWS, TRAIN_ACTION_ROWS


def _family(timm_id: str) -> str:
    return "dinov2" if "dinov2" in timm_id else "siglip"


def make_config(size: str = "tiny", platform: str = "libero", num_images: int = 2,
                vision: str = "dinosiglip", image_size: int = 224, geometry: dict | None = None) -> dict:
    """config.json contents: the released Prismatic/OpenVLA fields + timm size overrides + our block.

    geometry overrides the size's numbers: vision_dim, vision_depth, vision_heads (every backbone),
    llm_dim, llm_layers, llm_heads, llm_ffn. image_size: the square input of the vision towers
    (a multiple of 14, their patch size)."""
    if image_size < 14 or image_size % 14:
        raise ValueError(f"image_size must be a positive multiple of 14 (the patch size), got {image_size}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {sorted(SIZES)}")
    backbone_id = VISION_SHORT_NAMES.get(vision, vision)
    if backbone_id not in VISION_BACKBONES:
        raise ValueError(f"unknown vision backbone {vision!r}; known: {sorted(VISION_SHORT_NAMES)}")
    plat = get_platform(platform)
    timm_ids = VISION_BACKBONES[backbone_id]
    spec = SIZES[size]
    vision_over = {_family(t): dict(spec["timm_overrides"][_family(t)] or {}) for t in timm_ids}
    text = dict(spec["text"])
    g = dict(geometry or {})
    unknown = set(g) - {"vision_dim", "vision_depth", "vision_heads", "llm_dim", "llm_layers", "llm_heads", "llm_ffn"}
    if unknown:
        raise ValueError(f"unknown geometry keys {sorted(unknown)}")
    for fam in vision_over:
        for key, name in (("vision_dim", "embed_dim"), ("vision_depth", "depth"), ("vision_heads", "num_heads")):
            if g.get(key):
                vision_over[fam][name] = int(g[key])
    for key, name in (("llm_dim", "hidden_size"), ("llm_layers", "num_hidden_layers"),
                      ("llm_ffn", "intermediate_size")):
        if g.get(key):
            text[name] = int(g[key])
    if g.get("llm_heads"):
        text["num_attention_heads"] = text["num_key_value_heads"] = int(g["llm_heads"])
    if g.get("llm_dim") and not g.get("llm_ffn"):
        text["intermediate_size"] = 2 * int(g["llm_dim"])
    fused = len(timm_ids) == 2
    return {
        "architectures": ["OpenVLAForActionPrediction"],
        "model_type": "openvla",
        "vision_backbone_id": backbone_id,
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp" if fused else "no-align+gelu-mlp",
        "use_fused_vision_backbone": fused,
        "image_resize_strategy": "resize-naive",
        "timm_model_ids": timm_ids,
        "timm_override_act_layers": [None] * len(timm_ids),
        "image_sizes": [int(image_size)] * len(timm_ids),
        "timm_model_kwargs": [vision_over[_family(t)] or None for t in timm_ids],
        "text_config": dict(text, model_type="llama", architectures=["LlamaForCausalLM"]),
        "llm_max_length": 2048,
        "pad_token_id": PAD_TOKEN_ID,
        "pad_to_multiple_of": 64,
        "n_action_bins": 256,
        "output_projector_states": False,
        "transformers_version": transformers.__version__,
        "lightvla": {"platform": plat.name, "num_images_in_input": num_images, "use_proprio": True,
                     "action_space": plat.action_space, "generated_size": size},
    }


def make_preprocessor_config(config: dict, norm_stats: list) -> dict:
    """preprocessor_config.json in the released PrismaticImageProcessor format (timm statistics)."""
    size = int(config["image_sizes"][0])
    n = len(config["timm_model_ids"])
    means = [list(m) for m, _ in norm_stats]
    stds = [list(s) for _, s in norm_stats]
    return {
        "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                     "AutoProcessor": "processing_prismatic.PrismaticProcessor"},
        "image_processor_type": "PrismaticImageProcessor",
        "processor_class": "PrismaticProcessor",
        "image_resize_strategy": config["image_resize_strategy"],
        "input_sizes": [[3, size, size]] * n,
        "interpolations": ["bicubic"] * n,
        "means": means,
        "stds": stds,
        "tvf_crop_params": [{"output_size": [size, size]}] * n,
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_normalize_params": [{"inplace": False, "mean": m, "std": s} for m, s in zip(means, stds)],
        "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None, "size": [size, size]}] * n,
        "use_fused_vision_backbone": n == 2,
    }


def make_statistics(platform: str = "libero") -> tuple[str, dict]:
    """Realistic dataset_statistics.json content (LIBERO-like bounds; gripper unmasked)."""
    plat = get_platform(platform)
    rng = np.random.default_rng(1234)
    dim, pdim = plat.action_dim, plat.proprio_dim
    if plat.name == "libero":
        key = "libero_object_no_noops"
        q01 = [-0.74, -0.85, -0.93, -0.12, -0.17, -0.23, 0.0]
        q99 = [0.88, 0.83, 0.94, 0.13, 0.19, 0.26, 1.0]
        mask = [True] * 6 + [False]
        p_q01 = [-0.25, -0.32, 0.88, 2.90, -0.55, -0.40, 0.001, -0.040]
        p_q99 = [0.15, 0.30, 1.25, 3.25, 0.45, 0.35, 0.040, -0.001]
    else:
        key = {"aloha": "aloha_put_x_into_pot", "bridge": "bridge_orig"}[plat.name]
        q01 = list(np.round(-rng.uniform(0.2, 1.0, dim), 3))
        q99 = list(np.round(rng.uniform(0.2, 1.0, dim), 3))
        mask = [True] * dim if plat.name == "aloha" else [True] * (dim - 1) + [False]
        if plat.name == "bridge":
            q01[-1], q99[-1] = 0.0, 1.0
        p_q01 = list(np.round(-rng.uniform(0.2, 1.0, pdim), 3))
        p_q99 = list(np.round(rng.uniform(0.2, 1.0, pdim), 3))

    def entry(low, high, with_mask):
        low, high = np.asarray(low, float), np.asarray(high, float)
        d = {"mean": ((low + high) / 2).tolist(), "std": ((high - low) / 4).tolist(),
             "max": (high + 0.05 * (high - low)).tolist(), "min": (low - 0.05 * (high - low)).tolist(),
             "q01": low.tolist(), "q99": high.tolist()}
        if with_mask is not None:
            d["mask"] = with_mask
        return d

    stats = {"action": entry(q01, q99, mask), "proprio": entry(p_q01, p_q99, None),
             "num_transitions": 66984, "num_trajectories": 454}
    return key, {key: stats}


def make_checkpoint(out_dir, size: str = "tiny", seed: int = 0, platform: str = "libero",
                    num_images: int = 2, vision: str = "dinosiglip", step: int = 0,
                    dtype: torch.dtype | None = None, action_rows: str = TRAIN_ACTION_ROWS,
                    image_size: int = 224, geometry: dict | None = None, prune: bool = True,
                    proprio_to_head: bool = False) -> Path:
    """Write a random checkpoint to `out_dir` and return its path (reloads with load_vla).

    action_rows is recorded in config.json (default "oft": what fine-tuning here trains on).
    proprio_to_head records the option beyond the reference that adds the proprio token to the
    action head's inputs (LightVLA.proprio_to_head, docs/training.md).
    """
    config = make_config(size, platform, num_images, vision, image_size=image_size, geometry=geometry)
    if proprio_to_head:
        config["lightvla"]["proprio_to_head"] = True
    key, stats = make_statistics(platform)
    config["norm_stats"] = stats
    config["lightvla"]["unnorm_key"] = key
    torch.manual_seed(seed)
    vla = build_vla(config, get_platform(platform), num_images, use_proprio=True, device="cpu")
    with torch.no_grad():
        # a random head would put actions far outside [-1, 1]; keep them near the middle
        vla.action_head.model.fc2.weight.mul_(0.05)
        vla.action_head.model.fc2.bias.zero_()
    if dtype is None:
        dtype = torch.bfloat16 if size == "7b" else torch.float32
    vla.to(dtype)
    vla.norm_stats = stats
    vla.default_unnorm_key = key
    vla.action_rows = action_rows
    vla.prune = bool(prune)
    vla.preprocessor_config = make_preprocessor_config(config, vla.vision_backbone.norm_stats())
    tok = build_llama_like_tokenizer()
    vla.tokenizer = PromptTokenizer(tok)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer_files(tok, out)
    vla.tokenizer_files = {n: (out / n).read_bytes() for n in TOKENIZER_FILES}
    return save_checkpoint(vla, out, step=step)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightvla-make-checkpoint", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--platform", default="libero", choices=["libero", "aloha", "bridge"])
    parser.add_argument("--num-images", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vision", default="dinosiglip", choices=sorted(VISION_SHORT_NAMES))
    parser.add_argument("--action-rows", default=TRAIN_ACTION_ROWS, choices=list(ACTION_ROWS),
                        help="action-row convention recorded in config.json (docs/model.md)")
    parser.add_argument("--image-size", type=int, default=224, help="vision input size (multiple of 14)")
    for name, what in (("vision-dim", "ViT width"), ("vision-depth", "ViT blocks"), ("vision-heads", "ViT heads"),
                       ("llm-dim", "Llama hidden size"), ("llm-layers", "Llama layers"), ("llm-heads", "Llama heads"),
                       ("llm-ffn", "Llama MLP size (default 2 x llm-dim when llm-dim is given)")):
        parser.add_argument(f"--{name}", type=int, default=None, help=f"{what} (overrides --size)")
    parser.add_argument("--no-prune", action="store_false", dest="prune", help="record the pruner as off")
    parser.add_argument("--proprio-to-head", action="store_true",
                        help="add the proprio token to the action head's inputs (beyond the reference)")
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error("--num-images must be >= 1")
    geometry = {k: getattr(args, k) for k in ("vision_dim", "vision_depth", "vision_heads", "llm_dim", "llm_layers",
                                              "llm_heads", "llm_ffn") if getattr(args, k)}
    try:
        out = make_checkpoint(args.out_dir, size=args.size, seed=args.seed, platform=args.platform,
                              num_images=args.num_images, vision=args.vision, action_rows=args.action_rows,
                              image_size=args.image_size, geometry=geometry, prune=args.prune,
                              proprio_to_head=args.proprio_to_head)
    except ValueError as e:
        parser.error(str(e))
    print(f"wrote {args.size} {args.platform} checkpoint ({args.num_images} image(s)) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def export_main(argv: list[str] | None = None) -> int:
    """lightvla-export SRC DST [--dtype float16] [--keep-lm-head]: a compact copy for shipping."""
    from .checkpoint import export_compact
    from .errors import CheckpointError

    parser = argparse.ArgumentParser(prog="lightvla-export", description=export_main.__doc__)
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--keep-lm-head", action="store_true", help="keep the LLM output table (unused by the L1 head)")
    args = parser.parse_args(argv)
    try:
        out = export_compact(args.src, args.dst, dtype=args.dtype, trim_lm_head=not args.keep_lm_head)
    except (CheckpointError, OSError) as e:
        print(f"lightvla-export: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB, {args.dtype}{'' if args.keep_lm_head else ', lm_head trimmed'})")
    return 0
