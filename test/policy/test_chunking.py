"""Chunk schedulers driven by a fake clock: step order, blending, delay compensation, pauses."""

import numpy as np
import pytest

from lightvla_ros.policy.chunking import (
    AsyncScheduler,
    OpenLoopScheduler,
    TemporalEnsembleScheduler,
    blend_weights,
    make_scheduler,
)

S = 1_000_000_000  # the core's time is integer ns
DT = S // 20  # 20 Hz


def ns(seconds_or_float_ns) -> int:
    return int(round(seconds_or_float_ns))
T = 8       # chunk size
D = 7       # action dim


def tagged_chunk(c: int, length: int = T) -> np.ndarray:
    """Chunk c, step i -> every value c * 100 + i, so an executed action names its origin."""
    return np.repeat((c * 100 + np.arange(length, dtype=np.float32))[:, None], D, axis=1)


def simulate(sched, n_steps: int, latency, obs_age: float = 0.0):
    """Fake robot loop: a tick every DT; a request returns after `latency` (float or callable(k))."""
    out, pending, c = [], None, 0
    for k in range(n_steps):
        t = k * DT

        def deliver():
            nonlocal pending
            if pending is not None and pending[0] <= t:
                sched.add_chunk(pending[2], pending[1], pending[0])
                pending = None

        deliver()
        if sched.wants_inference(t):
            sched.inference_started(t)
            lat = latency(c) if callable(latency) else latency
            pending = (t + ns(lat * S), t - ns(obs_age * S), tagged_chunk(c))
            c += 1
            deliver()
        a = sched.next_action(t)
        out.append(None if a is None else float(a[0]))
    return out


def test_make_scheduler_by_name_and_unknown_name():
    assert isinstance(make_scheduler("open_loop", T, D, DT, open_loop_steps=4), OpenLoopScheduler)
    assert isinstance(make_scheduler("async", T, D, DT), AsyncScheduler)
    assert isinstance(make_scheduler("temporal_ensemble", T, D, DT), TemporalEnsembleScheduler)
    with pytest.raises(ValueError, match="unknown execution_mode"):
        make_scheduler("closed_loop", T, D, DT)
    with pytest.raises(ValueError, match="open_loop steps"):
        make_scheduler("open_loop", T, D, DT, open_loop_steps=9)
    with pytest.raises(ValueError, match="blend"):
        make_scheduler("async", T, D, DT, blend=[0.5, 1.5])


def test_chunk_shape_is_checked():
    s = OpenLoopScheduler(T, D, DT)
    with pytest.raises(ValueError, match=r"\(T>=1, 7\)"):
        s.add_chunk(np.zeros((T, D + 1)), 0, 0)
    with pytest.raises(ValueError):
        s.add_chunk(np.zeros(D), 0, 0)


def test_open_loop_executes_k_steps_in_order_then_reinfers():
    s = OpenLoopScheduler(T, D, DT, steps=5)
    assert s.wants_inference(0)
    s.inference_started(0)
    assert not s.wants_inference(0)  # one request at a time
    s.add_chunk(tagged_chunk(0), 0, 0)
    got = [float(s.next_action(i * DT)[0]) for i in range(5)]
    assert got == [0, 1, 2, 3, 4]
    assert s.wants_inference(5 * DT)
    assert s.next_action(5 * DT) is None  # the robot waits
    assert s.stats.missed_steps == 1 and s.stats.pauses == 1


def test_open_loop_counts_a_pause_at_every_boundary():
    # 120 ms inference, 8 steps of 50 ms: the robot stands still for 3 steps at each boundary
    out = simulate(OpenLoopScheduler(T, D, DT), 60, latency=0.12)
    s_first = out.index(0.0)
    assert s_first == 3  # first chunk after 120 ms -> third tick (not counted as a pause)
    executed = [a for a in out if a is not None]
    assert executed[:T] == list(range(T))  # open loop never drops steps
    assert executed[T:2 * T] == [100 + i for i in range(T)]
    sched = OpenLoopScheduler(T, D, DT)
    simulate(sched, 60, latency=0.12)
    assert sched.stats.pauses >= 4
    assert sched.stats.missed_steps == 3 * sched.stats.pauses


def test_open_loop_without_latency_has_no_pause():
    sched = OpenLoopScheduler(T, D, DT)
    out = simulate(sched, 40, latency=0)
    assert None not in out
    assert sched.stats.pauses == 0


def test_blend_weights():
    np.testing.assert_allclose(blend_weights("linear", 3), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(blend_weights("none", 2), [1.0, 1.0])
    np.testing.assert_allclose(blend_weights([0.2, 0.6], 4), [0.2, 0.6, 0.6, 0.6])
    assert blend_weights("linear", 0).shape == (0,)
    with pytest.raises(ValueError):
        blend_weights("cosine", 2)


def test_async_blends_the_overlap_with_configured_weights():
    s = AsyncScheduler(T, D, DT, blend=[0.25, 0.75], delay_compensation=False)
    s.add_chunk(np.zeros((T, D)), 0, 0)
    for i in range(5):
        s.next_action(i * DT)              # 3 old steps left, all zeros
    s.add_chunk(np.full((T, D), 8.0), 5 * DT, 5 * DT)
    got = [float(s.next_action((5 + i) * DT)[0]) for i in range(T)]
    # old 0 vs new 8: weights of the new chunk 0.25, 0.75, 0.75 over the 3 overlapping steps
    assert got == [2.0, 6.0, 6.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    np.testing.assert_allclose(s.last_blend_weights, [0.25, 0.75, 0.75])


def test_async_delay_compensation_drops_steps_passed_since_the_observation():
    s = AsyncScheduler(T, D, DT, blend="none")
    s.add_chunk(tagged_chunk(0), 0, 0)
    for i in range(4):
        s.next_action(i * DT)
    # observation taken at step 1; steps 1, 2, 3 ran while the model worked -> new chunk starts at 3
    s.add_chunk(tagged_chunk(1), 1 * DT, ns(3.5 * DT))
    assert s.stats.dropped_steps == 3
    assert float(s.next_action(4 * DT)[0]) == 103.0
    assert float(s.next_action(5 * DT)[0]) == 104.0


def test_async_discards_a_chunk_entirely_in_the_past():
    s = AsyncScheduler(T, D, DT, blend="none")
    s.add_chunk(tagged_chunk(0, length=2), 0, 0)
    s.add_chunk(tagged_chunk(1, length=2), 0, 0)  # queue now chunk 1
    s2 = AsyncScheduler(2, D, DT, blend="none")
    s2.add_chunk(tagged_chunk(0, length=2), 0, 0)
    s2.next_action(0)
    s2.next_action(DT)
    s2.add_chunk(tagged_chunk(1, length=2), 0, 2 * DT)  # both its steps already passed
    assert s2.stats.discarded_chunks == 1
    assert s2.next_action(2 * DT) is None
    assert float(s.next_action(0)[0]) == 100.0


@pytest.mark.parametrize("latency", [0.02, 0.12, 0.15])
def test_async_has_no_pause_when_inference_is_shorter_than_the_chunk(latency):
    # With delay compensation a chunk is useful from obs + latency to obs + T, and the next one is
    # observed at the earliest when it lands: no pause while 2 * latency (+ margin) <= T steps.
    sched = AsyncScheduler(T, D, DT, blend="none")
    out = simulate(sched, 200, latency=latency)
    first = next(i for i, a in enumerate(out) if a is not None)
    assert None not in out[first:], out
    assert sched.stats.pauses == 0 and sched.stats.missed_steps == 0
    assert sched.stats.chunks >= 200 // T
    # with blend none every executed action is the step of its chunk that matches the clock
    for k in range(first, 200):
        c, i = divmod(int(out[k]), 100)
        assert i >= 0 and i < T
    # and the same loop in open loop pauses at every boundary
    ol = OpenLoopScheduler(T, D, DT)
    simulate(ol, 200, latency=latency)
    assert ol.stats.pauses >= 10


def test_async_without_delay_compensation_has_no_pause_up_to_the_chunk_duration():
    # 300 ms of an 8 x 50 ms chunk: executing the chunk from its step 0 (no dropping) keeps going
    sched = AsyncScheduler(T, D, DT, blend="none", delay_compensation=False)
    out = simulate(sched, 200, latency=0.3)
    first = next(i for i, a in enumerate(out) if a is not None)
    assert None not in out[first:]
    comp = AsyncScheduler(T, D, DT, blend="none")
    simulate(comp, 200, latency=0.3)
    assert comp.stats.pauses > 0  # aligned to the clock, a 6-step latency cannot cover 8 steps


def test_async_step_order_matches_observation_time():
    # every chunk is stamped with the request time; the action at tick k from chunk c must be the
    # chunk's step (k - request tick of c): delay compensation keeps the chunk aligned to the clock
    sched = AsyncScheduler(T, D, DT, blend="none")
    requests = {}
    orig = sched.inference_started

    def record(now):
        requests[len(requests)] = round(now / DT)
        orig(now)

    sched.inference_started = record
    out = simulate(sched, 120, latency=0.12)
    first = next(i for i, a in enumerate(out) if a is not None)
    requests[0] = first  # the robot stood still for the first chunk: nothing passed, step 0 first
    for k, a in enumerate(out):
        if a is None:
            continue
        c, i = divmod(int(a), 100)
        assert i == k - requests[c], (k, c, i)
    assert sched.stats.dropped_steps > 0


def test_async_jittery_latency_still_no_pause():
    rng = np.random.default_rng(0)
    lat = rng.uniform(0.05, 0.2, size=1000)
    sched = AsyncScheduler(T, D, DT)
    out = simulate(sched, 300, latency=lambda c: float(lat[c]))
    first = next(i for i, a in enumerate(out) if a is not None)
    assert None not in out[first:]


def test_async_pauses_when_inference_is_slower_than_the_chunk():
    sched = AsyncScheduler(T, D, DT, blend="none")
    simulate(sched, 200, latency=0.6)  # 12 steps of inference for an 8-step chunk
    assert sched.stats.pauses > 0


def test_async_requests_early_by_the_measured_latency():
    s = AsyncScheduler(T, D, DT, latency_margin_steps=1)
    s.inference_started(0)
    s.add_chunk(tagged_chunk(0), 0, ns(0.12 * S))  # 120 ms measured -> 3 steps + 1 margin
    assert s.latency_estimate == 120_000_000  # exact: integer ns
    assert s.lead_steps() == 4
    asked = []
    for k in range(T):
        asked.append(s.wants_inference(k * DT))
        s.next_action(k * DT)
    # queue 8,7,6,5,4,...: the first request comes when 4 steps are left
    assert asked.index(True) == 4


def test_temporal_ensemble_weights_oldest_first():
    m = 0.5
    s = TemporalEnsembleScheduler(T, D, DT, m=m)
    s.add_chunk(np.zeros((T, D)), 0, 0)
    s.next_action(0)
    s.add_chunk(np.full((T, D), 10.0), DT, DT)  # covers step 1 onward
    a = s.next_action(DT)
    w = np.exp(-m * np.arange(2))
    w /= w.sum()
    assert float(a[0]) == pytest.approx(w[1] * 10.0, rel=1e-5)
    np.testing.assert_allclose(s.last_weights, w, rtol=1e-6)


def test_temporal_ensemble_aligns_chunks_by_observation_time():
    s = TemporalEnsembleScheduler(T, D, DT, m=0)
    s.add_chunk(tagged_chunk(0), 0, 0)
    for k in range(3):
        s.next_action(k * DT)
    # observation at step 1, arrives after step 2: its step 2 lines up with tick 3
    s.add_chunk(tagged_chunk(1), DT, ns(2.5 * DT))
    a = s.next_action(3 * DT)
    assert float(a[0]) == pytest.approx((3 + 102) / 2)


def test_temporal_ensemble_m_zero_is_plain_mean_and_no_pause_with_fast_inference():
    sched = TemporalEnsembleScheduler(T, D, DT, m=0)
    out = simulate(sched, 100, latency=0.07)
    first = next(i for i, a in enumerate(out) if a is not None)
    assert None not in out[first:]
    assert sched.stats.pauses == 0
    assert len(sched.last_weights) >= 2
    np.testing.assert_allclose(sched.last_weights, np.full(len(sched.last_weights), 1 / len(sched.last_weights)))


def test_reset_clears_queue_and_request():
    for name in ("open_loop", "async", "temporal_ensemble"):
        s = make_scheduler(name, T, D, DT)
        s.add_chunk(tagged_chunk(0), 0, 0)
        s.inference_started(0)
        s.reset()
        assert s.queued_steps == 0
        assert s.next_action(0) is None
        assert s.stats.missed_steps == 0  # no chunk since reset: not a pause
        assert s.wants_inference(0)


def test_inference_failed_allows_a_new_request():
    s = OpenLoopScheduler(T, D, DT)
    s.inference_started(0)
    assert not s.wants_inference(0)
    s.inference_failed(0.01)
    assert s.wants_inference(0.01)


def test_queued_steps_math():
    s = AsyncScheduler(T, D, DT)
    assert s.lead_steps() == 1  # no latency measured yet
    s.add_chunk(tagged_chunk(0), 0, 0)
    assert s.queued_steps == T
    assert s.latency_estimate == 0
