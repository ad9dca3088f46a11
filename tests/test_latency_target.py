"""benchmarks/latency_target.py's bookkeeping: FLOPs twins at several targets per setting stay apart, and the
equal-latency pair is the twin whose measured speed-up is closest to the latency runs' (not the first trained)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "latency_target.py"


@pytest.fixture(scope="module")
def lt():
    spec = importlib.util.spec_from_file_location("latency_target", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(constraint, seed, metric, speedup, flops=None):
    row = {"task": "stsb", "cpu": "cpu", "backend": "pytorch", "batch_size": 32, "target_speedup": 2.0}
    row |= {"constraint": constraint, "seed": seed, "metric": metric, "measured_speedup": speedup}
    return row | ({"flops_target": flops} if flops is not None else {})


def test_twins_at_two_flops_targets_have_their_own_folders_and_keys(lt):
    a = lt.run_name("stsb", "flops", "pytorch", 32, "2x", 57, 2.836)
    b = lt.run_name("stsb", "flops", "pytorch", 32, "2x", 57, 2.6)
    assert a == "stsb-flops2.836x-pytorch-b32-2x-s57" and b == "stsb-flops2.6x-pytorch-b32-2x-s57"
    assert lt.run_name("stsb", "latency", "pytorch", 32, "2x", 57, None) == "stsb-latency-pytorch-b32-2x-s57"
    assert lt._key(_run("flops", 57, 70.0, 2.5, 2.836)) != lt._key(_run("flops", 57, 72.0, 2.3, 2.6))


def test_the_pair_is_the_twin_of_closest_measured_speed_and_says_whether_it_is_equal(lt):
    runs = [_run("latency", s, m, v) for s, m, v in ((57, 76.0, 2.30), (58, 75.0, 2.32))]
    runs += [_run("flops", s, m, v, 2.836) for s, m, v in ((57, 70.0, 2.50), (58, 69.0, 2.54))]
    runs += [_run("flops", s, m, v, 2.6) for s, m, v in ((57, 73.0, 2.28), (58, 74.0, 2.36))]
    summary = lt.summarise(runs)
    assert {(r["constraint"], r.get("flops_target")) for r in summary} == {
        ("latency", None),
        ("flops", 2.836),
        ("flops", 2.6),
    }
    (pair,) = lt.equal_latency_pairs(summary)
    assert pair["twin_flops_target"] == 2.6
    assert pair["metric_gain"] == pytest.approx(75.5 - 73.5)
    assert pair["speed_ratio"] == pytest.approx(2.31 / 2.32) and pair["equal_speed"]

    only_fast_twin = [r for r in summary if r.get("flops_target") != 2.6]
    (pair,) = lt.equal_latency_pairs(only_fast_twin)
    assert pair["twin_flops_target"] == 2.836 and not pair["equal_speed"]  # 2.31 vs 2.52: 8% apart
