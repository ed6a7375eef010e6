"""``threads`` (sslkit/runtime/threads.py): given, torch's default, or ``auto`` from the idle cores."""

from __future__ import annotations

import os

import pytest
import torch

from sslkit.runtime.threads import apply, busy_cores, cores, decide


def test_explicit_and_default_are_kept():
    assert decide(3, 2).threads == 3 and decide(3, 2).reason == "set in the config"
    assert decide(None, 8).threads is None  # torch's default is left alone


@pytest.mark.parametrize("n_cores, busy, expected", [
    (2, 0.0, 2),    # idle machine: every core
    (2, 0.4, 2),    # 1.6 idle cores round to 2
    (2, 0.6, 1),    # 1.4 idle round to 1
    (2, 1.0, 1),
    (2, 4.5, 1),    # overloaded: never below one
    (16, 3.2, 13),  # 12.8 idle
    (16, 0.0, 16),
    (4, -0.2, 4),   # a measurement a little below zero: never above the cores
])
def test_auto_takes_the_idle_cores(n_cores, busy, expected):
    choice = decide("auto", n_cores, busy, "test")
    assert choice.threads == expected
    assert choice.reason.startswith(f"auto: {busy:.1f} of {n_cores} cores busy")


def test_auto_needs_a_measurement():
    with pytest.raises(ValueError):
        decide("auto", 2)


def test_busy_cores_measures_this_machine():
    busy, how = busy_cores(window=0.1)
    if os.path.exists("/proc/stat"):
        assert how == "0.1 s of /proc/stat" and 0 <= busy <= os.cpu_count()
    else:
        assert how == "the 1-minute load average" and busy >= 0


def test_apply_sets_torch_threads():
    old = torch.get_num_threads()
    try:
        assert apply(1).threads == 1 and torch.get_num_threads() == 1
        choice = apply("auto")
        assert 1 <= choice.threads <= cores() and torch.get_num_threads() == choice.threads
        torch.set_num_threads(1)
        assert apply(None).threads is None and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
