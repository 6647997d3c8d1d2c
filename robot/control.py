"""Fixed-rate control on absolute deadlines, with a real or a simulated clock, and action-chunk execution.

`RateLoop` yields one `Tick` per control period. Deadlines are absolute (``t0 + k * period``), so a slow
step never shifts the schedule (no ``sleep(dt)`` drift); a step that runs past the next deadline is an
*overrun*: the loop warns, skips the deadlines it missed (never bursts to catch up) and counts them.

The clock is pluggable:

- `MonotonicClock` (``realtime = True``): ``time.monotonic``; waits by sleeping until shortly before the
  deadline and spinning the rest (the OS wakes a sleeping thread late by 0.1-1 ms on a busy machine; the
  spin removes most of that, LeRobot's ``precise_sleep`` does the same).
- `SimulatedClock` (``realtime = False``): virtual time that jumps to each deadline instantly, so a
  simulated robot runs as fast as it can while the episode's timestamps stay exactly ``k / hz``.

`ChunkExecutor` plays a (K, 7) action chunk one action per tick and asks for a new chunk when it runs out,
or after ``replan_every`` actions (receding horizon: the rest of the old chunk is dropped).

Example::

    loop = RateLoop(hz=30)
    for tick in loop:                      # sleeps until each absolute deadline
        with tick.section("observe"):
            obs = read_sensors()
        ...
        if done:
            break
    print(loop.report().summary())
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- clocks
class Clock(Protocol):
    """Seconds on some monotonic time line, and a way to wait for a point on it."""

    realtime: bool

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...


class MonotonicClock:
    """Wall time (``time.monotonic``). ``spin_s``: the last part of every wait is a busy spin (s)."""

    realtime = True

    def __init__(self, spin_s: float = 0.001) -> None:
        if not 0 <= spin_s <= 0.05:
            raise ValueError(f"spin_s: {spin_s} is outside 0..0.05 s")
        self.spin_s = spin_s

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float) -> None:
        remaining = t - time.monotonic()
        if remaining > self.spin_s:
            time.sleep(remaining - self.spin_s)
        while time.monotonic() < t:
            pass


class SimulatedClock:
    """Virtual time: ``sleep_until`` jumps there at once (never backwards). The simulated robot's clock."""

    realtime = False

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def sleep_until(self, t: float) -> None:
        self._t = max(self._t, float(t))

    def advance(self, dt: float) -> None:
        """Let ``dt`` seconds of simulated time pass (e.g. a modelled computation inside a step)."""
        if dt < 0:
            raise ValueError(f"dt: cannot go back in time ({dt})")
        self._t += dt


def make_clock(realtime: bool, spin_s: float = 0.001) -> Clock:
    return MonotonicClock(spin_s) if realtime else SimulatedClock()


@contextmanager
def realtime_priority(priority: int | None) -> Iterator[bool]:
    """Run the calling thread under SCHED_FIFO ``priority`` (1-99) inside the block, as robot drivers do
    (Franka's controller manager: 98), so a busy machine cannot delay the loop's wake-ups. Needs root or
    CAP_SYS_NICE (``ulimit -r`` / limits.conf ``rtprio``); without it, logs a warning and runs normally.
    Yields whether the priority was applied. ``None``: do nothing."""
    if priority is None or not hasattr(os, "sched_setscheduler"):
        yield False
        return
    if not 1 <= priority <= 99:
        raise ValueError(f"rt_priority: must be in 1..99, got {priority}")
    old_policy, old_param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        log.warning("control loop: SCHED_FIFO priority %d not permitted (needs CAP_SYS_NICE / rtprio); running at normal priority", priority)
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, old_policy, old_param)


# ---------------------------------------------------------------------------------------------- loop
@dataclass
class Tick:
    """One control period. Times in seconds on the loop's clock; ``sections`` in wall seconds."""

    index: int
    deadline: float
    start: float
    period: float  # nominal
    sections: dict[str, float] = field(default_factory=dict)
    end: float | None = None

    @property
    def lateness(self) -> float:
        """How late this step started after its deadline (s, >= 0 for a real clock)."""
        return self.start - self.deadline

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time a part of the step (observe, infer, act, record) with the wall clock, even in simulated time:
        the real compute cost is what tells whether the rig can keep the rate."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sections[name] = self.sections.get(name, 0.0) + time.perf_counter() - t0


def _percentiles(x: np.ndarray) -> tuple[float, float, float]:
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    return (float(np.percentile(x, 50)), float(np.percentile(x, 99)), float(np.max(x)))


@dataclass(frozen=True)
class LoopReport:
    """Timing of a finished loop. ``period_jitter`` = |actual period - nominal| per step (s);
    ``lateness`` = step start - its deadline (s); ``busy`` = step end - step start (s)."""

    hz: float
    steps: int
    duration_s: float
    overruns: int
    missed_ticks: int
    period_jitter: np.ndarray
    lateness: np.ndarray
    busy: np.ndarray
    sections: dict[str, np.ndarray]

    @property
    def achieved_hz(self) -> float:
        return (self.steps - 1) / self.duration_s if self.steps > 1 and self.duration_s > 0 else math.nan

    def jitter_ms(self) -> tuple[float, float, float]:
        """(p50, p99, max) period jitter in ms."""
        return tuple(v * 1e3 for v in _percentiles(self.period_jitter))  # type: ignore[return-value]

    def lateness_ms(self) -> tuple[float, float, float]:
        return tuple(v * 1e3 for v in _percentiles(self.lateness))  # type: ignore[return-value]

    def summary(self) -> str:
        j, la = self.jitter_ms(), self.lateness_ms()
        parts = [
            f"{self.steps} steps at {self.achieved_hz:.2f}/{self.hz:g} Hz",
            f"period jitter p50/p99/max {j[0]:.3f}/{j[1]:.3f}/{j[2]:.3f} ms",
            f"lateness p99 {la[1]:.3f} ms",
            f"overruns {self.overruns} (missed ticks {self.missed_ticks})",
        ]
        for name, v in self.sections.items():
            p = _percentiles(v)
            parts.append(f"{name} p50/p99 {p[0] * 1e3:.2f}/{p[1] * 1e3:.2f} ms")
        return "; ".join(parts)


class RateLoop:
    """Yields a `Tick` at ``t0 + k / hz`` for k = 0, 1, ... (absolute deadlines).

    ``max_steps`` ends the iteration (None: until the caller breaks). ``rt_priority``: run the loop's thread
    under SCHED_FIFO at that priority (real clocks only). A step that ends after the next
    deadline is an overrun: logged (first ``warn_first`` then every 100th) and the missed deadlines are
    skipped, so the loop resumes on the schedule instead of bursting.
    """

    def __init__(self, hz: float, clock: Clock | None = None, max_steps: int | None = None, warn_first: int = 5,
                 rt_priority: int | None = None) -> None:
        if not (isinstance(hz, (int, float)) and math.isfinite(hz) and 0 < hz <= 2000):
            raise ValueError(f"hz: control rate must be in (0, 2000], got {hz!r}")
        if max_steps is not None and max_steps < 0:
            raise ValueError(f"max_steps: must be >= 0 or None, got {max_steps}")
        self.hz = float(hz)
        self.period = 1.0 / self.hz
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.max_steps = max_steps
        self.warn_first = warn_first
        # SCHED_FIFO for the loop's thread while it runs (real clocks only; see `realtime_priority`).
        self.rt_priority = rt_priority if getattr(self.clock, "realtime", False) else None
        self.ticks: list[Tick] = []
        self.overruns = 0
        self.missed_ticks = 0

    def __iter__(self) -> Iterator[Tick]:
        with realtime_priority(self.rt_priority):
            yield from self._ticks()

    def _ticks(self) -> Iterator[Tick]:
        self.ticks, self.overruns, self.missed_ticks = [], 0, 0
        clock, period = self.clock, self.period
        t0 = clock.now()
        k = 0
        tick: Tick | None = None
        try:
            while self.max_steps is None or len(self.ticks) < self.max_steps:
                deadline = t0 + k * period
                clock.sleep_until(deadline)
                tick = Tick(index=len(self.ticks), deadline=deadline, start=clock.now(), period=period)
                self.ticks.append(tick)
                yield tick
                tick.end = clock.now()
                k += 1
                next_deadline = t0 + k * period
                if tick.end > next_deadline:
                    # Overrun: resume at the first deadline still ahead of us (no burst of catch-up steps).
                    skip = int((tick.end - next_deadline) // period) + 1
                    self.overruns += 1
                    self.missed_ticks += skip
                    k += skip
                    if self.overruns <= self.warn_first or self.overruns % 100 == 0:
                        log.warning(
                            "control loop overrun at step %d: step took %.2f ms of a %.2f ms period (%s); skipping %d tick(s) [overrun #%d]",
                            tick.index, (tick.end - tick.start) * 1e3, period * 1e3,
                            ", ".join(f"{n} {v * 1e3:.1f} ms" for n, v in tick.sections.items()) or "no sections", skip, self.overruns,
                        )
                tick = None
        finally:
            if tick is not None and tick.end is None:  # the caller broke out of this tick
                tick.end = clock.now()

    def report(self) -> LoopReport:
        ticks = self.ticks
        starts = np.array([t.start for t in ticks], dtype=np.float64)
        ends = np.array([t.end if t.end is not None else t.start for t in ticks], dtype=np.float64)
        periods = np.diff(starts)
        # Periods that span skipped ticks are not jitter: compare against the deadlines they were meant for.
        deadlines = np.array([t.deadline for t in ticks], dtype=np.float64)
        nominal = np.diff(deadlines)
        names = sorted({n for t in ticks for n in t.sections})
        return LoopReport(
            hz=self.hz,
            steps=len(ticks),
            duration_s=float(starts[-1] - starts[0]) if len(ticks) > 1 else 0.0,
            overruns=self.overruns,
            missed_ticks=self.missed_ticks,
            period_jitter=np.abs(periods - nominal),
            lateness=starts - deadlines,
            busy=ends - starts,
            sections={n: np.array([t.sections.get(n, 0.0) for t in ticks]) for n in names},
        )


# ---------------------------------------------------------------------------------------------- chunks
class ChunkExecutor:
    """Plays action chunks one action per tick.

    ``push(chunk, stamp)`` installs a new (K, A) chunk (replacing what is left of the old one); ``pop()``
    returns the next action with the time it is *meant for* (``stamp + i * period``: the safety filter's
    watchdog uses it, so a chunk that is played for longer than it covers goes stale). ``needs_plan``
    is true when the queue is empty, or once ``replan_every`` actions of the current chunk were played.
    """

    def __init__(self, period: float, replan_every: int | None = None, action_dim: int = 7) -> None:
        if replan_every is not None and replan_every < 1:
            raise ValueError(f"replan_every: must be >= 1 or None (play whole chunks), got {replan_every}")
        if period <= 0:
            raise ValueError(f"period: must be > 0, got {period}")
        self.period = period
        self.replan_every = replan_every
        self.action_dim = action_dim
        self._chunk: np.ndarray | None = None
        self._stamp = 0.0
        self._i = 0
        self.chunks_received = 0

    def reset(self) -> None:
        self._chunk, self._i = None, 0

    @property
    def remaining(self) -> int:
        return 0 if self._chunk is None else len(self._chunk) - self._i

    @property
    def needs_plan(self) -> bool:
        if self.remaining == 0:
            return True
        return self.replan_every is not None and self._i >= self.replan_every

    def push(self, chunk: np.ndarray, stamp: float) -> None:
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim == 1:
            chunk = chunk[None]
        if chunk.ndim != 2 or chunk.shape[0] < 1 or chunk.shape[1] != self.action_dim:
            raise ValueError(f"action chunk: expected shape (K, {self.action_dim}) with K >= 1, got {chunk.shape}")
        self._chunk, self._stamp, self._i = chunk, float(stamp), 0
        self.chunks_received += 1

    def pop(self) -> tuple[np.ndarray, float, int]:
        """(action (A,), time the action is meant for, its index in the chunk)."""
        if self.remaining == 0:
            raise IndexError("action chunk exhausted: call push() first (needs_plan was true)")
        i = self._i
        self._i += 1
        return self._chunk[i].copy(), self._stamp + i * self.period, i
