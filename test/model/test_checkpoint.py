"""Checkpoint directories: released layout, save -> load round trip, and clear errors."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from lightvla_ros.model import CheckpointError, load_vla, save_checkpoint
from lightvla_ros.model.checkpoint import module_to_released_key, released_to_module_key
from lightvla_ros.model.make_checkpoint import main as make_checkpoint_main

INSTRUCTION = "put the bowl on the plate"


@pytest.fixture
def ckpt_copy(tiny_checkpoint, tmp_path):
    """A private copy of the tiny checkpoint that a test may break."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")


def _index(ckpt):
    return json.loads((ckpt / "model.safetensors.index.json").read_text())


def test_released_layout(tiny_checkpoint):
    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "dataset_statistics.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "action_head--0_checkpoint.pt",
            "proprio_projector--0_checkpoint.pt"} <= names
    shards = sorted(n for n in names if n.endswith(".safetensors"))
    assert len(shards) >= 2
    weight_map = _index(tiny_checkpoint)["weight_map"]
    assert set(weight_map.values()) == set(shards)
    for key in ("vision_backbone.featurizer.blocks.0.ls1.scale_factor", "vision_backbone.fused_featurizer.pos_embed",
                "projector.fc1.weight", "projector.fc3.weight", "language_model.model.embed_tokens.weight",
                "language_model.model.layers.1.self_attn.q_proj.weight", "language_model.model.norm.weight",
                "language_model.lm_head.weight"):
        assert key in weight_map, key
    assert not any(k.endswith(".gamma") for k in weight_map)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["vision_backbone_id"] == "dinosiglip-vit-so-224px" and config["pad_token_id"] == 32000
    assert config["text_config"]["vocab_size"] == 32064
    stats = json.loads((tiny_checkpoint / "dataset_statistics.json").read_text())
    action = stats["libero_object_no_noops"]["action"]
    assert action["mask"] == [True] * 6 + [False] and len(action["q01"]) == 7
    assert len(stats["libero_object_no_noops"]["proprio"]["q99"]) == 8
    head = torch.load(tiny_checkpoint / "action_head--0_checkpoint.pt", weights_only=True)
    assert all(k.startswith("module.model.") for k in head)
    proprio = torch.load(tiny_checkpoint / "proprio_projector--0_checkpoint.pt", weights_only=True)
    assert set(proprio) == {"module.fc1.weight", "module.fc1.bias", "module.fc2.weight", "module.fc2.bias"}


def test_tokenizer_is_llama_compatible(tiny_checkpoint):
    tok = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    assert tok.token_to_id("<s>") == 1 and tok.token_to_id("</s>") == 2 and tok.token_to_id("<unk>") == 0
    assert tok.id_to_token(29871) == "\u2581" and tok.token_to_id("<PAD>") == 32000
    assert tok.get_vocab_size() == 32001
    assert all(tok.id_to_token(i) is not None for i in range(31743, 32000))
    ids = tok.encode("Put the ÿ bowl").ids  # unknown characters fall back to bytes, nothing lost
    assert ids[0] == 1 and tok.decode(ids) == "Put the ÿ bowl"


def test_key_mapping_round_trip():
    for key in ("vision_backbone.featurizer.blocks.3.ls2.scale_factor",
                "vision_backbone.fused_featurizer.blocks.0.ls1.scale_factor",
                "language_model.model.layers.0.mlp.gate_proj.weight", "projector.fc2.bias"):
        assert module_to_released_key(released_to_module_key(key)) == key
    assert released_to_module_key("vision_backbone.featurizer.blocks.3.ls2.scale_factor").endswith("ls2.gamma")


def test_save_load_identical_outputs(tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (200, 300, 3), dtype=np.uint8) for _ in range(2)]
    proprio = np.linspace(-0.1, 0.1, 8).astype(np.float32)
    vla = load_vla(tiny_checkpoint, device="cpu")
    before = vla.predict_action(images, INSTRUCTION, proprio)
    save_checkpoint(vla, tmp_path / "saved", step=1234)
    assert (tmp_path / "saved" / "action_head--1234_checkpoint.pt").is_file()
    again = load_vla(tmp_path / "saved", device="cpu")
    assert again.checkpoint_step == 1234
    after = again.predict_action(images, INSTRUCTION, proprio)
    np.testing.assert_array_equal(before.actions, after.actions)
    assert before.kept_per_image == after.kept_per_image
    for (k1, v1), (k2, v2) in zip(vla.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1


def test_a_trimmed_checkpoint_saves_trimmed(tiny_checkpoint, tmp_path):
    """Fine-tuning the shipped (compact, lm_head trimmed) checkpoint saves a model loaded from it:
    the config still says trimmed, so lm_head is not written and the copy loads with equal actions
    (it was written, and the load refused the unexpected key)."""
    from lightvla_ros.model.checkpoint import LM_HEAD_KEY, export_compact

    compact = export_compact(tiny_checkpoint, tmp_path / "compact", dtype="float32")
    vla = load_vla(compact, device="cpu")
    save_checkpoint(vla, tmp_path / "again", step=7)
    assert LM_HEAD_KEY not in _index(tmp_path / "again")["weight_map"]
    again = load_vla(tmp_path / "again", device="cpu")
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    proprio = np.zeros(8, np.float32)
    np.testing.assert_array_equal(vla.predict_action(images, INSTRUCTION, proprio).actions,
                                  again.predict_action(images, INSTRUCTION, proprio).actions)


def test_heads_without_ddp_prefix_load(ckpt_copy):
    path = ckpt_copy / "action_head--0_checkpoint.pt"
    state = torch.load(path, weights_only=True)
    torch.save({k.removeprefix("module."): v for k, v in state.items()}, path)
    vla = load_vla(ckpt_copy, device="cpu")
    torch.testing.assert_close(vla.action_head.model.fc2.weight, state["module.model.fc2.weight"])


def test_cli_writes_other_platforms(tmp_path):
    assert make_checkpoint_main([str(tmp_path / "aloha"), "--platform", "aloha", "--num-images", "1",
                                 "--seed", "3"]) == 0
    vla = load_vla(tmp_path / "aloha", device="cpu")
    assert (vla.platform.chunk_size, vla.platform.action_dim, vla.platform.proprio_dim) == (25, 7 * 2, 14)
    assert vla.num_images == 1 and vla.pruner.num_patches == 256
    pred = vla.predict_action([np.zeros((224, 224, 3), np.uint8)], "fold the towel", np.zeros(14))
    assert pred.actions.shape == (25, 14)


# ---- errors: each names the file and, where it applies, the key and both shapes ----------------
def _expect(match, ckpt, **kwargs):
    with pytest.raises(CheckpointError, match=match) as info:
        load_vla(ckpt, device="cpu", **kwargs)
    return info.value


def test_missing_directory(tmp_path):
    err = _expect("not found", tmp_path / "nope")
    assert err.file == tmp_path / "nope"


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json", "tokenizer.json"])
def test_missing_file(ckpt_copy, name):
    (ckpt_copy / name).unlink()
    err = _expect("missing", ckpt_copy)
    assert str(err.file).endswith(name)


def test_missing_shard(ckpt_copy):
    (ckpt_copy / "model-00002-of-00003.safetensors").unlink()
    err = _expect("missing shard", ckpt_copy)
    assert err.file.name == "model-00002-of-00003.safetensors" and err.key


def test_missing_action_head(ckpt_copy):
    (ckpt_copy / "action_head--0_checkpoint.pt").unlink()
    err = _expect("missing head file", ckpt_copy)
    assert "action_head--" in str(err.file)


def test_several_head_steps_are_refused_unless_a_step_is_given(ckpt_copy, tmp_path):
    """The reference requires exactly one head file: a silent pick could pair the wrong heads."""
    for name in ("action_head", "proprio_projector"):
        shutil.copy(ckpt_copy / f"{name}--0_checkpoint.pt", ckpt_copy / f"{name}--500_checkpoint.pt")
    err = _expect("2 head files", ckpt_copy)
    assert "action_head--0_checkpoint.pt" in str(err) and "action_head--500_checkpoint.pt" in str(err)
    assert "step=" in str(err)
    assert load_vla(ckpt_copy, device="cpu", step=500).checkpoint_step == 500
    assert load_vla(ckpt_copy, device="cpu", step=0).checkpoint_step == 0
    err = _expect("no head file for step 7", ckpt_copy, step=7)
    assert err.file.name == "action_head--7_checkpoint.pt"
    # only the action head doubled: the proprio projector's single file is still refused for another step
    (ckpt_copy / "proprio_projector--500_checkpoint.pt").unlink()
    _expect("no head file for step 500", ckpt_copy, step=500)


def test_generated_configs_use_llama_rms_norm_eps():
    """Released configs leave rms_norm_eps out, so LlamaConfig's default 1e-6 applies."""
    from transformers import LlamaConfig

    from lightvla_ros.model.make_checkpoint import make_config
    from lightvla_ros.model.vla import make_text_config
    assert LlamaConfig().rms_norm_eps == 1e-6
    for size in ("7b", "small", "tiny"):
        text = make_config(size)["text_config"]
        assert text["rms_norm_eps"] == 1e-6
        assert make_text_config(text).rms_norm_eps == 1e-6


def test_missing_proprio_projector_when_config_needs_it(ckpt_copy):
    (ckpt_copy / "proprio_projector--0_checkpoint.pt").unlink()
    _expect("missing head file", ckpt_copy)


def test_missing_statistics(ckpt_copy):
    (ckpt_copy / "dataset_statistics.json").unlink()
    load_vla(ckpt_copy, device="cpu")  # falls back to config.norm_stats, as OFT does
    config = json.loads((ckpt_copy / "config.json").read_text())
    del config["norm_stats"]
    (ckpt_copy / "config.json").write_text(json.dumps(config))
    err = _expect("no normalisation statistics", ckpt_copy)
    assert err.file.name == "dataset_statistics.json"


def test_missing_key(ckpt_copy):
    index = _index(ckpt_copy)
    del index["weight_map"]["projector.fc2.bias"]
    (ckpt_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    err = _expect("missing key", ckpt_copy)
    assert err.key == "projector.fc2.bias"


def test_key_in_index_but_not_in_shard(ckpt_copy):
    index = _index(ckpt_copy)
    fname = index["weight_map"]["projector.fc1.weight"]
    tensors = load_file(str(ckpt_copy / fname))
    del tensors["projector.fc1.weight"]
    save_file(tensors, str(ckpt_copy / fname))
    err = _expect("not in its shard", ckpt_copy)
    assert err.key == "projector.fc1.weight" and err.file.name == fname


def test_unexpected_key(ckpt_copy):
    index = _index(ckpt_copy)
    index["weight_map"]["language_model.model.extra.weight"] = "model-00001-of-00003.safetensors"
    (ckpt_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    err = _expect("unexpected key", ckpt_copy)
    assert err.key == "language_model.model.extra.weight"


def test_shape_mismatch(ckpt_copy):
    key = "language_model.model.layers.0.self_attn.q_proj.weight"
    fname = _index(ckpt_copy)["weight_map"][key]
    tensors = load_file(str(ckpt_copy / fname))
    tensors[key] = torch.zeros(32, 64)
    save_file(tensors, str(ckpt_copy / fname))
    err = _expect("shape mismatch", ckpt_copy)
    assert (err.key, err.expected, err.found) == (key, (64, 64), (32, 64))
    assert err.file.name == fname and "(64, 64)" in str(err) and "(32, 64)" in str(err)


def test_head_shape_and_key_errors(ckpt_copy):
    path = ckpt_copy / "action_head--0_checkpoint.pt"
    state = torch.load(path, weights_only=True)
    bad = dict(state, **{"module.model.fc2.weight": torch.zeros(6, 64)})
    torch.save(bad, path)
    err = _expect("shape mismatch", ckpt_copy)
    assert (err.key, err.expected, err.found) == ("model.fc2.weight", (7, 64), (6, 64))
    torch.save(dict(state, **{"module.model.fc9.weight": torch.zeros(1)}), path)
    assert _expect("unexpected key", ckpt_copy).key == "model.fc9.weight"
    del state["module.model.fc1.bias"]
    torch.save(state, path)
    assert _expect("missing key", ckpt_copy).key == "model.fc1.bias"


def test_unknown_unnorm_key(tiny_checkpoint):
    err = _expect("unknown unnorm_key", tiny_checkpoint, unnorm_key="bridge_orig")
    assert err.key == "bridge_orig" and "libero_object_no_noops" in str(err)


def test_several_datasets_need_unnorm_key(ckpt_copy):
    stats = json.loads((ckpt_copy / "dataset_statistics.json").read_text())
    stats["libero_spatial_no_noops"] = stats["libero_object_no_noops"]
    (ckpt_copy / "dataset_statistics.json").write_text(json.dumps(stats))
    config = json.loads((ckpt_copy / "config.json").read_text())
    del config["lightvla"]["unnorm_key"]
    (ckpt_copy / "config.json").write_text(json.dumps(config))
    _expect("pass unnorm_key", ckpt_copy)
    vla = load_vla(ckpt_copy, device="cpu", unnorm_key="libero_spatial_no_noops")
    assert vla.resolve_unnorm_key() == "libero_spatial_no_noops"


def test_platform_inferred_from_statistics_without_our_block(ckpt_copy):
    """A released config has no "lightvla" block: the dataset name tells the platform."""
    config = json.loads((ckpt_copy / "config.json").read_text())
    del config["lightvla"]
    (ckpt_copy / "config.json").write_text(json.dumps(config))
    vla = load_vla(ckpt_copy, device="cpu")
    assert vla.platform.name == "libero" and vla.num_images == 2
    stats = json.loads((ckpt_copy / "dataset_statistics.json").read_text())
    (ckpt_copy / "dataset_statistics.json").write_text(json.dumps({"my_robot": stats["libero_object_no_noops"]}))
    err = _expect("cannot tell the robot platform", ckpt_copy)
    assert err.found == ["my_robot"]
    assert load_vla(ckpt_copy, device="cpu", platform="libero").platform.chunk_size == 8


def test_safetensors_are_readable_by_plain_safe_open(tiny_checkpoint):
    index = _index(tiny_checkpoint)
    key = "language_model.lm_head.weight"
    with safe_open(str(tiny_checkpoint / index["weight_map"][key]), "pt") as f:
        assert tuple(f.get_slice(key).get_shape()) == (32064, 64)
