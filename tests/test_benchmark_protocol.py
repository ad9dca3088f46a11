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


def test_frontier_times_all_rows_together_and_gives_each_row_its_own_time(monkeypatch):
    """`toprune frontier` times its rows at the end, interleaved; each row must get its own runner's time at each
    batch size, also when two rows share a label (two seeds of one kind and target), and the paper's padded
    reference is timed with them."""
    from types import SimpleNamespace

    from toprune import frontier as frontier_module
    from toprune.frontier import Frontier

    clock, calls = FakeClock(), []
    monkeypatch.setattr(benchmark, "time", clock)

    def costs(name, ms_per_example):  # a batch of B examples costs B * ms_per_example
        def run(batch):
            calls.append(name)
            clock.now += batch["input_ids"].shape[0] * ms_per_example / 1000.0

        return run

    frontier = Frontier.__new__(Frontier)
    frontier.args = SimpleNamespace(batch_sizes=[1, 4], repeats=3, padded_length=8)
    frontier.served, frontier.paper_reference = [], {}
    frontier.tokenizer, frontier.texts = None, (["a"], None)
    frontier.batches = lambda bs: [{"input_ids": torch.zeros(bs, 3, dtype=torch.long)}]
    monkeypatch.setattr(frontier_module, "padded_batches", lambda tok, a, b, bs, n: [{"input_ids": torch.zeros(bs, n)}])
    frontier.paper_runner = ("padded", costs("padded", 7.0))
    for name, ms in (("slow", 12.0), ("fast", 1.0), ("slow twin", 5.0)):  # the twin shares the first's label
        frontier.add({"model": "top", "target": "2x", "name": name}, "onnxruntime", False, "f32", 0.0, costs(name, ms))
    assert all("ms_b1" not in row for row in frontier.rows)  # nothing is timed while rows are added
    frontier.time_rows()
    for bs in (1, 4):
        times = {row["name"]: row[f"ms_b{bs}"] for row in frontier.rows}
        assert times == pytest.approx({"slow": 12.0 * bs, "fast": 1.0 * bs, "slow twin": 5.0 * bs})
        assert frontier.paper_reference[f"ms_b{bs}"] == pytest.approx(7.0 * bs)
    rows_b1 = [c for c in calls[: calls.index("padded")] if c != "padded"][3:]  # after one warm-up call each
    assert rows_b1[:3] != ["slow"] * 3 and set(rows_b1[:3]) == {"slow", "fast", "slow twin"}  # interleaved
