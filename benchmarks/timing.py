"""Measuring for the benchmark sections: repeated timings of variants run side by side.

Every figure is a throughput or a ratio measured in one run: :func:`interleave` runs each variant
once per repeat and rotates the order, so drifts in machine load hit all of them alike;
:class:`Series` keeps the seconds of every measurement and the load when each was taken, and
:meth:`Series.record` reports min, median and the ratio to a reference variant.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable

import torch

from sslkit.runtime.threads import cores


def context() -> dict:
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cpus_usable": cores(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class Series:
    """Seconds of repeated measurements of one variant, plus the load when each was taken."""

    def __init__(self, name: str, work: float, unit: str = "images", **info) -> None:
        self.name, self.work, self.unit, self.info = name, work, unit, info
        self.seconds: list[float] = []
        self.loads: list[float] = []
        self.error: str | None = None

    def add(self, seconds: float | list[float]) -> None:
        """One measurement, or a list of them (the steps of one run)."""
        self.seconds += seconds if isinstance(seconds, list) else [seconds]
        self.loads.append(round(os.getloadavg()[0], 2))

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def best(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    def record(self, ratio_to: "Series | None" = None, ratio_name: str = "ratio") -> dict:
        out = {"name": self.name, **self.info, "repeats": len(self.seconds), "runs": len(self.loads),
               "seconds": [round(s, 6) for s in self.seconds],
               "seconds_min": self.best, "seconds_median": self.median}
        if self.work:
            out["unit"] = f"{self.unit}/s"
            out["throughput_median"] = self.work / self.median if self.seconds else None
            out["throughput_best"] = self.work / self.best if self.seconds else None
        if ratio_to is not None and self.seconds and ratio_to.seconds:
            if self.work:  # throughput ratio: > 1 is faster than the reference
                out[ratio_name] = (self.work / self.median) / (ratio_to.work / ratio_to.median)
                out[ratio_name + "_best"] = (self.work / self.best) / (ratio_to.work / ratio_to.best)
            else:  # time ratio: > 1 is slower than the reference
                out[ratio_name] = self.median / ratio_to.median
                out[ratio_name + "_best"] = self.best / ratio_to.best
            out["ratio_to"] = ratio_to.name
        out["context"] = {**context(), "loadavg_1m_at_repeats": self.loads}
        if self.error:
            out["error"] = self.error
        return out


def interleave(series: list[Series], runners: list[Callable[[], float]], repeats: int) -> None:
    """Run every variant once per repeat, rotating the order so drifts in machine load hit all
    of them alike."""
    n = len(series)
    for r in range(repeats):
        for i in range(n):
            j = (i + r) % n
            if series[j].error:
                continue
            try:
                series[j].add(runners[j]())
            except Exception as err:  # one variant failing (OOM, no compiler) must not end the bench
                series[j].error = error_line(err)



def error_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def timer(fn: Callable[[], object], sync: Callable[[], None]) -> Callable[[], float]:
    """``fn`` wrapped to return its wall seconds, the device synchronised before and after."""
    def run() -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0
    return run


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> int:
    """The resident size now, after resetting the process's peak to it (Linux: ``clear_refs``
    5), so that the peak after the step is the step's alone and not the data loading's; where
    the reset is not allowed, the lifetime peak (``getrusage``), which can only overstate the base."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    try:
        return _status_bytes("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
