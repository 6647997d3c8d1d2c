"""Fixed-rate loop on absolute deadlines (real and simulated clocks) and chunk execution."""

import time

import numpy as np
import pytest

from robot.control import ChunkExecutor, MonotonicClock, RateLoop, SimulatedClock


def test_simulated_clock_runs_without_sleeping_and_stamps_exact_periods():
    clock = SimulatedClock()
    loop = RateLoop(10, clock, max_steps=50)
    t0 = time.perf_counter()
    starts = [tick.start for tick in loop]
    assert time.perf_counter() - t0 < 0.5  # 5 s of simulated time, no sleeping
    np.testing.assert_allclose(np.diff(starts), 0.1, atol=1e-9)
    rep = loop.report()
    assert rep.steps == 50 and rep.overruns == 0 and rep.jitter_ms()[2] < 1e-6


def test_realtime_loop_keeps_absolute_deadlines_without_drift():
    loop = RateLoop(100, MonotonicClock(spin_s=0.002), max_steps=40)
    for tick in loop:
        time.sleep(0.003)  # a step costing 30% of the period must not shift the schedule
    rep = loop.report()
    d = np.array([t.deadline for t in loop.ticks])
    k = (d - d[0]) / 0.01
    # Every deadline lies on the t0 + k * period grid (no accumulation of sleep errors) ...
    np.testing.assert_allclose(k, np.round(k), atol=1e-6)
    # ... k advances by one per step, plus the ticks skipped after an overrun (this machine is shared).
    assert round(k[-1]) == 39 + rep.missed_ticks
    assert rep.lateness_ms()[0] < 1.0


def test_overrun_is_counted_and_missed_ticks_are_skipped_not_burst():
    clock = SimulatedClock()
    loop = RateLoop(10, clock, max_steps=5)
    for tick in loop:
        if tick.index == 1:
            clock.advance(0.25)  # this step takes 2.5 periods
    rep = loop.report()
    assert rep.overruns == 1 and rep.missed_ticks == 2
    starts = [t.start for t in loop.ticks]
    # After the overrun the loop resumes on the original grid (0.4), not immediately at 0.35.
    assert starts[:3] == pytest.approx([0.0, 0.1, 0.4])
    assert rep.jitter_ms()[2] < 1e-6  # skipped ticks are not jitter


def test_sections_are_timed_even_in_simulated_time():
    loop = RateLoop(10, SimulatedClock(), max_steps=3)
    for tick in loop:
        with tick.section("infer"):
            time.sleep(0.002)
    assert all(t.sections["infer"] >= 0.0015 for t in loop.ticks)


def test_bad_rate_is_refused_with_the_field_name():
    with pytest.raises(ValueError, match="hz"):
        RateLoop(0)
    with pytest.raises(ValueError, match="hz"):
        RateLoop(float("nan"))


def test_chunk_executor_plays_chunks_and_replans():
    ex = ChunkExecutor(period=0.1, replan_every=2)
    assert ex.needs_plan
    chunk = np.arange(4 * 7, dtype=np.float32).reshape(4, 7)
    ex.push(chunk, stamp=5.0)
    a, meant_for, i = ex.pop()
    np.testing.assert_array_equal(a, chunk[0])
    assert (meant_for, i) == (5.0, 0)
    assert not ex.needs_plan
    a, meant_for, i = ex.pop()
    assert meant_for == pytest.approx(5.1) and i == 1
    assert ex.needs_plan  # replan after 2 of 4
    whole = ChunkExecutor(period=0.1)
    whole.push(chunk, 0.0)
    for _ in range(3):
        whole.pop()
        assert not whole.needs_plan
    whole.pop()
    assert whole.needs_plan
    with pytest.raises(IndexError):
        whole.pop()
    with pytest.raises(ValueError, match="chunk"):
        whole.push(np.zeros((3, 6)), 0.0)


def test_realtime_priority_is_applied_and_restored_or_refused_cleanly():
    import os

    from robot.control import realtime_priority

    before = os.sched_getscheduler(0)
    loop = RateLoop(200, MonotonicClock(), max_steps=20, rt_priority=50)
    policies = [os.sched_getscheduler(0) for _ in loop]
    assert os.sched_getscheduler(0) == before  # restored after the loop
    with realtime_priority(50) as applied:
        pass
    assert policies[0] == (os.SCHED_FIFO if applied else before)
    assert RateLoop(10, SimulatedClock(), rt_priority=50).rt_priority is None  # simulated time never needs it
    with pytest.raises(ValueError, match="rt_priority"):
        with realtime_priority(120):
            pass
