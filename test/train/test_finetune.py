"""Fine-tuning on the tiny checkpoint: the loss falls, the schedule holds, the save reloads."""
import json
import shutil

import numpy as np
import pytest
import torch

from lightvla_ros.model import load_vla
from lightvla_ros.model.checkpoint import read_gripper_postprocess
from lightvla_ros.model.preprocess import normalize_proprio, unnormalize_actions
from lightvla_ros.train.dataset import (ChunkDataset, Episode, load_episodes, make_synthetic_episodes,
                                        normalize_actions, save_episode)
from lightvla_ros.train.finetune import (FinetuneConfig, build_dataset, finetune, main, prepare_model,
                                         save_finetuned, train)


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path):
    """A private copy: fine-tuning must never touch the shared fixture."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")


def _stats(ckpt):
    stats = json.loads((ckpt / "dataset_statistics.json").read_text())
    return next(iter(stats.values()))


def _episodes(ckpt, num_episodes=2, length=8, seed=0):
    return make_synthetic_episodes(_stats(ckpt), num_episodes=num_episodes, length=length, seed=seed)


def _predict(vla, episodes):
    """Unnormalised chunks from predict_action (eval mode) on two observations."""
    vla.eval()
    out = []
    for ep in episodes[:2]:
        pred = vla.predict_action([ep.images[0, c] for c in range(ep.num_cameras)], ep.instruction,
                                  ep.proprio[0])
        assert sum(pred.kept_per_image) < sum(pred.total_per_image)  # eval mode really prunes
        out.append(pred.actions)
    return np.stack(out)


# ---- dataset ---------------------------------------------------------------------------------
def test_chunks_repeat_the_last_action_and_normalise_like_predict_unnormalises(checkpoint):
    stats = _stats(checkpoint)
    (ep,) = _episodes(checkpoint, num_episodes=1, length=5)
    ds = ChunkDataset([ep], chunk_size=8, stats=stats, normalization="bounds_q99", num_images=2,
                      action_dim=7, proprio_dim=8)
    assert len(ds) == 5
    sample = ds[3]
    assert sample.actions.shape == (8, 7) and len(sample.images) == 2
    expected = normalize_actions(ep.actions[[3, 4, 4, 4, 4, 4, 4, 4]], stats["action"], "bounds_q99")
    np.testing.assert_array_equal(sample.actions, expected)
    # inside the bounds, normalising then unnormalising gives the raw actions back (gripper unmasked)
    np.testing.assert_allclose(unnormalize_actions(sample.actions, stats["action"], "bounds_q99"),
                               ep.actions[[3, 4, 4, 4, 4, 4, 4, 4]], atol=1e-5)
    assert sample.actions[:, :6].min() >= -1 and sample.actions[:, :6].max() <= 1
    np.testing.assert_array_equal(sample.proprio, normalize_proprio(ep.proprio[3], stats["proprio"], "bounds_q99"))
    with pytest.raises(ValueError, match="camera"):
        ChunkDataset([ep], 8, stats, "bounds_q99", num_images=1, action_dim=7, proprio_dim=8)
    with pytest.raises(ValueError, match="action dim"):
        ChunkDataset([ep], 8, stats, "bounds_q99", num_images=2, action_dim=14, proprio_dim=8)


def test_episode_npz_round_trip_and_bad_input(checkpoint, tmp_path):
    eps = _episodes(checkpoint, num_episodes=2, length=3)
    for i, ep in enumerate(eps):
        save_episode(ep, tmp_path / "eps" / f"episode_{i:04d}.npz")
    back = load_episodes(tmp_path / "eps")
    assert [e.instruction for e in back] == [e.instruction for e in eps]
    np.testing.assert_array_equal(back[1].images, eps[1].images)
    np.testing.assert_array_equal(back[1].actions, eps[1].actions)
    assert back[0].camera_names == ("cam0", "cam1")
    with pytest.raises(ValueError, match="uint8"):
        Episode(eps[0].images.astype(np.float32), eps[0].proprio, eps[0].actions, "x")
    with pytest.raises(ValueError, match="actions must be"):
        Episode(eps[0].images, eps[0].proprio, eps[0].actions[:2], "x")
    with pytest.raises(ValueError, match="instruction"):
        Episode(eps[0].images, eps[0].proprio, eps[0].actions, "  ")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_episodes(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        load_episodes(tmp_path / "nothing-here")


# ---- training --------------------------------------------------------------------------------
def test_full_finetune_loss_falls_schedule_and_reload(checkpoint, tmp_path):
    torch.set_num_threads(2)
    episodes = _episodes(checkpoint)
    before = _predict(load_vla(checkpoint, device="cpu", dtype="float32"), episodes)
    steps = 12
    cfg = FinetuneConfig(checkpoint=str(checkpoint), out_dir=str(tmp_path / "out"), max_steps=steps,
                         batch_size=2, learning_rate=2e-3, device="cpu", dtype="float32", log_every=1000)
    result = finetune(cfg, episodes=episodes, log=None)
    hist = result.history
    assert len(hist) == steps

    losses = [h.loss for h in hist]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    # noise_scale = 1 - step / max_steps, set before every step (the reference's schedule); off afterwards
    np.testing.assert_allclose([h.noise_scale for h in hist], [1 - s / steps for s in range(steps)])
    assert result.model.pruner.noise_scale is None
    # train mode: straight-through votes, sequence length unchanged, yet fewer distinct patches
    assert all(h.pruner_training for h in hist)
    assert all(h.seq_len_in == h.seq_len_out for h in hist)
    assert all(h.kept_mean < result.model.pruner.num_patches for h in hist)

    trained = _predict(result.model, episodes)
    assert not np.allclose(trained, before, atol=1e-3)  # training changed the model
    reloaded = load_vla(result.out_dir, device="cpu", dtype="float32")
    assert reloaded.checkpoint_step == steps
    np.testing.assert_allclose(_predict(reloaded, episodes), trained, atol=1e-5)
    log = json.loads((result.out_dir / "finetune_log.json").read_text())
    assert len(log["history"]) == steps and log["config"]["max_steps"] == steps


def test_training_reads_each_samples_oft_rows_and_records_them(checkpoint, tmp_path, monkeypatch):
    """Both references train on the rows one before the placeholders (vla-scripts/finetune.py:
    last_hidden_states[:, num_patches:-1] under the action mask of labels[:, 1:]). A right-padded
    batch with two prompt lengths: each sample's own rows; the saved checkpoint records "oft"."""
    torch.set_num_threads(2)
    config = json.loads((checkpoint / "config.json").read_text())
    config["lightvla"]["action_rows"] = "lightvla"  # e.g. a released LightVLA checkpoint
    (checkpoint / "config.json").write_text(json.dumps(config))
    episodes = _episodes(checkpoint, num_episodes=2, length=2)  # two instructions, 4 samples
    assert len({e.instruction for e in episodes}) == 2
    seen, logs = {}, []

    def hooks(vla):
        vla.register_forward_pre_hook(lambda mod, args: seen.update(ids=args[1], mask=args[2]))
        vla.language_model.model.register_forward_hook(lambda mod, a, out: seen.update(llm=out.last_hidden_state))
        vla.action_head.register_forward_hook(lambda mod, args, out: seen.update(head=args[0]))

    import lightvla_ros.train.finetune as ft
    original = ft.prepare_model

    def prepare_with_hooks(vla, cfg):
        hooks(vla)
        return original(vla, cfg)

    monkeypatch.setattr(ft, "prepare_model", prepare_with_hooks)
    cfg = FinetuneConfig(checkpoint=str(checkpoint), out_dir=str(tmp_path / "out"), max_steps=1, batch_size=4,
                         device="cpu", dtype="float32")
    result = finetune(cfg, episodes=episodes, log=logs.append)
    assert any("training on 'oft'" in line for line in logs)
    lengths = seen["mask"].sum(dim=1)
    assert len(set(lengths.tolist())) == 2 and seen["llm"].shape[1] == 1 + 512 + 1 + seen["ids"].shape[1] - 1
    for b in range(4):
        num_prompt_tokens = int(lengths[b]) - 56 - 1 - 1  # minus placeholders, STOP and BOS
        start = (512 + 1) + num_prompt_tokens  # NUM_PATCHES (with proprio) + NUM_PROMPT_TOKENS
        torch.testing.assert_close(seen["head"][b], seen["llm"][b, start:start + 56], rtol=0, atol=0)
    saved = json.loads((result.out_dir / "config.json").read_text())
    assert saved["lightvla"]["action_rows"] == "oft"
    assert load_vla(result.out_dir, device="cpu").action_rows == "oft"


def test_drop_pruner_training_runs_the_inference_votes_and_sequence(checkpoint, tmp_path, monkeypatch):
    """pruner_training="drop", beyond the reference (docs/training.md): training on the pruned
    sequence inference runs (the pruner in eval mode, the rest in train mode, gradients reach the
    vision backbone through the kept patches)."""
    torch.set_num_threads(2)
    episodes = _episodes(checkpoint, num_episodes=2, length=4)
    seen = {"pruner_training": [], "llm_training": []}

    import lightvla_ros.train.finetune as ft
    original = ft.prepare_model

    def prepare_with_hooks(vla, cfg):
        vla.pruner.register_forward_pre_hook(lambda mod, args: seen["pruner_training"].append(mod.training))
        vla.language_model.model.register_forward_pre_hook(lambda mod, *a: seen["llm_training"].append(mod.training))
        seen["vision_before"] = [p.detach().clone() for p in vla.vision_backbone.parameters()]
        return original(vla, cfg)

    monkeypatch.setattr(ft, "prepare_model", prepare_with_hooks)
    steps = 4
    cfg = FinetuneConfig(checkpoint=str(checkpoint), out_dir=str(tmp_path / "out"), max_steps=steps, batch_size=4,
                         learning_rate=1e-3, device="cpu", dtype="float32", prune="on", pruner_training="drop",
                         image_aug=False, save=False)
    result = finetune(cfg, episodes=episodes, log=None)
    hist = result.history
    assert seen["pruner_training"] == [False] * steps and seen["llm_training"] == [True] * steps
    assert not any(h.pruner_training for h in hist)
    assert all(h.seq_len_out < h.seq_len_in for h in hist)  # the dropped patches are gone, as at inference
    vision_after = list(result.model.vision_backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(seen["vision_before"], vision_after))
    with pytest.raises(ValueError, match="pruner_training"):
        finetune(FinetuneConfig(**{**cfg.__dict__, "pruner_training": "gumbel"}), episodes=episodes, log=None)


def test_lora_trains_only_adapters_and_heads_and_merged_save_reloads(checkpoint, tmp_path):
    torch.set_num_threads(2)
    episodes = _episodes(checkpoint)
    cfg = FinetuneConfig(checkpoint=str(checkpoint), max_steps=4, batch_size=2, learning_rate=1e-3,
                         use_lora=True, lora_rank=4, lora_alpha=8, device="cpu", dtype="float32",
                         log_every=1000)
    vla = load_vla(checkpoint, device="cpu", dtype="float32")
    original = {k: v.clone() for k, v in vla.state_dict().items()}
    dataset = build_dataset(vla, episodes, cfg)
    peft_model = prepare_model(vla, cfg)
    heads = ("action_head.", "proprio_projector.")
    trainable = [n for n, p in vla.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable)
    assert all("lora_" in n or n.startswith(heads) for n in trainable), trainable
    assert not any(n.startswith("vision_backbone.") or "lora_" in n and "language_model" not in n
                   for n in trainable)
    assert list(vla.pruner.parameters()) == []  # nothing to unfreeze for the pruner

    hist = train(vla, dataset, cfg, log=None)
    assert len(hist) == 4 and all(h.seq_len_in == h.seq_len_out for h in hist)
    changed = set()
    for name, p in vla.named_parameters():
        if "lora_B" in name:
            assert p.abs().sum() > 0, name  # starts at zero, so training moved it
            continue
        if "lora_A" in name:
            continue
        key = name.replace(".base_layer", "")
        if not torch.equal(p, original[key]):
            changed.add(key)
    assert changed, "heads did not train"
    assert all(k.startswith(heads) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("proprio_projector.") for k in changed)

    with_adapters = _predict(vla, episodes)
    merged, out = save_finetuned(vla, tmp_path / "lora-out", step=4, peft_model=peft_model)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    reloaded = load_vla(out, device="cpu", dtype="float32")
    q_proj = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(reloaded.state_dict()[q_proj], original[q_proj])  # LoRA folded in
    np.testing.assert_allclose(_predict(reloaded, episodes), with_adapters, atol=1e-4)


def test_cli_synthetic_and_npz_data_with_recomputed_statistics(checkpoint, tmp_path, capsys):
    torch.set_num_threads(2)
    common = ["--batch-size", "1", "--device", "cpu", "--dtype", "float32"]
    out = tmp_path / "cli-out"
    assert main([str(checkpoint), str(out), "--synthetic", "--steps", "2", *common]) == 0
    assert "saved" in capsys.readouterr().out
    log = json.loads((out / "finetune_log.json").read_text())
    assert [h["noise_scale"] for h in log["history"]] == [1.0, 0.5]
    assert load_vla(out, device="cpu", dtype="float32").checkpoint_step == 2

    eps = _episodes(checkpoint, num_episodes=2, length=3)
    for i, ep in enumerate(eps):
        save_episode(ep, tmp_path / "eps" / f"episode_{i:04d}.npz")
    out2 = tmp_path / "cli-data"
    assert main([str(checkpoint), str(out2), "--data", str(tmp_path / "eps"), "--steps", "1",
                 "--statistics", "data", "--dataset-name", "my_robot", *common]) == 0
    reloaded = load_vla(out2, device="cpu", dtype="float32")
    assert reloaded.default_unnorm_key == "my_robot"
    stats = reloaded.norm_stats["my_robot"]
    all_actions = np.concatenate([e.actions for e in eps])
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(all_actions, 0.99, axis=0), rtol=1e-6)
    assert stats["action"]["mask"] == _stats(checkpoint)["action"]["mask"]  # gripper stays unmasked
    # it now emits the data's own actions: the sim must not convert its gripper (OFT's LIBERO models
    # need [0, 1] -> [-1, 1] and an inversion; ours trained on lightvla-collect demos do not)
    assert read_gripper_postprocess(out2) == "none"
    assert read_gripper_postprocess(out) is None and read_gripper_postprocess(checkpoint) is None
    with pytest.raises(SystemExit):
        main([str(checkpoint), str(out)])  # no data source
