"""TokenPruner: faithful semantics (LiAutoAD/LightVLA modeling_prismatic.py) and batch > 1."""
import types

import pytest
import torch
import torch.nn.functional as F

from lightvla_ros.model.pruner import TokenPruner


def make_pruner(hidden, num_patches, training=False):
    pruner = TokenPruner(types.SimpleNamespace(hidden_size=hidden), num_patches)
    return pruner.train(training)


def voting_tokens(groups, hidden, num_task, seed=0, alpha=None):
    """Sequence [BOS] + patches + task where patch i is a copy of representative groups[i].

    Task tokens are +-e_d (d < num_task // 2), so the task-aware query of a patch points
    along the patch's own component in that subspace; every group then votes for one of its
    own copies and the pruner keeps exactly one patch per distinct representative.
    """
    gen = torch.Generator().manual_seed(seed)
    groups = torch.as_tensor(groups)
    num_groups = int(groups.max()) + 1
    m = num_task // 2
    if alpha is None:  # keep attention logits around 0.5: nearly linear, direction-preserving
        alpha = 0.5 * m ** 0.5 / hidden ** 0.5
    a = torch.randn(num_groups, m, generator=gen)
    b = torch.randn(num_groups, hidden - m, generator=gen)
    reps = torch.cat([F.normalize(a, dim=-1) * alpha,
                      F.normalize(b, dim=-1) * (1 - alpha ** 2) ** 0.5], dim=-1)  # (K, D)
    eye = torch.eye(hidden)[:m]
    task = torch.cat([eye, -eye, torch.zeros(num_task - 2 * m, hidden)])  # (T, D)
    bos = torch.randn(1, hidden, generator=gen)
    return torch.cat([bos, reps[groups], task])[None], reps  # (1, L, D), (K, D)


def seq_inputs(tokens):
    bsz, seq_len, _ = tokens.shape
    pos = torch.arange(seq_len).expand(bsz, -1).clone()
    return pos, torch.ones(bsz, seq_len, dtype=torch.long)


# Section 7.3's score matrix: P0 and P1 vote for P0, P2 and P3 for themselves.
WORKED_SCORE = torch.tensor([[[0.40, 0.35, 0.20, 0.15],
                              [0.40, 0.35, 0.20, 0.15],
                              [0.15, 0.20, 0.50, 0.15],
                              [0.15, 0.20, 0.15, 0.50]]])


def test_no_parameters_and_writable_num_patches():
    pruner = make_pruner(4096, 512)
    assert sum(p.numel() for p in pruner.parameters()) == 0
    assert len(pruner.state_dict()) == 0
    assert pruner.scale_factor == 1 / 64
    pruner.num_patches = 256
    assert pruner.num_patches == 256
    with pytest.raises(ValueError):
        pruner.num_patches = 0


def test_worked_example_section_7(monkeypatch):
    pruner = make_pruner(4, 4)
    assert pruner.score_to_mask(WORKED_SCORE).tolist() == [[True, False, True, True]]
    assert WORKED_SCORE.argmax(-1).tolist() == [[0, 0, 2, 3]]

    tokens = torch.arange(8 * 4, dtype=torch.float32).view(1, 8, 4)  # BOS P0..P3 T0..T2
    pos, am = seq_inputs(tokens)
    monkeypatch.setattr(pruner, "get_score", lambda patches, task: WORKED_SCORE)

    out, out_pos, out_am = pruner(tokens, pos, am)  # 7.4: [BOS, P0, P2, P3, T0, T1, T2]
    keep = [0, 1, 3, 4, 5, 6, 7]
    assert torch.equal(out, tokens[:, keep])
    assert out_pos.tolist() == [keep]
    assert out_am.tolist() == [[1] * 7]
    assert pruner.last_kept_counts.tolist() == [3]

    pruner.train()  # 7.5: [BOS, P0, P0, P2, P3, T0, T1, T2], length unchanged
    out, out_pos, out_am = pruner(tokens, pos, am)
    slots = [0, 1, 1, 3, 4, 5, 6, 7]
    assert torch.allclose(out, tokens[:, slots])
    assert out_pos.tolist() == [slots]
    assert pruner.last_keep_mask.tolist() == [[True, False, True, True]]


def test_full_forward_duplicates_collapse_to_one_representative():
    groups = [0, 0, 1, 2]  # section 7: P0 and P1 alike, P2 and P3 distinct
    tokens, reps = voting_tokens(groups, hidden=64, num_task=16)
    pruner = make_pruner(64, 4)
    pos, am = seq_inputs(tokens)
    assert pruner.get_score(tokens[:, 1:5], tokens[:, 5:]).argmax(-1).tolist() == [[0, 0, 2, 3]]
    out, out_pos, _ = pruner(tokens, pos, am)
    assert out.shape == (1, 1 + 3 + 16, 64)
    assert torch.equal(out[0, 1:4], reps)
    assert out_pos[0, :4].tolist() == [0, 1, 3, 4]


def test_many_duplicates_keep_one_per_group():
    gen = torch.Generator().manual_seed(1)
    groups = torch.cat([torch.arange(10), torch.randint(0, 10, (54,), generator=gen)])
    groups = groups[torch.randperm(64, generator=gen)]
    tokens, reps = voting_tokens(groups, hidden=256, num_task=40)
    pruner = make_pruner(256, 64)
    out, _, _ = pruner(tokens, *seq_inputs(tokens))
    assert pruner.last_kept_counts.tolist() == [10]
    kept = pruner.last_keep_mask[0]
    for g in range(10):  # exactly one kept copy per group, and it is the group's vector
        assert int(kept[groups == g].sum()) == 1
    assert sorted(map(tuple, out[0, 1:11].tolist())) == sorted(map(tuple, reps.tolist()))


def test_eval_equals_hand_written_gather():
    torch.manual_seed(0)
    P, T, D = 12, 5, 32
    tokens = torch.randn(1, 1 + P + T, D)
    pos = torch.arange(1 + P + T)[None] + 7
    am = torch.ones(1, 1 + P + T, dtype=torch.long)
    am[0, 3] = 0
    pruner = make_pruner(D, P)
    out, out_pos, out_am = pruner(tokens, pos, am)

    score = pruner.get_score(tokens[:, 1:1 + P], tokens[:, 1 + P:])
    voted = set(score[0].argmax(-1).tolist())
    keep = [0] + [1 + i for i in range(P) if i in voted] + list(range(1 + P, 1 + P + T))
    assert torch.equal(out, tokens[:, keep])
    assert torch.equal(out_pos, pos[:, keep])
    assert torch.equal(out_am, am[:, keep])
    assert pruner.last_kept_counts.tolist() == [len(voted)]


def test_position_ids_keep_original_values():
    P, T, D = 512, 6, 32
    groups = torch.arange(P) // 8  # 64 groups of 8 neighbours
    tokens, _ = voting_tokens(groups, hidden=D, num_task=T, alpha=0.6)
    pruner = make_pruner(D, P)
    out, out_pos, _ = pruner(tokens, *seq_inputs(tokens))
    kept = pruner.last_kept_counts.item()
    assert 1 <= kept < P
    # text tokens keep 513... and kept patches their own ids: gaps stay, no renumbering
    assert out_pos[0, 1 + kept:].tolist() == list(range(1 + P, 1 + P + T))
    kept_idx = pruner.last_keep_mask[0].nonzero().flatten()
    assert out_pos[0, 1:1 + kept].tolist() == (kept_idx + 1).tolist()


def test_train_forward_is_hard_selection_with_soft_gradient():
    torch.manual_seed(0)
    P, T, D = 8, 4, 16
    tokens = torch.randn(1, 1 + P + T, D, requires_grad=True)
    pos, am = seq_inputs(tokens)
    pruner = make_pruner(D, P, training=True)
    out, out_pos, out_am = pruner(tokens, pos, am)
    assert out.shape == tokens.shape

    patches = tokens[:, 1:1 + P]
    idx = pruner.get_score(patches, tokens[:, 1 + P:]).argmax(-1)  # (1, P)
    hard = F.one_hot(idx, P).float() @ patches
    assert torch.allclose(out[:, 1:1 + P], hard, atol=1e-6)
    assert torch.equal(out_pos[:, 1:1 + P], pos[:, 1:1 + P].gather(1, idx))

    # task tokens reach the patch slots only through the score, i.e. only via the softmax
    weights = torch.randn_like(out[:, 1:1 + P])
    (out[:, 1:1 + P] * weights).sum().backward()
    assert tokens.grad[0, 1 + P:].abs().sum() > 0
    assert tokens.grad[0, 1:1 + P].abs().sum() > 0


def test_noise_changes_votes_only_at_high_scale():
    torch.manual_seed(0)
    P, D = 32, 16
    patches, task = torch.randn(1, P, D), torch.randn(1, 4, D)
    pruner = make_pruner(D, P, training=True)
    score = pruner.get_score(patches, task)
    clean = score.argmax(-1)
    for scale in (None, 0.0):
        pruner.set_noise_scale(scale)
        assert torch.equal(pruner.score_to_indices(score, patches)[0], clean)
    pruner.set_noise_scale(100.0)
    torch.manual_seed(1)
    noisy = pruner.score_to_indices(score, patches)[0]
    assert (noisy != clean).sum() > P // 2


def test_batch_of_two_equals_single_runs():
    D, P, T = 64, 12, 16
    a, _ = voting_tokens([0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1], D, T, seed=1)  # keeps 2
    b, _ = voting_tokens([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 4, 4], D, T, seed=2)  # keeps 5
    pruner = make_pruner(D, P)
    singles = []
    for tokens in (a, b):
        pos, am = seq_inputs(tokens)
        singles.append(pruner(tokens, pos + 3, am))
        assert singles[-1][0].shape[1] == 1 + pruner.last_kept_counts.item() + T
    pos, am = seq_inputs(torch.cat([a, b]))
    out, out_pos, out_am = pruner(torch.cat([a, b]), pos + 3, am)
    assert pruner.last_kept_counts.tolist() == [2, 5]
    assert out.shape == (2, 1 + 5 + T, D)

    for i, (counts, (s_tok, s_pos, s_am)) in enumerate(zip([2, 5], singles)):
        valid = out_am[i].bool()
        assert int(valid.sum()) == 1 + counts + T
        assert torch.equal(out[i, valid], s_tok[0])
        assert torch.equal(out_pos[i, valid], s_pos[0])
        assert torch.equal(out_am[i, valid], s_am[0])
    # sample 0 is padded by 3 zero tokens with mask 0, right after its kept patches
    assert out_am[0].tolist() == [1] * 3 + [0] * 3 + [1] * T
    assert out[0, 3:6].abs().sum() == 0
    assert out_pos[0, 3:6].tolist() == [out_pos[0, 2].item()] * 3


def test_rms_norm_fp32_with_bf16_input():
    x = torch.randn(2, 5, 64).to(torch.bfloat16) * 30
    y = TokenPruner.rms_norm(x)
    assert y.dtype == torch.bfloat16
    x32 = x.float()
    ref = (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    assert torch.equal(y, ref)
    out, _, _ = make_pruner(64, 3)(x, *seq_inputs(x))
    assert out.dtype == torch.bfloat16


def test_bad_shapes_raise_clear_errors():
    pruner = make_pruner(16, 8)
    tokens = torch.randn(1, 9, 16)  # no room for a task token
    with pytest.raises(ValueError, match="too short"):
        pruner(tokens, *seq_inputs(tokens))
    tokens = torch.randn(1, 12, 16)
    pos, am = seq_inputs(tokens)
    with pytest.raises(ValueError, match="attention_mask"):
        pruner(tokens, pos, am[:, :-1])
    with pytest.raises(ValueError, match="position_ids"):
        pruner(tokens, pos[:, :-1], am)
    with pytest.raises(ValueError, match="hidden_size"):
        pruner(torch.randn(1, 12, 8), pos, am)
