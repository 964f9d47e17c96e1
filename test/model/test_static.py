"""The static-shape inference path (model/static.py): LLM sequences padded to buckets of 16 give the
dynamic path's actions, with the same real tokens, position ids and head rows; the graphed path's
bookkeeping. CPU, fp32, on the tiny checkpoint; the CUDA-graph tests run only where CUDA is."""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightvla_ros.model import load_vla, static
from lightvla_ros.model.static import (BUCKET_MULTIPLE, CUDAGraphs, GraphedStages, bucket_length, bucket_lengths,
                                       pad_to_bucket, resolve_inference_path)

INSTRUCTIONS = ["Pick up the alphabet soup and place it in the basket", "open the drawer",
                "put both the cream cheese box and the butter in the basket, then close the lid"]
TOLERANCE = 1e-5  # fp32: padded keys change the attention's summation order, nothing else (docs/model.md)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def force_kept(vla, kept: int):
    """Make the pruner keep `kept` patches, spread over both images (random weights keep 2-40)."""
    P = vla.pruner.num_patches
    idx = torch.linspace(0, P - 1, kept).round().long()
    assert len(set(idx.tolist())) == kept
    keep = torch.zeros(P, dtype=torch.bool)
    keep[idx] = True
    keep = keep.to(next(vla.parameters()).device)

    def vote(tokens, attention_mask, task_padded=None):  # device ops only: a CUDA graph can hold it
        return keep[None].expand(tokens.shape[0], -1).clone()

    vla.pruner.vote = vote


def text_length(vla, instruction: str) -> int:
    return vla.prompt_batch([instruction])[0].shape[1]  # BOS, prompt, placeholders, STOP


class Recorder:
    """What the LLM and the head received, and the head's rows, in each forward."""

    def __init__(self, vla):
        self.llm, self.head, self.rows = [], [], []
        vla.language_model.model.register_forward_pre_hook(
            lambda mod, args, kwargs: self.llm.append(kwargs), with_kwargs=True)
        vla.action_head.register_forward_pre_hook(lambda mod, args: self.head.append(args[0]))
        row_index = vla.action_row_index
        vla.action_row_index = lambda *a: self.rows.append(row_index(*a)) or self.rows[-1]

    def real(self, i):
        """LLM call i: (tokens, position ids) of the real tokens, and their indices in the sequence."""
        kw = self.llm[i]
        mask = kw["attention_mask"]
        keys = (mask[:, 0, 0, :] if mask.dim() == 4 else mask).bool()[0]  # batch 1
        idx = keys.nonzero()[:, 0]
        return kw["inputs_embeds"][0, idx], kw["position_ids"][0, idx], idx


def run(vla, path, images, instruction, proprio):
    vla.set_inference_path(path)
    pred = vla.predict_action(images, instruction, proprio)
    return pred, vla.last_llm_length


def test_buckets():
    assert BUCKET_MULTIPLE == 16
    assert [bucket_length(n) for n in (1, 15, 16, 17, 80, 81, 593)] == [16, 16, 16, 32, 80, 96, 608]
    assert bucket_lengths(81, 120) == [96, 112, 128]
    assert bucket_lengths(80, 80) == [80]


def test_pad_to_bucket_inserts_masked_slots_after_the_patches():
    tokens = torch.arange(1, 1 + 2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)  # (B=2, L=5, D=3)
    pos = torch.tensor([[0, 3, 7, 8, 9], [0, 2, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0]])
    t, p, m = pad_to_bucket(tokens, pos, mask, patch_end=2, length=8)
    assert t.shape == (2, 8, 3) and p.shape == m.shape == (2, 8)
    torch.testing.assert_close(t[:, :2], tokens[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(t[:, 5:], tokens[:, 2:], rtol=0, atol=0)
    assert bool((t[:, 2:5] == 0).all())
    assert p.tolist() == [[0, 3, 3, 3, 3, 7, 8, 9], [0, 2, 2, 2, 2, 7, 8, 9]]
    assert m.tolist() == [[1, 1, 0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0, 1, 0]]
    assert pad_to_bucket(tokens, pos, mask, 2, 5)[0] is tokens
    with pytest.raises(ValueError, match="cannot pad"):
        pad_to_bucket(tokens, pos, mask, 2, 4)


def test_resolve_inference_path():
    assert resolve_inference_path("auto", "cpu") == "dynamic"
    assert resolve_inference_path("auto", "cuda") == "graphed"
    assert resolve_inference_path("AUTO", "cuda:1", compile=True) == "dynamic"
    assert resolve_inference_path("graphed", "cpu") == "static"  # the same static path, no graphs
    assert resolve_inference_path("graphed", "cuda") == "graphed"
    for path in ("dynamic", "static"):
        assert resolve_inference_path(path, "cpu") == resolve_inference_path(path, "cuda") == path
    with pytest.raises(ValueError, match="inference_path must be"):
        resolve_inference_path("fast", "cpu")


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_static_equals_dynamic_at_several_kept_counts(vla, images, proprio, instruction):
    """Forced kept counts: at a bucket boundary (no padding), one past it (15 padding tokens), a few
    in between, and all 512; real tokens, their position ids and the head's rows are the dynamic
    path's; the actions agree within TOLERANCE, and bit for bit where no padding was needed."""
    T = text_length(vla, instruction)
    on_boundary = (-(T + 1)) % 16 + 16 * 4  # L = 1 + kept + 1 (proprio) + T - 1 = kept + T + 1
    rec = Recorder(vla)
    pads = set()
    for kept in (on_boundary, on_boundary + 1, 7, 78, 150, 512):
        force_kept(vla, kept)
        dyn, dyn_len = run(vla, "dynamic", images, instruction, proprio)
        sta, sta_len = run(vla, "static", images, instruction, proprio)
        assert dyn.kept_total == sta.kept_total == kept
        assert dyn_len == kept + T + 1 and sta_len == bucket_length(dyn_len) and sta_len % 16 == 0
        pads.add(sta_len - dyn_len)
        # what the LLM saw: the static sequence minus its padding IS the dynamic one
        d_tokens, d_pos, d_idx = rec.real(-2)
        s_tokens, s_pos, s_idx = rec.real(-1)
        assert len(d_idx) == dyn_len and len(s_idx) == dyn_len
        assert torch.equal(s_tokens, d_tokens) and torch.equal(s_pos, d_pos)
        assert torch.equal(s_idx[rec.rows[-2][0]], rec.rows[-1][0])  # the head reads the same tokens
        torch.testing.assert_close(rec.head[-1], rec.head[-2], rtol=0, atol=TOLERANCE)
        diff = np.abs(sta.normalized_actions - dyn.normalized_actions).max()
        assert diff <= TOLERANCE, (kept, diff)
        if sta_len == dyn_len:
            np.testing.assert_array_equal(sta.normalized_actions, dyn.normalized_actions)
    assert 0 in pads and 15 in pads


def test_static_equals_dynamic_with_the_pruners_own_votes(vla, proprio):
    rng = np.random.default_rng(3)
    for i in range(3):
        images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
        dyn, _ = run(vla, "dynamic", images, INSTRUCTIONS[i], proprio)
        sta, _ = run(vla, "static", images, INSTRUCTIONS[i], proprio)
        assert sta.kept_per_image == dyn.kept_per_image
        np.testing.assert_allclose(sta.normalized_actions, dyn.normalized_actions, rtol=0, atol=TOLERANCE)


def test_unpruned_static_equals_dynamic(vla, images, proprio):
    vla.prune = False
    T = text_length(vla, INSTRUCTIONS[0])
    dyn, dyn_len = run(vla, "dynamic", images, INSTRUCTIONS[0], proprio)
    sta, sta_len = run(vla, "static", images, INSTRUCTIONS[0], proprio)
    assert dyn_len == 512 + T + 1 and sta_len == bucket_length(dyn_len)
    assert dyn.kept_total == sta.kept_total == 512
    np.testing.assert_allclose(sta.normalized_actions, dyn.normalized_actions, rtol=0, atol=TOLERANCE)


def test_static_batch_of_different_prompts_and_kept_counts(vla, images, proprio):
    """Right-padded prompts and per-sample kept counts: the static batch equals the dynamic one."""
    sets = [images, [images[1], np.zeros_like(images[0])]]
    texts = INSTRUCTIONS[:2]
    vla.set_inference_path("dynamic")
    dyn = vla.predict_action_batch(sets, texts, [proprio, proprio + 0.1])
    dyn_len = vla.last_llm_length
    vla.set_inference_path("static")
    sta = vla.predict_action_batch(sets, texts, [proprio, proprio + 0.1])
    assert vla.last_llm_length == bucket_length(dyn_len)
    assert dyn[0].kept_total != dyn[1].kept_total
    for d, s in zip(dyn, sta):
        assert s.kept_per_image == d.kept_per_image
        np.testing.assert_allclose(s.normalized_actions, d.normalized_actions, rtol=0, atol=TOLERANCE)


def test_training_and_gradients_run_dynamic(vla, images):
    """The static path is inference only: train mode or gradients on run the dynamic forward."""
    vla.set_inference_path("static")
    pv, ids, mask = vla.build_inputs(images, INSTRUCTIONS[1])
    force_kept(vla, 7)
    T = ids.shape[1]
    with torch.no_grad():
        vla(pv, ids, mask)
    assert vla.last_llm_length == bucket_length(1 + 7 + T - 1)
    vla(pv, ids, mask)  # gradients on
    assert vla.last_llm_length == 1 + 7 + T - 1
    vla.train()
    vla(pv, ids, mask)
    assert vla.last_llm_length == 1 + 512 + T - 1


def test_graphed_on_cpu_runs_static(tiny_checkpoint, images, proprio):
    vla = load_vla(tiny_checkpoint, device="cpu", dtype="float32", inference_path="graphed")
    assert vla.inference_path == "static"
    assert vla.capture_graphs()["graphs"] == 0 and vla.graphs is None
    vla.predict_action(images, INSTRUCTIONS[0], proprio)
    assert vla.last_llm_length % 16 == 0
    assert load_vla(tiny_checkpoint, device="cpu").inference_path == "dynamic"  # the library default
    with pytest.raises(ValueError, match="inference_path must be"):
        load_vla(tiny_checkpoint, device="cpu", inference_path="graphs")


class FailingCuda(SimpleNamespace):
    """Enough of torch.cuda for GraphedStages to try a capture that fails, as an unsupported op would."""

    def __init__(self):
        super().__init__(is_available=lambda: True, graph_pool_handle=lambda: None, synchronize=lambda *a: None,
                         device=lambda d: _Null(), stream=lambda s: _Null(), Stream=_Stream,
                         current_stream=_Stream, CUDAGraph=object)

    @staticmethod
    def graph(g, pool=None):
        raise RuntimeError("operation not permitted when stream is capturing")


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Stream:
    def wait_stream(self, other):
        pass


def test_a_failed_capture_falls_back_to_the_eager_static_path(monkeypatch):
    monkeypatch.setattr(static, "cuda", FailingCuda())
    stages = GraphedStages(torch.device("cpu"))
    x = torch.ones(2, 3)
    with pytest.warns(RuntimeWarning, match="CUDA graphs disabled"):
        out = stages("llm", lambda t, scale: t * scale, x, scale=2.0)
    torch.testing.assert_close(out, x * 2)
    assert stages.failure.startswith("llm: RuntimeError: operation not permitted") and stages.count == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once; from now on eager without trying
        torch.testing.assert_close(stages("head", lambda t: t + 1, x), x + 1)


def test_graph_signature_keys():
    a, b = torch.zeros(1, 96, 4), torch.zeros(1, 112, 4)
    module = torch.nn.Linear(4, 4)

    def key(name, args, static, fn=module.forward):
        return CUDAGraphs.key(name, fn, args, static)

    assert key("llm", (a, None), {}) != key("llm", (b, None), {})
    assert key("llm", (a, None), {}) != key("llm", (a.double(), None), {})
    assert key("vote", (a,), {"task_padded": False}) != key("vote", (a,), {"task_padded": True})
    assert key("llm", (a, None), {}) != key("llm", (a, None), {}, fn=torch.nn.Linear(4, 4).forward)
    assert key("llm", (a, None), {}) == key("llm", (torch.ones(1, 96, 4), None), {})  # values are inputs


# ---- CUDA only: what this CPU machine cannot run -------------------------------------------------
@cuda_only
@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-4), ("bfloat16", 5e-2)])
def test_graphed_equals_static_and_dynamic_on_cuda(tiny_checkpoint, images, proprio, dtype, tolerance):
    vla = load_vla(tiny_checkpoint, device="cuda", dtype=dtype, inference_path="graphed")
    assert vla.inference_path == "graphed"
    report = vla.capture_graphs()
    assert report["failure"] is None and report["graphs"] == vla.graphs.count >= 3 + len(report["llm_buckets"])
    assert report["memory_bytes"] > 0
    assert vla.graphs.captured("llm") == len(report["llm_buckets"])
    T = text_length(vla, INSTRUCTIONS[0])
    for kept in ((-(T + 1)) % 16 + 32, (-(T + 1)) % 16 + 33, 78, 512):
        force_kept(vla, kept)
        graphed, g_len = run(vla, "graphed", images, INSTRUCTIONS[0], proprio)
        if kept == 512:
            vla.prune = False
        sta, s_len = run(vla, "static", images, INSTRUCTIONS[0], proprio)
        dyn, _ = run(vla, "dynamic", images, INSTRUCTIONS[0], proprio)
        vla.prune = True
        assert g_len == s_len
        np.testing.assert_allclose(graphed.normalized_actions, sta.normalized_actions, rtol=0, atol=1e-5)
        np.testing.assert_allclose(graphed.normalized_actions, dyn.normalized_actions, rtol=0, atol=tolerance)
    vla.set_inference_path("graphed")
    report = vla.capture_graphs()
    for kept in (5, 200, 512):  # every LLM bucket was captured at warm-up: nothing new now
        force_kept(vla, kept)
        vla.predict_action(images, INSTRUCTIONS[0], proprio)
    vla.prune = False
    vla.predict_action(images, INSTRUCTIONS[0], proprio)
    assert vla.graphs.captured("llm") == len(report["llm_buckets"]) and vla.graphs.failure is None


def test_replay_check():
    """A capture counts only if its first replay equals the eager run it was captured after."""
    from lightvla_ros.model.static import replay_matches

    x = torch.tensor([0.5, -20.0, 3.0])
    assert replay_matches(x, x.clone())
    assert replay_matches(x + 0.01, x)  # within 1e-3 of the output's scale (20)
    assert not replay_matches(x + 0.1, x)
    assert not replay_matches(x[:2], x[:2].double())
    nan = torch.tensor([float("nan"), 1.0])
    assert replay_matches(nan, nan.clone())  # NaN where the eager run has NaN
    assert not replay_matches(torch.tensor([0.0, 1.0]), nan)
    mask = torch.tensor([True, False])
    assert replay_matches(mask, mask.clone()) and not replay_matches(~mask, mask)
