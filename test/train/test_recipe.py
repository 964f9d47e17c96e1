"""The data path for learning: demos recorded as the node sees them, the training options, a
shortened recipe run end to end (collect -> checkpoint -> three stages -> in-process evaluation)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def test_collected_proprio_is_what_the_node_assembles_and_matches_the_sim(tmp_path):
    """The proprio goes through ObservationAssembler (as in the node) and equals the sim's own OFT
    layout (eef pos, robosuite quat2axisangle, finger qpos)."""
    from lightvla_ros.sim import SimConfig, make_env
    from lightvla_ros.train.collect import collect_episode
    from lightvla_ros.train.dataset import load_episode, save_episode

    with make_env(SimConfig(suite="robosuite", task="Lift", camera_size=64)) as env:
        ep, info = collect_episode(env, 3)
        assert info["success"] and ep is not None
        first = env.reset(3)  # robosuite: no wait steps, so step 0 is the reset state
    assert env.num_wait_steps == 0
    np.testing.assert_allclose(ep.proprio[0], first.proprio, atol=1e-5)
    np.testing.assert_array_equal(ep.images[0, 0], first.images["agentview"])
    assert ep.images.shape[1:] == (2, 64, 64, 3) and len(ep) == info["steps"]
    assert np.all(np.diff(ep.timestamps) > 0) and np.all(np.abs(ep.actions) <= 1.0)
    back = load_episode(save_episode(ep, tmp_path / "e.npz"))
    np.testing.assert_array_equal(back.timestamps, ep.timestamps)


def test_dart_noise_moves_the_robot_off_the_plan_and_records_the_experts_corrections():
    """--action-noise: the sim applies the expert's action plus noise, the episode records the
    expert's closed-loop answer at each state (chunk 1). The states leave the clean trajectory and
    the recorded actions steer back: the expert still succeeds."""
    from lightvla_ros.sim import SimConfig, make_env
    from lightvla_ros.train.collect import collect_episode

    with make_env(SimConfig(suite="robosuite", task="Lift", camera_size=32)) as env:
        clean, _ = collect_episode(env, 7, chunk_size=1)
        noisy, info = collect_episode(env, 7, chunk_size=1, action_noise=0.4, noise_seed=0)
        again, _ = collect_episode(env, 7, chunk_size=1, action_noise=0.4, noise_seed=0)
    assert info["success"] and noisy is not None and clean is not None
    np.testing.assert_array_equal(noisy.proprio, again.proprio)  # seeded
    n = min(len(clean), len(noisy))
    drift = np.abs(noisy.proprio[:n, :3] - clean.proprio[:n, :3]).max()
    assert drift > 0.005, drift  # metres off the clean path
    assert np.all(np.abs(noisy.actions) <= 1.0) and set(np.unique(noisy.actions[:, 6])) <= {-1.0, 1.0}


def test_noise_phases_keep_the_noise_to_the_named_expert_phases():
    """--noise-phases lift: the grasp runs exactly as without noise (the states match the clean
    episode until the lift starts), the lift is perturbed; an unknown phase is a clear error."""
    from lightvla_ros.sim import SimConfig, make_env
    from lightvla_ros.train.collect import collect_episode

    with make_env(SimConfig(suite="robosuite", task="Lift", camera_size=32)) as env:
        clean, _ = collect_episode(env, 7, chunk_size=1)
        lift_only, info = collect_episode(env, 7, chunk_size=1, action_noise=0.4, noise_phases=("lift",))
        with pytest.raises(ValueError, match="unknown expert phase.*carry"):
            collect_episode(env, 7, chunk_size=1, action_noise=0.4, noise_phases=("carry",))
    assert info["success"]
    closed = int(np.argmax(clean.actions[:, 6] > 0))  # the first close step; the lift follows it
    np.testing.assert_array_equal(lift_only.proprio[:closed + 1], clean.proprio[:closed + 1])
    n = min(len(clean), len(lift_only))
    assert np.abs(lift_only.proprio[:n, :3] - clean.proprio[:n, :3]).max() > 0.003


def test_start_offset_starts_the_expert_off_its_usual_start():
    """--start-offset: the recorded episode begins where the unrecorded move left the arm (off the
    clean start by up to the offset per axis, seeded), and the expert still succeeds from there."""
    from lightvla_ros.sim import SimConfig, make_env
    from lightvla_ros.train.collect import collect_episode

    with make_env(SimConfig(suite="robosuite", task="Lift", camera_size=32)) as env:
        clean, _ = collect_episode(env, 7)
        moved, info = collect_episode(env, 7, start_offset=0.05, noise_seed=3)
    assert info["success"]
    shift = np.abs(moved.proprio[0, :3] - clean.proprio[0, :3])
    assert shift.max() > 0.01 and np.all(shift < 0.05 + 0.01), shift
    assert not np.array_equal(moved.images[0], clean.images[0])


def test_plan_targets_label_every_step_with_the_experts_plan_from_that_step(tmp_path):
    """--plan-targets: the executed actions are unchanged; at the expert's own chunk starts the
    recorded plan is the executed chunk; mid-chunk it is a fresh plan from that state, which the
    training samples use as the target (the policy plans from whatever step it is asked at)."""
    from lightvla_ros.model.preprocess import norm_bounds, unnormalize_actions
    from lightvla_ros.sim import SimConfig, make_env
    from lightvla_ros.train.collect import collect_episode
    from lightvla_ros.train.dataset import ChunkDataset, compute_statistics, load_episode, save_episode

    with make_env(SimConfig(suite="robosuite", task="Lift", camera_size=32)) as env:
        plain, _ = collect_episode(env, 4, chunk_size=8)
        ep, info = collect_episode(env, 4, chunk_size=8, plan_targets=True)
    assert info["success"] and plain.action_chunks is None
    np.testing.assert_array_equal(ep.actions, plain.actions)
    assert ep.action_chunks.shape == (len(ep), 8, 7)
    for t in range(0, len(ep) - 8, 8):
        np.testing.assert_array_equal(ep.action_chunks[t], ep.actions[t:t + 8])
    # mid-chunk the arm still lags behind the first plan: the fresh plan asks for more than the
    # tail of the old one
    mid = [t for t in range(len(ep)) if t % 8]
    assert np.abs(ep.action_chunks[mid, 0, :3] - ep.actions[mid, :3]).mean() > 0.05

    back = load_episode(save_episode(ep, tmp_path / "e.npz"))
    np.testing.assert_array_equal(back.action_chunks, ep.action_chunks)
    stats = compute_statistics([back])
    data = ChunkDataset([back], 8, stats, "bounds_q99", num_images=2, action_dim=7, proprio_dim=8)
    low, high, _ = norm_bounds(stats["action"], "bounds_q99")
    raw = unnormalize_actions(data[2].actions, stats["action"], "bounds_q99")
    np.testing.assert_allclose(raw, np.clip(ep.action_chunks[2], low, high), atol=1e-5)
    with pytest.raises(ValueError, match="planned chunks of 8 steps, the model predicts 16"):
        ChunkDataset([back], 16, stats, "bounds_q99", num_images=2, action_dim=7, proprio_dim=8)


def test_lr_schedule_warmup_then_cosine():
    from lightvla_ros.train.finetune import FinetuneConfig, lr_factor

    cfg = FinetuneConfig(max_steps=110, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.55)          # half way: (1 + 0.1) / 2
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    assert lr_factor(50, FinetuneConfig(max_steps=110)) == 1.0  # constant by default


def test_make_checkpoint_geometry_and_image_size(tmp_path):
    from lightvla_ros.model import load_vla
    from lightvla_ros.model.make_checkpoint import make_checkpoint, make_config

    with pytest.raises(ValueError, match="multiple of 14"):
        make_config(image_size=100)
    out = make_checkpoint(tmp_path / "c", vision="dinov2", image_size=84, prune=False,
                          geometry={"vision_dim": 64, "vision_depth": 2, "vision_heads": 2, "llm_dim": 64,
                                    "llm_layers": 1, "llm_heads": 2})
    vla = load_vla(out, device="cpu", dtype="float32")
    assert vla.vision_backbone.num_patches == 36 and vla.text_config.hidden_size == 64
    assert vla.text_config.num_hidden_layers == 1 and vla.prune is False


def test_finetune_stops_and_resumes_where_it_stopped(tmp_path, tiny_checkpoint):
    from lightvla_ros.train import finetune as ft

    cfg = ft.FinetuneConfig(checkpoint=str(tiny_checkpoint), out_dir=str(tmp_path / "run"), synthetic=True,
                            max_steps=4, batch_size=2, save_every=2, device="cpu", dtype="float32", prune="on")

    class Interrupted(Exception):
        pass

    real_train = ft.train

    def train_then_die(*a, on_save=None, **kw):  # the process is killed right after the step-2 save
        def save_and_die(step, opt, hist):
            on_save(step, opt, hist)
            raise Interrupted
        return real_train(*a, on_save=save_and_die, **kw)

    ft.train = train_then_die
    try:
        with pytest.raises(Interrupted):
            ft.finetune(cfg, log=None)
    finally:
        ft.train = real_train
    state = tmp_path / "run" / ft.TRAIN_STATE
    assert state.is_file()
    res = ft.finetune(ft.FinetuneConfig(**{**cfg.__dict__, "resume": True}), log=None)
    assert [r.step for r in res.history] == [2, 3] and not state.exists()
    log = json.loads((tmp_path / "run" / "finetune_log.json").read_text())
    assert [r["step"] for r in log["history"]] == [0, 1, 2, 3]
    cfgjson = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfgjson["lightvla"]["prune"] is True and cfgjson["lightvla"]["action_rows"] == "oft"


def test_quick_recipe_lowers_the_loss_and_gives_a_loadable_checkpoint(tmp_path):
    from lightvla_ros.policy.vla_policy import VLAPolicy
    from lightvla_ros.train.recipe import main

    out = tmp_path / "lift"
    torch.set_num_threads(1)
    assert main([str(REPO / "recipes" / "lift.yaml"), "--quick", "--out", str(out)]) == 0
    assert torch.get_num_threads() == 2  # the recipe's torch_threads: CPU results depend on it
    summary = json.loads((out / "recipe_summary.json").read_text())
    assert summary["episodes"] == 1
    first = json.loads((out / "stage1_pruner_off" / "finetune_log.json").read_text())["history"]
    losses = [r["loss"] for r in first]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    last = json.loads((out / "stage3_pruner_drop" / "finetune_log.json").read_text())
    assert last["config"]["pruner_training"] == "drop"  # the pruned sequence, as at inference
    assert all(r["seq_len_out"] < r["seq_len_in"] for r in last["history"])
    final = Path(summary["checkpoint"])
    assert final.name == "stage3_pruner_drop"
    policy = VLAPolicy(final, device="cpu", dtype="float32")
    assert policy.model.prune is True and policy.model.action_rows == "oft"
    report = json.loads((out / "eval.json").read_text())
    assert report["episodes"][0]["in_process"] and report["episodes"][0]["policy_steps"] > 0
    # trained on the sim's own actions: the evaluation must not convert the gripper
    assert json.loads((final / "config.json").read_text())["lightvla"]["gripper_postprocess"] == "none"
    assert report["gripper_postprocess"] == "none"


def test_libero_recipe_collects_clean_dart_and_offset_demos(tmp_path, monkeypatch):
    """recipes/libero_object.yaml's three collect sections reach lightvla-collect with their options,
    and its model has the proprio_to_head option."""
    from lightvla_ros.train import collect as collect_module
    from lightvla_ros.train.recipe import collect, load_recipe

    calls = []
    monkeypatch.setattr(collect_module, "main", lambda argv: calls.append(argv) or 0)
    collect(load_recipe(REPO / "recipes" / "libero_object.yaml"), tmp_path, log=lambda *_: None)
    assert [c[c.index("--init-states") + 1] for c in calls] == ["20-49,1000-1029", "1030-1089", "1090-1149"]
    clean, dart, offset = calls
    # the closed-loop expert everywhere: a chunked expert's targets depend on its chunk phase
    assert all(c[c.index("--chunk-size") + 1] == "1" and "--plan-targets" not in c for c in calls)
    assert "--action-noise" not in clean and "--start-offset" not in clean
    assert dart[dart.index("--noise-phases") + 1] == "above,lift,carry"
    assert offset[offset.index("--start-offset") + 1] == "0.06"
    recipe = load_recipe(REPO / "recipes" / "libero_object.yaml")
    assert recipe["model"]["proprio_to_head"] is True


def test_recipe_model_option_proprio_to_head_reaches_the_initial_checkpoint(tmp_path):
    """`model: proprio_to_head: true` in a recipe (an option beyond the reference) is recorded in
    the initial checkpoint's config.json, so every stage trains and saves it (docs/training.md)."""
    from lightvla_ros.model import load_vla
    from lightvla_ros.model.make_checkpoint import main as make_main
    from lightvla_ros.train.recipe import make_initial

    model = {"vision": "dinov2", "image_size": 84, "vision_dim": 64, "vision_depth": 2, "vision_heads": 2,
             "llm_dim": 64, "llm_layers": 1, "llm_heads": 2}
    init = make_initial({"model": {**model, "proprio_to_head": True}}, tmp_path / "on", log=lambda *_: None)
    assert json.loads((init / "config.json").read_text())["lightvla"]["proprio_to_head"] is True
    assert load_vla(init, device="cpu", dtype="float32").proprio_to_head
    init = make_initial({"model": model}, tmp_path / "off", log=lambda *_: None)
    assert "proprio_to_head" not in json.loads((init / "config.json").read_text())["lightvla"]
    assert make_main([str(tmp_path / "cli"), "--proprio-to-head"]) == 0
    assert load_vla(tmp_path / "cli", device="cpu", dtype="float32").proprio_to_head
