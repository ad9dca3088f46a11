"""The latency protocol: rows compared in one table are timed in interleaved passes, each reported as its median
(a fake clock: the arithmetic is checked, not this machine's timings)."""

import pytest
import torch

import toprune.benchmark as benchmark
from toprune.benchmark import time_batches, time_interleaved


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def runner(clock, calls, key, seconds_per_call):
    def run(batch):
        calls.append(key)
        clock.now += seconds_per_call.pop(0) if isinstance(seconds_per_call, list) else seconds_per_call

    return run


def test_passes_of_the_rows_are_interleaved_in_a_rotating_order_and_timed_per_batch(monkeypatch):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(benchmark, "time", clock)
    batches = [{"input_ids": torch.zeros(4, 3)}] * 2
    # b: a slow spell (10 ms a batch) in its second pass; otherwise 4 ms; a: always 1 ms
    slow = [0.004] * 2 + [0.004] * 2 + [0.010] * 2 + [0.004] * 2
    rows = {"a": ("A", runner(clock, calls, "a", 0.001)), "b": ("B", runner(clock, calls, "b", slow))}
    timings = time_interleaved(rows, batches, repeats=3)
    passes = calls[4:][::2]  # after one warm-up pass each (2 batches), one entry per timed pass
    assert calls[:4] == ["a", "a", "b", "b"] and passes == ["a", "b", "b", "a", "a", "b"]
    assert timings["a"].name == "A" and timings["a"].batch_size == 4 and timings["a"].repeats == 3
    assert timings["a"].ms_median == pytest.approx(1.0)  # ms per batch, not per pass
    assert timings["b"].ms_median == pytest.approx(4.0)  # the median drops the slow spell
    assert (timings["b"].ms_min, timings["b"].ms_max) == pytest.approx((4.0, 10.0))


def test_one_row_alone_is_the_same_protocol(monkeypatch):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(benchmark, "time", clock)
    timing = time_batches(runner(clock, calls, "d", 0.002), [{"input_ids": torch.zeros(1, 5)}], "dense", repeats=2)
    assert timing.name == "dense" and timing.batches == 1 and timing.ms_median == pytest.approx(2.0) and len(calls) == 3
