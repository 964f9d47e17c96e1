"""The OpenVLA-OFT model around the TokenPruner, on the tiny random checkpoint."""
import numpy as np
import pytest
import torch

from lightvla_ros.model import build_vla, load_vla, make_checkpoint
from lightvla_ros.model.config import EMPTY_TOKEN_ID, STOP_TOKEN_ID, get_platform
from lightvla_ros.model.make_checkpoint import make_config
from lightvla_ros.model.preprocess import (ImageTransform, center_crop_image, image_to_pixels,
                                           normalize_proprio, unnormalize_actions)
from lightvla_ros.model.vla import PLACEHOLDER_TOKEN_ID, make_text_config

INSTRUCTION = "Pick up the alphabet soup and place it in the basket"


def _llm_hidden(llm, embeds, mask):
    pos = torch.arange(embeds.shape[1])[None].expand(embeds.shape[0], -1)
    return llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).last_hidden_state


@pytest.mark.parametrize("pad_last", [False, True])
def test_attention_is_bidirectional(vla, pad_last):
    """A later token changes the hidden state at an earlier position (OFT's parallel decoding).

    Both with an all-ones mask (which transformers drops, leaving SDPA to the module flag) and
    with padding (a materialised mask).
    """
    llm = vla.language_model.model
    torch.manual_seed(0)
    embeds = torch.randn(1, 12, vla.text_config.hidden_size)
    mask = torch.ones(1, 12, dtype=torch.long)
    if pad_last:
        mask[0, -1] = 0
    changed = embeds.clone()
    changed[0, 9] += 1.0  # a later, unpadded token
    with torch.no_grad():
        h0, h1 = _llm_hidden(llm, embeds, mask), _llm_hidden(llm, changed, mask)
    assert not torch.allclose(h0[0, 2], h1[0, 2], atol=1e-6)
    if pad_last:  # a padded token changes nothing
        padded = embeds.clone()
        padded[0, -1] += 5.0
        with torch.no_grad():
            assert torch.allclose(_llm_hidden(llm, padded, mask)[0, :-1], h0[0, :-1], atol=1e-5)


def test_causal_control_is_not_bidirectional(vla):
    """The same check on a causal copy passes the other way: the bidirectional test can fail."""
    from transformers import LlamaModel

    config = make_text_config(vla.config["text_config"])
    config.is_causal = True
    llm = LlamaModel(config)
    llm.load_state_dict(vla.language_model.model.state_dict())
    embeds = torch.randn(1, 12, config.hidden_size)
    changed = embeds.clone()
    changed[0, 9] += 1.0
    mask = torch.ones(1, 12, dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(_llm_hidden(llm, embeds, mask)[0, 2], _llm_hidden(llm, changed, mask)[0, 2])


def test_prompt_ids(vla):
    ids = vla.tokenizer.prompt_ids(INSTRUCTION)
    assert ids[0] == 1 and ids[-1] == EMPTY_TOKEN_ID
    assert vla.tokenizer.tokenizer.decode(ids[1:-1]) == (
        "In: What action should the robot take to pick up the alphabet soup and place it in the basket?\nOut:")
    _, input_ids, mask = vla.build_inputs([np.zeros((8, 8, 3), np.uint8)] * 2, INSTRUCTION)
    tail = input_ids[0, len(ids):].tolist()
    assert tail == [PLACEHOLDER_TOKEN_ID] * 56 + [STOP_TOKEN_ID]
    assert mask.shape == input_ids.shape and bool(mask.all())


def test_predict_action_end_to_end(vla, images, proprio):
    pred = vla.predict_action(images, INSTRUCTION, proprio)
    assert pred.actions.shape == (8, 7) and pred.actions.dtype == np.float32
    assert np.all(np.isfinite(pred.actions))
    stats = vla.norm_stats["libero_object_no_noops"]["action"]
    mask = np.array(stats["mask"])
    q01, q99 = np.array(stats["q01"]), np.array(stats["q99"])
    assert np.all(pred.actions[:, mask] >= q01[mask]) and np.all(pred.actions[:, mask] <= q99[mask])
    # unmasked gripper passes through unnormalised
    np.testing.assert_allclose(pred.actions[:, ~mask], pred.normalized_actions[:, ~mask])
    assert set(pred.timings) >= {"vision", "pruner", "llm", "head", "total", "preprocess"}
    assert all(v >= 0 for v in pred.timings.values())
    assert pred.total_per_image == [256, 256]
    assert len(pred.kept_per_image) == 2 and all(1 <= k <= 256 for k in pred.kept_per_image)
    assert pred.kept_total == int(vla.pruner.last_kept_counts[0])


def test_predict_action_is_deterministic_and_uses_inputs(vla, images, proprio):
    a = vla.predict_action(images, INSTRUCTION, proprio).normalized_actions
    b = vla.predict_action(images, INSTRUCTION, proprio).normalized_actions
    np.testing.assert_array_equal(a, b)
    c = vla.predict_action(images, "open the top drawer of the cabinet", proprio).normalized_actions
    d = vla.predict_action(images, INSTRUCTION, proprio + 0.3).normalized_actions
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_one_and_two_images(vla, images, proprio):
    assert vla.pruner.num_patches == 512
    two = vla.predict_action(images, INSTRUCTION, proprio)
    vla.set_num_images_in_input(1)
    assert vla.pruner.num_patches == 256 and vla.vision_backbone.num_images == 1
    one = vla.predict_action(images[:1], INSTRUCTION, proprio)
    assert one.actions.shape == (8, 7) and np.all(np.isfinite(one.actions))
    assert one.total_per_image == [256] and len(one.kept_per_image) == 1
    assert not np.allclose(one.normalized_actions, two.normalized_actions)
    with pytest.raises(ValueError, match="expected 1 image"):
        vla.predict_action(images, INSTRUCTION, proprio)


def test_patch_count_mismatch_raises(vla, images, proprio):
    """Changing only the backbone (what set_num_images_in_input prevents) is caught at forward time."""
    pixel_values, input_ids, mask = vla.build_inputs(images, INSTRUCTION)
    vla.vision_backbone.num_images = 1
    with pytest.raises(ValueError, match="pixel_values must be"):
        vla(pixel_values, input_ids, mask)
    vla.vision_backbone.num_images = 2
    vla.pruner.num_patches = 256
    with pytest.raises(ValueError, match="set_num_images_in_input"):
        vla(pixel_values, input_ids, mask)


def _llm_input_lengths(vla):
    lengths = []
    vla.language_model.model.register_forward_pre_hook(
        lambda mod, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    return lengths


def test_eval_prunes_train_keeps_length(vla, images, proprio):
    lengths = _llm_input_lengths(vla)
    pixel_values, input_ids, mask = vla.build_inputs(images, INSTRUCTION)
    p = torch.from_numpy(normalize_proprio(proprio, vla.norm_stats["libero_object_no_noops"]["proprio"],
                                           "bounds_q99"))[None]
    full = 1 + 512 + 1 + (input_ids.shape[1] - 1)  # BOS + patches + proprio + text
    with torch.no_grad():
        vla.eval()
        vla(pixel_values, input_ids, mask, proprio=p)
        kept = int(vla.pruner.last_kept_counts[0])
        vla.train()
        out = vla(pixel_values, input_ids, mask, proprio=p)
    assert kept < 512
    assert lengths == [full - 512 + kept, full]
    assert out.shape == (1, 8, 7)


def test_train_forward_gives_gradients(vla, images):
    """forward() is usable for fine-tuning: batch of 2, L1 loss, gradients reach head and LLM."""
    vla.train()
    vla.pruner.set_noise_scale(0.5)
    pixel_values, input_ids, mask = vla.build_inputs(images, INSTRUCTION)
    pixel_values = torch.cat([pixel_values, pixel_values.flip(-1)])
    input_ids, mask = input_ids.repeat(2, 1), mask.repeat(2, 1)
    target = torch.zeros(2, 8, 7)
    pred = vla(pixel_values, input_ids, mask, proprio=torch.full((2, 8), 0.3))
    loss = torch.nn.functional.l1_loss(pred, target)
    loss.backward()
    assert vla.action_head.model.fc1.weight.grad.abs().sum() > 0
    assert vla.language_model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert vla.proprio_projector.fc1.weight.grad.abs().sum() > 0


def test_batch_of_two_equals_single_runs(vla, images):
    """Eval-mode batch > 1: each sample keeps its own patches (padded), results match singles."""
    pv1, ids, mask = vla.build_inputs(images, INSTRUCTION)
    pv2, _, _ = vla.build_inputs([np.zeros_like(images[0]), images[1]], INSTRUCTION)
    with torch.no_grad():
        single, counts = [], []
        for pv in (pv1, pv2):
            single.append(vla(pv, ids, mask))
            counts.append(int(vla.pruner.last_kept_counts[0]))
        batch = vla(torch.cat([pv1, pv2]), ids.repeat(2, 1), mask.repeat(2, 1))
    assert vla.pruner.last_kept_counts.tolist() == counts and counts[0] != counts[1]  # padding was needed
    torch.testing.assert_close(batch, torch.cat(single), atol=1e-4, rtol=1e-4)


def test_batch_of_prompts_of_different_lengths_equals_single_runs(vla, images, proprio):
    """predict_action_batch right-pads the shorter prompt: the padding changes neither the votes
    (the pruner's task attention masks it) nor the actions."""
    texts = [INSTRUCTION, "open the top drawer and put the bowl inside of it, then close it"]
    sets = [images, [images[1], np.zeros_like(images[0])]]
    _, ids, _ = vla.build_batch_inputs(sets, texts)
    single = [vla.predict_action(s, t, proprio) for s, t in zip(sets, texts)]
    batch = vla.predict_action_batch(sets, texts, [proprio, proprio + 0.1])
    single[1] = vla.predict_action(sets[1], texts[1], proprio + 0.1)
    assert len(vla.tokenizer.prompt_ids(texts[0])) != len(vla.tokenizer.prompt_ids(texts[1])) and ids.shape[0] == 2
    for one, many in zip(single, batch):
        assert many.kept_per_image == one.kept_per_image
        np.testing.assert_allclose(many.actions, one.actions, atol=1e-4, rtol=1e-4)


def test_right_padded_batch_finds_action_positions(vla, images):
    """Default action mask follows each sample's last valid token (right padding)."""
    pv, ids, mask = vla.build_inputs(images, INSTRUCTION)
    padded_ids = torch.cat([ids, torch.full((1, 3), 32000)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(vla(pv, padded_ids, padded_mask), vla(pv, ids, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vision,dim", [("dinov2", 32), ("siglip", 48)])
def test_single_backbone_variants(tmp_path, vision, dim, images):
    out = make_checkpoint(tmp_path / vision, size="tiny", vision=vision, num_images=1)
    vla = load_vla(out, device="cpu")
    assert not vla.vision_backbone.use_fused and vla.vision_backbone.embed_dim == dim
    assert not hasattr(vla.projector, "fc3")
    pred = vla.predict_action(images[:1], INSTRUCTION, np.zeros(8, np.float32))
    assert pred.actions.shape == (8, 7) and np.all(np.isfinite(pred.actions))


def test_fused_backbone_features(vla):
    """Second-to-last block features, channel-wise concat: (B, 256 * images, 32 + 48)."""
    x = torch.randn(1, 12, 224, 224)
    with torch.no_grad():
        feats = vla.vision_backbone(x)
        f = vla.vision_backbone.featurizer
        (dino,) = f.get_intermediate_layers(x[:, :3], n=[len(f.blocks) - 2])
    assert feats.shape == (1, 512, 80)
    torch.testing.assert_close(feats[:, :256, :32], dino)


def test_7b_parameter_count_on_meta():
    """Fused DINOv2-L/SigLIP-so400m + projector + Llama-2-7B (vocab 32064) = 7,541,237,184."""
    config = make_config("7b", "libero", 2, "dinosiglip")
    vla = build_vla(config, get_platform("libero"), 2, device="meta")
    count = sum(p.numel() for name, p in vla.named_parameters()
                if not name.startswith(("action_head.", "proprio_projector.")))
    assert count == 7_541_237_184
    assert vla.vision_backbone.embed_dim == 2176 and vla.vision_backbone.num_patches == 256
    assert vla.text_config.hidden_size == 4096 and vla.pruner.num_patches == 512
    assert vla.projector.fc1.weight.shape == (4 * 2176, 2176)
    assert vla.action_head.model.fc1.weight.shape == (4096, 7 * 4096)


def test_preprocessing():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    stats = [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.5,) * 3)]
    transform = ImageTransform(size=224, norm_stats=stats)
    px = image_to_pixels(image, transform, center_crop=True)
    assert px.shape == (6, 224, 224)
    # both halves are the same RGB under different normalisations
    rgb_a = px[:3] * torch.tensor(stats[0][1])[:, None, None] + torch.tensor(stats[0][0])[:, None, None]
    rgb_b = px[3:] * 0.5 + 0.5
    torch.testing.assert_close(rgb_a, rgb_b, atol=1e-5, rtol=1e-5)
    no_crop = image_to_pixels(image, transform, center_crop=False)
    assert not torch.allclose(px, no_crop)
    ramp = np.tile(np.linspace(0, 255, 100).astype(np.uint8)[None, :, None], (100, 1, 3))
    cropped = center_crop_image(ramp)
    assert cropped.shape == (100, 100, 3)
    assert cropped[50, 0, 0] > 5 and cropped[50, -1, 0] < 250  # the edges were cut off (sqrt(0.9) side)


def test_normalisation():
    stats = {"q01": [-1.0, 0.0], "q99": [1.0, 2.0], "mask": [True, False], "min": [-2, -2], "max": [2, 2]}
    a = unnormalize_actions(np.array([[-1.0, 0.25], [1.0, 0.75]]), stats, "bounds_q99")
    np.testing.assert_allclose(a, [[-1.0, 0.25], [1.0, 0.75]], atol=1e-6)
    b = unnormalize_actions(np.array([[0.0, 0.5]]), stats, "bounds")
    np.testing.assert_allclose(b, [[0.0, 0.5]], atol=1e-6)
    p = normalize_proprio(np.array([5.0, 1.0]), {"q01": [-1.0, 0.0], "q99": [1.0, 2.0]}, "bounds_q99")
    np.testing.assert_allclose(p, [1.0, 0.0], atol=1e-6)  # clipped, and scaled


def test_prune_off_runs_plain_oft(vla, images, proprio):
    lengths = _llm_input_lengths(vla)
    pruned = vla.predict_action(images, INSTRUCTION, proprio)
    vla.prune = False
    full = vla.predict_action(images, INSTRUCTION, proprio)
    assert full.kept_per_image == [256, 256] and pruned.kept_total < 512
    assert lengths[1] - lengths[0] == 512 - pruned.kept_total
    assert not np.allclose(full.normalized_actions, pruned.normalized_actions)


def test_predict_timings_add_up(vla, images, proprio):
    """Timings are reported per stage and the whole call covers the forward (speed itself is measured
    by benchmarks/, not by a timed test: a loaded CI machine made a 1 s bound flaky)."""
    t = vla.predict_action(images, INSTRUCTION, proprio).timings
    assert {"vision", "llm", "head", "forward", "preprocess", "total"} <= set(t)
    assert t["total"] >= t["forward"] > 0 and t["forward"] >= t["llm"] > 0


def test_proprio_to_head_adds_the_proprio_token_to_every_head_row(tmp_path, images, proprio):
    """The option beyond the reference (config.json lightvla.proprio_to_head): the head's input is
    the LLM's action rows plus the projected proprio token, on the dynamic and the static path;
    checkpoints without the key keep the reference's head input."""
    out = make_checkpoint(tmp_path / "ph", size="tiny", proprio_to_head=True)
    vla = load_vla(out, device="cpu", dtype="float32")
    assert vla.proprio_to_head and not load_vla(make_checkpoint(tmp_path / "ref", size="tiny")).proprio_to_head
    seen = {}
    vla.action_head.register_forward_pre_hook(lambda _m, args: seen.__setitem__("rows", args[0].clone()))
    pv, ids, mask = vla.build_inputs(images, INSTRUCTION)
    stats = vla.norm_stats[vla.default_unnorm_key]["proprio"]
    p = torch.from_numpy(normalize_proprio(proprio, stats, "bounds_q99"))[None]
    with torch.no_grad():
        out_dynamic = vla(pv, ids, mask, proprio=p)
        rows = seen["rows"]
        vla.proprio_to_head = False
        vla(pv, ids, mask, proprio=p)
        token = vla.proprio_projector(p)[:, None]  # (1, 1, H)
        torch.testing.assert_close(rows, seen["rows"] + token)
        vla.proprio_to_head = True
        vla.set_inference_path("static")
        torch.testing.assert_close(vla(pv, ids, mask, proprio=p), out_dynamic, atol=1e-5, rtol=1e-5)
