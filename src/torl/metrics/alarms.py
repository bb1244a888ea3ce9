"""Run-health alarms: a `HealthMonitor` fed each training step's metrics row raises `Alarm`s.

    monitor = HealthMonitor(HealthConfig())
    alarms = monitor.update(step, row)          # row: that step's metrics dict (metrics.jsonl keys)
    row.update(monitor.alarm_metrics())         # health/alarm_<name>: 1 while the alarm holds, else 0
    monitor.state_dict() / load_state_dict(d)   # JSON-serializable; survives a resume
    monitor.summary_lines()                     # for the run's README.txt

Alarms (each is checked only on steps whose row has its metric, as a finite number):

- ``tool_collapse``: `tools/code_ratio` or `tools/calls_per_response`, averaged over the last
  `tool_window` steps, fell to (1 - `tool_drop`) of its running peak or below; the peak is the
  largest such average so far and must be at least `tool_min_peak` (so noise near 0 never fires).
- ``grad_norm_spike``: `grad_norm` above `grad_spike_factor` x the median of the previous
  `grad_window` finite values, once `grad_warmup` of them were seen; a NaN/inf norm always fires.
- ``entropy_collapse``: `entropy` below `entropy_fraction` x its reference, the mean of the
  first `entropy_reference_steps` steps' entropy.
- ``format_collapse``: `health/no_boxed_ratio` (`torl.metrics.health`) above `no_boxed_max`.

Definitions and defaults are also in torl/metrics/METRICS.md ("Health metrics").
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import deque
from collections.abc import Mapping

ALARM_NAMES = ("tool_collapse", "grad_norm_spike", "entropy_collapse", "format_collapse")
TOOL_METRICS = ("tools/code_ratio", "tools/calls_per_response")
STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    tool_drop: float = 0.5                 # fraction of the running peak lost that counts as a collapse
    tool_min_peak: float = 0.2             # peaks below this are noise: no tool_collapse
    tool_window: int = 5                   # steps averaged before comparing with the peak
    grad_spike_factor: float = 10.0        # grad_norm > factor x running median
    grad_window: int = 50                  # recent finite grad norms the median is taken over
    grad_warmup: int = 10                  # grad norms seen before spikes are judged
    entropy_reference_steps: int = 5       # first steps whose mean entropy is the reference
    entropy_fraction: float = 0.1          # entropy < fraction x reference is a collapse
    no_boxed_max: float = 0.5              # share of responses without \boxed{} above which format collapsed

    def __post_init__(self) -> None:
        checks = [
            (0 < self.tool_drop < 1, "tool_drop must be in (0, 1): the share of the peak that must be lost"),
            (self.tool_min_peak > 0, "tool_min_peak must be > 0 (a peak of 0 would make any value a collapse)"),
            (self.grad_spike_factor > 1, "grad_spike_factor must be > 1 (a factor over the running median)"),
            (0 < self.entropy_fraction < 1, "entropy_fraction must be in (0, 1): a fraction of the reference entropy"),
            (0 <= self.no_boxed_max < 1, "no_boxed_max must be in [0, 1): a share of responses"),
        ]
        checks += [(isinstance(v, int) and v >= 1, f"{k} must be an integer >= 1, got {v!r}")
                   for k, v in (("tool_window", self.tool_window), ("grad_window", self.grad_window),
                                ("grad_warmup", self.grad_warmup), ("entropy_reference_steps", self.entropy_reference_steps))]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"HealthConfig: {message}")
        if self.grad_warmup > self.grad_window:
            raise ValueError(f"HealthConfig: grad_warmup ({self.grad_warmup}) must be <= grad_window ({self.grad_window}): "
                             "the median is taken over at most grad_window values")


@dataclasses.dataclass(frozen=True)
class Alarm:
    name: str                   # one of ALARM_NAMES
    step: int
    message: str                # one line a person can act on
    value: float | None         # the observed value (None: not a finite number)
    reference: float | None     # what it was compared with (peak, median, reference entropy, threshold)
    new: bool = True            # False while the same alarm already held at the previous update

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _number(row: Mapping, key: str) -> float | None:
    """The row's value for `key` as a float; None when absent, null or not a number."""
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class HealthMonitor:
    """Running state over a run's metrics rows; `update` once per step, in step order."""

    def __init__(self, config: HealthConfig | None = None) -> None:
        self.config = config or HealthConfig()
        c = self.config
        self.steps = 0
        self.tool_windows = {k: deque(maxlen=c.tool_window) for k in TOOL_METRICS}
        self.tool_peaks: dict[str, float | None] = {k: None for k in TOOL_METRICS}
        self.grad_norms: deque[float] = deque(maxlen=c.grad_window)
        self.grad_norms_seen = 0
        self.entropy_early: list[float] = []
        self.active: set[str] = set()
        # per alarm: {"steps": how many updates it held, "first": Alarm dict, "last_step": int}
        self.history: dict[str, dict] = {}

    @property
    def entropy_reference(self) -> float | None:
        if len(self.entropy_early) < self.config.entropy_reference_steps:
            return None
        return sum(self.entropy_early) / len(self.entropy_early)

    # -- one step -------------------------------------------------------------------------------
    def update(self, step: int, row: Mapping) -> list[Alarm]:
        """Feed one step's metrics; returns the alarms that hold at this step (`new` marks a fresh one)."""
        self.steps += 1
        found = [a for a in (self._tool_collapse(step, row), self._grad_norm_spike(step, row),
                             self._entropy_collapse(step, row), self._format_collapse(step, row)) if a]
        alarms = [dataclasses.replace(a, new=a.name not in self.active) for a in found]
        self.active = {a.name for a in alarms}
        for a in alarms:
            record = self.history.setdefault(a.name, {"steps": 0, "first": a.to_dict()})
            record["steps"] += 1
            record["last_step"] = step
        return alarms

    def alarm_metrics(self) -> dict[str, int]:
        """``health/alarm_<name>``: 1 for each alarm that held at the last update, else 0 (every name)."""
        return {f"health/alarm_{name}": int(name in self.active) for name in ALARM_NAMES}

    def _tool_collapse(self, step: int, row: Mapping) -> Alarm | None:
        c, worst = self.config, None
        for key in TOOL_METRICS:
            value = _finite_or_none(_number(row, key))
            if value is None:
                continue
            window = self.tool_windows[key]
            window.append(value)
            if len(window) < c.tool_window:  # a single early step is too noisy to set a peak
                continue
            mean = sum(window) / len(window)
            peak = max(mean, self.tool_peaks[key] or mean)
            self.tool_peaks[key] = peak
            if peak >= c.tool_min_peak and mean <= (1 - c.tool_drop) * peak:
                drop = 1 - mean / peak
                if worst is None or drop > worst[0]:
                    worst = (drop, key, mean, peak)
        if worst is None:
            return None
        drop, key, mean, peak = worst
        return Alarm("tool_collapse", step, f"{key} fell to {mean:.3g} (mean of the last {c.tool_window} steps), "
                     f"{100 * drop:.0f}% below its peak {peak:.3g}: the policy is giving up the interpreter",
                     mean, peak)

    def _grad_norm_spike(self, step: int, row: Mapping) -> Alarm | None:
        value = _number(row, "grad_norm")
        if value is None:
            return None
        c = self.config
        median = statistics.median(self.grad_norms) if self.grad_norms else None
        if not math.isfinite(value):  # never enters the window: it would poison the median
            return Alarm("grad_norm_spike", step, f"grad_norm is {value}: the update is numerically broken", None, median)
        alarm = None
        if self.grad_norms_seen >= c.grad_warmup and median and value > c.grad_spike_factor * median:
            alarm = Alarm("grad_norm_spike", step, f"grad_norm {value:.3g} is {value / median:.1f}x the median "
                          f"{median:.3g} of the last {len(self.grad_norms)} steps", value, median)
        self.grad_norms.append(value)
        self.grad_norms_seen += 1
        return alarm

    def _entropy_collapse(self, step: int, row: Mapping) -> Alarm | None:
        value = _finite_or_none(_number(row, "entropy"))
        if value is None:
            return None
        reference = self.entropy_reference
        if reference is None:
            self.entropy_early.append(value)
            return None
        if value < self.config.entropy_fraction * reference:
            return Alarm("entropy_collapse", step, f"entropy {value:.3g} is below {self.config.entropy_fraction:g} x its "
                         f"early reference {reference:.3g}: sampling has become nearly deterministic", value, reference)
        return None

    def _format_collapse(self, step: int, row: Mapping) -> Alarm | None:
        value = _finite_or_none(_number(row, "health/no_boxed_ratio"))
        limit = self.config.no_boxed_max
        if value is None or value <= limit:
            return None
        return Alarm("format_collapse", step, f"{100 * value:.0f}% of responses have no \\boxed{{}} answer (alarm above "
                     f"{100 * limit:.0f}%): they all get the lowest reward and GRPO learns little", value, limit)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything `update` depends on, as plain JSON types."""
        return {
            "version": STATE_VERSION,
            "steps": self.steps,
            "tool_windows": {k: list(w) for k, w in self.tool_windows.items()},
            "tool_peaks": dict(self.tool_peaks),
            "grad_norms": list(self.grad_norms),
            "grad_norms_seen": self.grad_norms_seen,
            "entropy_early": list(self.entropy_early),
            "active": sorted(self.active),
            "history": {k: {**v, "first": dict(v["first"])} for k, v in self.history.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore `state_dict()` output; windows are cut to this config's sizes."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"health monitor state has version {state.get('version')!r}, expected {STATE_VERSION}")
        c = self.config
        self.steps = int(state["steps"])
        self.tool_windows = {k: deque(state["tool_windows"].get(k, []), maxlen=c.tool_window) for k in TOOL_METRICS}
        self.tool_peaks = {k: state["tool_peaks"].get(k) for k in TOOL_METRICS}
        self.grad_norms = deque(state["grad_norms"], maxlen=c.grad_window)
        self.grad_norms_seen = int(state["grad_norms_seen"])
        self.entropy_early = list(state["entropy_early"])[: c.entropy_reference_steps]
        self.active = set(state["active"])
        self.history = {k: {**v, "first": dict(v["first"])} for k, v in state["history"].items()}

    # -- report ---------------------------------------------------------------------------------
    def summary_lines(self) -> list[str]:
        """A few lines for the run's README.txt: which alarms fired, first when, how long."""
        if not self.history:
            return [f"health: no alarms in {self.steps} step(s) (definitions: torl/metrics/METRICS.md, Health metrics)"]
        lines = [f"health: {len(self.history)} alarm(s) in {self.steps} step(s) (definitions: torl/metrics/METRICS.md, Health metrics)"]
        for name in ALARM_NAMES:
            if name in self.history:
                record = self.history[name]
                still = ", still active" if name in self.active else ""
                lines.append(f"- {name}: held at {record['steps']} step(s), first at step {record['first']['step']} "
                             f"(last {record['last_step']}{still}): {record['first']['message']}")
        return lines
