"""``threads``: torch's intra-op thread count, given, left to torch, or ``auto`` from the load.

On a 2-core machine shared with other jobs, two intra-op threads ran the default model 4x slower
than one (each OpenMP barrier waits for the thread that lost its core), while on an idle machine
two ran 2.4x faster (docs/benchmarks.md). ``auto`` takes as many threads as cores are left idle
by the other processes at start-up (rounded, at least 1). ``scripts/bench_threads.py`` measures
1 thread, every core and ``auto`` side by side, idle and under load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

AUTO = "auto"


@dataclass
class ThreadsChoice:
    threads: int | None  # None: torch's default, left as it is
    reason: str


def cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a cgroup's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    try:
        fields = open("/proc/stat").readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]), idle


def busy_cores(window: float = 0.5) -> tuple[float, str]:
    """How many cores other processes keep busy now, and how that was measured: the machine's
    non-idle CPU time over ``window`` seconds while this process sleeps (``/proc/stat``), else
    the 1-minute load average. (psutil.cpu_percent reads the same /proc/stat; not worth a
    dependency.) The load average lags a change of load by a minute, so it is the fallback."""
    before = _cpu_times()
    if before is not None:
        time.sleep(window)
        after = _cpu_times()
        total, idle = after[0] - before[0], after[1] - before[1]
        if total > 0:
            share = 1.0 - idle / total
            return share * (os.cpu_count() or 1), f"{window:g} s of /proc/stat"
    return os.getloadavg()[0], "the 1-minute load average"


def decide(requested: int | str | None, n_cores: int, busy: float | None = None,
           measured_by: str = "") -> ThreadsChoice:
    """Threads for ``requested`` (an int: that many; None: torch's default; ``auto``: the idle
    cores ``n_cores - busy`` rounded to the nearest int, between 1 and ``n_cores``)."""
    if requested is None:
        return ThreadsChoice(None, "torch's default (one per core)")
    if str(requested) != AUTO:
        return ThreadsChoice(int(requested), "set in the config")
    if busy is None:
        raise ValueError("threads=auto needs the busy cores")
    idle = n_cores - busy
    n = max(1, min(n_cores, int(idle + 0.5)))
    return ThreadsChoice(n, f"auto: {busy:.1f} of {n_cores} cores busy with other work "
                            f"({measured_by or 'given'}), {max(idle, 0):.1f} idle")


def apply(requested: int | str | None) -> ThreadsChoice:
    """Decide for ``requested`` on this machine and set torch's intra-op threads to the choice."""
    if str(requested) == AUTO:
        busy, how = busy_cores()
        choice = decide(AUTO, cores(), busy, how)
    else:
        choice = decide(requested, cores())
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    return choice
