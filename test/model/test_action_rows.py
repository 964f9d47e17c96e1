"""Which LLM hidden-state rows feed the action head, checked by index arithmetic written here.

The expected rows are computed from the sequence layout alone, not from LightVLA.action_row_index:
a forward hook captures what the action head receives and it is compared with the LLM output at
the expected indices. Sequence: [BOS] [patches] [proprio] [prompt] [56 placeholders] [STOP].

- "oft": rows NUM_PATCHES + NUM_PROMPT_TOKENS ... + 56, NUM_PATCHES counting the proprio token and
  NUM_PROMPT_TOKENS the prompt without BOS (moojink/openvla-oft
  prismatic/extern/hf/modeling_prismatic.py, `predict_action` and
  `_regression_or_discrete_prediction`). Training reads the same rows in both references:
  `last_hidden_states[:, num_patches:-1]` masked with the action mask of `labels[:, 1:]`
  (vla-scripts/finetune.py): the last prompt token and the first 55 placeholders.
- "lightvla": `last_hidden_states[:, -56:]` (LiAutoAD/LightVLA, same file): the last 56 rows of the
  sample's sequence, ending at its STOP token.
"""
import json
import shutil

import numpy as np
import pytest
import torch

from lightvla_ros.model import CheckpointError, load_vla, save_checkpoint
from lightvla_ros.model.checkpoint import read_action_rows
from lightvla_ros.model.config import EMPTY_TOKEN_ID, PAD_TOKEN_ID, STOP_TOKEN_ID
from lightvla_ros.model.vla import PLACEHOLDER_TOKEN_ID, resolve_action_rows
from lightvla_ros.policy.vla_policy import VLAPolicy

N_ACT = 56  # LIBERO: chunk 8 x action dim 7
INSTRUCTIONS = ["pick up the alphabet soup and place it in the basket", "open the drawer"]


def _inputs(vla, images, instructions):
    """Right-padded batch: pixel_values (B, C, S, S), input_ids / mask (B, T), prompt lengths with BOS."""
    pixels, rows, prompt_lengths = [], [], []
    for k, instruction in enumerate(instructions):
        imgs = [np.roll(im, 17 * k, axis=1) for im in images]  # different images per sample
        pv, ids, _ = vla.build_inputs(imgs, instruction)
        pixels.append(pv)
        rows.append(ids[0].tolist())
        prompt_lengths.append(len(vla.tokenizer.prompt_ids(instruction)))
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), PAD_TOKEN_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, :len(r)] = torch.tensor(r)
        mask[b, :len(r)] = 1
    return torch.cat(pixels), input_ids, mask, prompt_lengths


def _capture(vla):
    """Record the LLM's last hidden states and the action head's input on every forward."""
    seen = {}
    vla.language_model.model.register_forward_hook(
        lambda mod, args, out: seen.__setitem__("llm", out.last_hidden_state.detach().clone()))
    vla.action_head.register_forward_hook(lambda mod, args, out: seen.__setitem__("head", args[0].detach().clone()))
    return seen


def _expected_rows(convention, num_patches, prompt_len):
    """Rows of one sample in the LLM output; num_patches includes the proprio token."""
    num_prompt_tokens = prompt_len - 1  # without BOS
    if convention == "oft":
        start = num_patches + num_prompt_tokens
        return list(range(start, start + N_ACT))
    seq_len = 1 + num_patches + num_prompt_tokens + N_ACT + 1  # this sample's [BOS ... STOP]
    return list(range(seq_len - N_ACT, seq_len))


@pytest.mark.parametrize("convention", ["oft", "lightvla"])
@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("num_images", [1, 2])
@pytest.mark.parametrize("batch", [1, 2])
def test_head_reads_the_convention_rows(vla, images, convention, prune, num_images, batch):
    vla.prune = prune
    vla.action_rows = convention
    vla.set_num_images_in_input(num_images)
    seen = _capture(vla)
    pixel_values, input_ids, mask, prompt_lengths = _inputs(vla, images[:num_images], INSTRUCTIONS[:batch])
    proprio = torch.linspace(-0.5, 0.5, 8).repeat(batch, 1)
    with torch.no_grad():
        actions = vla(pixel_values, input_ids, mask, proprio=proprio)
    hidden, head_in = seen["llm"], seen["head"]
    text_len = input_ids.shape[1]
    # patch slots in the output: the largest kept count (the pruner pads the patch block inside)
    slots = int(vla.pruner.last_kept_counts.max()) if prune else 256 * num_images
    assert hidden.shape[1] == 1 + slots + 1 + (text_len - 1)
    if prune:
        assert slots < 256 * num_images
    for b in range(batch):
        rows = _expected_rows(convention, slots + 1, prompt_lengths[b])
        torch.testing.assert_close(head_in[b], hidden[b, rows], rtol=0, atol=0)
        # what sits at those rows: text id j is output row j + (output length - text length)
        tokens = input_ids[b, [r - (hidden.shape[1] - text_len) for r in rows]].tolist()
        if convention == "oft":
            assert tokens == [EMPTY_TOKEN_ID] + [PLACEHOLDER_TOKEN_ID] * (N_ACT - 1)
        else:
            assert tokens == [PLACEHOLDER_TOKEN_ID] * (N_ACT - 1) + [STOP_TOKEN_ID]
    if batch == 2:
        assert prompt_lengths[0] != prompt_lengths[1]
        with torch.no_grad():  # each padded sample equals its own unpadded run
            for b in range(batch):
                n = int(mask[b].sum())
                single = vla(pixel_values[b:b + 1], input_ids[b:b + 1, :n], mask[b:b + 1, :n],
                             proprio=proprio[b:b + 1])
                torch.testing.assert_close(actions[b:b + 1], single, atol=1e-5, rtol=1e-5)


def test_training_rows_follow_each_sample_with_right_padding(vla, images):
    """Train mode (the pruner keeps the length): per-sample oft rows of a right-padded batch."""
    vla.action_rows = "oft"
    vla.train()
    seen = _capture(vla)
    pixel_values, input_ids, mask, prompt_lengths = _inputs(vla, images, INSTRUCTIONS)
    vla(pixel_values, input_ids, mask, proprio=torch.zeros(2, 8))
    assert seen["llm"].shape[1] == 1 + 512 + 1 + input_ids.shape[1] - 1
    for b in range(2):
        rows = _expected_rows("oft", 512 + 1, prompt_lengths[b])
        torch.testing.assert_close(seen["head"][b], seen["llm"][b, rows], rtol=0, atol=0)


def test_conventions_give_different_actions(vla, images, proprio):
    out = {}
    for convention in ("oft", "lightvla"):
        vla.action_rows = convention
        out[convention] = vla.predict_action(images, INSTRUCTIONS[0], proprio).normalized_actions
    assert not np.allclose(out["oft"], out["lightvla"])
    with pytest.raises(ValueError, match="action_rows"):
        vla.action_rows = "placeholders"


# ---- resolution, recording ---------------------------------------------------------------------
def test_resolve_action_rows():
    assert resolve_action_rows("auto", None, prune=True) == "lightvla"
    assert resolve_action_rows("auto", None, prune=False) == "oft"
    assert resolve_action_rows("auto", "oft", prune=True) == "oft"
    assert resolve_action_rows(None, "lightvla", prune=False) == "lightvla"
    assert resolve_action_rows("OFT", "lightvla", prune=True) == "oft"
    with pytest.raises(ValueError, match="auto or one of"):
        resolve_action_rows("rows", None, prune=True)


def _set_recorded(ckpt, value):
    path = ckpt / "config.json"
    config = json.loads(path.read_text())
    if value is None:
        config["lightvla"].pop("action_rows", None)
    else:
        config["lightvla"]["action_rows"] = value
    path.write_text(json.dumps(config))


def test_auto_uses_the_recorded_value_else_pruning(tiny_checkpoint, tmp_path):
    ckpt = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    assert json.loads((ckpt / "config.json").read_text())["lightvla"]["action_rows"] == "oft"  # generated: oft
    assert load_vla(ckpt, device="cpu").action_rows == "oft"
    assert load_vla(ckpt, device="cpu", action_rows="lightvla").action_rows == "lightvla"
    _set_recorded(ckpt, None)  # as a released checkpoint: nothing recorded
    assert load_vla(ckpt, device="cpu").action_rows == "lightvla"
    assert load_vla(ckpt, device="cpu", prune=False).action_rows == "oft"
    assert read_action_rows(ckpt) == "lightvla" and read_action_rows(ckpt, prune=False) == "oft"
    assert read_action_rows(ckpt, "oft") == "oft"
    _set_recorded(ckpt, "lightvla")
    assert load_vla(ckpt, device="cpu", prune=False).action_rows == "lightvla"
    _set_recorded(ckpt, "middle")
    with pytest.raises(CheckpointError, match="lightvla.action_rows"):
        load_vla(ckpt, device="cpu")


@pytest.mark.parametrize("convention", ["oft", "lightvla"])
def test_recorded_convention_survives_save_and_load(tiny_checkpoint, tmp_path, images, proprio, convention):
    vla = load_vla(tiny_checkpoint, device="cpu", action_rows=convention)
    before = vla.predict_action(images, INSTRUCTIONS[0], proprio).normalized_actions
    save_checkpoint(vla, tmp_path / "saved", step=3)
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["lightvla"]["action_rows"] == convention
    again = load_vla(tmp_path / "saved", device="cpu")  # auto, pruning on: the recorded value wins
    assert again.action_rows == convention
    np.testing.assert_array_equal(again.predict_action(images, INSTRUCTIONS[0], proprio).normalized_actions, before)


def test_policy_takes_and_reports_action_rows(tiny_checkpoint):
    assert VLAPolicy(tiny_checkpoint, device="cpu").action_rows == "oft"
    policy = VLAPolicy(tiny_checkpoint, device="cpu", action_rows="lightvla")
    assert policy.action_rows == "lightvla" == policy.model.action_rows
    with pytest.raises(ValueError, match="action_rows"):
        VLAPolicy(tiny_checkpoint, device="cpu", action_rows="bogus")
