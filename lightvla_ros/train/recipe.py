"""Run a training recipe: collect demos -> make a checkpoint -> fine-tune stages -> evaluate.

    lightvla-train-recipe recipes/lift.yaml [--out runs/lift] [--quick] [--skip-eval]

Each part is skipped when its output is already complete, and a stage stopped part-way resumes
(train_state.pt), so re-running a recipe continues where it stopped. `--quick` applies the
recipe's `quick:` overrides (a shortened run for CI). The final checkpoint is
OUT/<last stage name>; the evaluation report OUT/eval.json. Recipe format: docs/training.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import yaml


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_recipe(path, quick: bool = False) -> dict:
    recipe = yaml.safe_load(Path(path).read_text()) or {}
    for key in ("collect", "model", "stages"):
        if key not in recipe:
            raise ValueError(f"recipe {path}: missing section {key!r}")
    if quick and recipe.get("quick"):
        q = recipe["quick"]
        if isinstance(recipe["collect"], list):  # quick collection: the first section, overridden
            recipe = dict(recipe, collect=_merge(recipe["collect"][0], q.get("collect") or {}))
        recipe = _merge(recipe, {k: v for k, v in q.items() if k != "stages"})
        recipe["stages"] = [dict(st, **(q.get("stages") or {})) for st in recipe["stages"]]
    return recipe


def collect_sections(recipe: dict) -> list[dict]:
    """The recipe's `collect:` as a list: one mapping, or a list of them (e.g. clean demos plus
    DART demos with action_noise), all written into OUT/demos."""
    c = recipe["collect"]
    return [dict(x) for x in (c if isinstance(c, list) else [c])]


def collect(recipe: dict, out: Path, log) -> Path:
    from .collect import main as collect_main, parse_indices

    demos = out / "demos"
    sections = collect_sections(recipe)
    want = sum(len(parse_indices(c["init_states"])) * len(str(c["tasks"]).split(",")) for c in sections)
    have = len(list(demos.glob("*.npz"))) if demos.is_dir() else 0
    if have >= want:
        log(f"[recipe] demos: {have} episode(s) in {demos}, skipping collection")
        return demos
    log(f"[recipe] collecting {want} demo(s) into {demos}")
    for c in sections:
        argv = [str(demos), "--suite", str(c["suite"]), "--tasks", str(c["tasks"]), "--init-states",
                str(c["init_states"]), "--camera-size", str(c.get("camera_size", 128))]
        for key in ("chunk_size", "action_noise", "noise_seed", "noise_phases", "start_offset"):
            if key in c:
                argv += [f"--{key.replace('_', '-')}", str(c[key])]
        if c.get("plan_targets"):
            argv.append("--plan-targets")
        if collect_main(argv) != 0:
            raise RuntimeError(f"demo collection saved nothing ({c})")
    return demos


def make_initial(recipe: dict, out: Path, log) -> Path:
    from ..model.make_checkpoint import make_checkpoint

    m = dict(recipe["model"])
    init = out / "init"
    if (init / "config.json").is_file():
        log(f"[recipe] initial checkpoint {init} exists")
        return init
    geometry = {k: m[k] for k in ("vision_dim", "vision_depth", "vision_heads", "llm_dim", "llm_layers",
                                  "llm_heads", "llm_ffn") if m.get(k)}
    make_checkpoint(init, size=m.get("size", "tiny"), seed=int(recipe.get("seed", 0)), vision=m.get("vision", "dinov2"),
                    image_size=int(m.get("image_size", 224)), geometry=geometry, prune=False,
                    proprio_to_head=bool(m.get("proprio_to_head", False)))
    log(f"[recipe] initial checkpoint {init} (random weights, seed {recipe.get('seed', 0)})")
    return init


def run_stages(recipe: dict, start: Path, demos: Path, out: Path, log) -> Path:
    from .finetune import TRAIN_STATE, FinetuneConfig, finetune

    if recipe.get("torch_threads"):  # CPU results depend on torch's intra-op thread count
        import torch
        torch.set_num_threads(int(recipe["torch_threads"]))
        log(f"[recipe] torch threads: {torch.get_num_threads()}")
    ckpt = start
    for i, stage in enumerate(recipe["stages"]):
        stage = dict(stage)
        name = stage.pop("name", f"stage{i + 1}")
        stage_out = out / name
        done = (stage_out / "finetune_log.json").is_file() and not (stage_out / TRAIN_STATE).is_file()
        if done:
            log(f"[recipe] {name}: finished earlier ({stage_out})")
        else:
            cfg = FinetuneConfig(checkpoint=str(ckpt), out_dir=str(stage_out), data=str(demos),
                                 seed=int(recipe.get("seed", 0)), device="cpu", dtype="float32",
                                 resume=(stage_out / TRAIN_STATE).is_file(), **stage)
            log(f"[recipe] {name}: {cfg.max_steps} steps, pruner {cfg.prune}, from {ckpt}")
            t0 = time.perf_counter()
            finetune(cfg)
            log(f"[recipe] {name}: {time.perf_counter() - t0:.0f} s")
        ckpt = stage_out
    return ckpt


def evaluate(recipe: dict, ckpt: Path, out: Path, log) -> dict:
    from ..eval.sim_eval import main as sim_eval_main

    e = recipe.get("evaluate") or {}
    c = collect_sections(recipe)[0]
    argv = ["--checkpoint", str(ckpt), "--suite", str(c["suite"]), "--tasks", str(c["tasks"]),
            "--init-states", ",".join(str(i) for i in _indices(e.get("init_states", "0-19"))),
            "--camera-size", str(c.get("camera_size", 128)), "--report", str(out / "eval.json"), "--quiet"]
    if e.get("config"):  # the sim_bridge / lightvla_policy settings (e.g. the gripper convention)
        argv += ["--config", str(e["config"])]
    if e.get("in_process", True):
        argv.append("--in-process")
    sim_eval_main(argv)
    report = json.loads((out / "eval.json").read_text())
    eps = report["episodes"]
    ok = sum(bool(r.get("success")) for r in eps)
    log(f"[recipe] evaluation: {ok}/{len(eps)} held-out episodes succeeded ({ckpt})")
    return report


def _indices(spec) -> list[int]:
    from .collect import parse_indices
    return parse_indices(str(spec))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lightvla-train-recipe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", help="recipe YAML (e.g. recipes/lift.yaml)")
    ap.add_argument("--out", default=None, help="run directory (default runs/<recipe name>)")
    ap.add_argument("--quick", action="store_true", help="the recipe's quick: overrides (a CI-sized run)")
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, quick=args.quick)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"lightvla-train-recipe: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/{recipe.get('name', Path(args.recipe).stem)}")
    out.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, flush=True)

    t0 = time.perf_counter()
    demos = collect(recipe, out, log)
    init = make_initial(recipe, out, log)
    final = run_stages(recipe, init, demos, out, log)
    summary = {"recipe": str(args.recipe), "quick": args.quick, "checkpoint": str(final),
               "seconds": round(time.perf_counter() - t0, 1)}
    if not args.skip_eval:
        t1 = time.perf_counter()
        report = evaluate(recipe, final, out, log)
        eps = report["episodes"]
        summary.update(successes=sum(bool(r.get("success")) for r in eps), episodes=len(eps),
                       eval_seconds=round(time.perf_counter() - t1, 1))
    (out / "recipe_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    evaluated = f", evaluated in {summary['eval_seconds']:.0f} s" if "eval_seconds" in summary else ""
    log(f"[recipe] built in {summary['seconds']:.0f} s{evaluated}: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
