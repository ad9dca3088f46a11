"""The refactor into a Pruner object changed no behaviour: short seeded runs (every plan source, both scorers, the
hard phase, regression) give the plans and numbers recorded from the code before it (behaviour_reference.py)."""

import pytest

from tests.behaviour_reference import CASES, make_inputs, run_case, this_cpu_reference


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("behaviour"))


def assert_same(got: dict, want: dict) -> None:
    assert got["kept_bins"] == want["kept_bins"] and got["num_bins"] == want["num_bins"]
    assert got["best"]["step"] == want["best"]["step"]
    for part in ("best", "dev"):
        assert got[part] == pytest.approx(want[part], rel=1e-6), part
    assert [r["step"] for r in got["log"]] == [r["step"] for r in want["log"]]
    for mine, theirs in zip(got["log"], want["log"]):
        assert mine == pytest.approx(theirs, rel=1e-4, abs=1e-6), mine["step"]


@pytest.mark.parametrize("name", list(CASES))
def test_seeded_run_matches_the_code_before_the_refactor(name, inputs, tmp_path):
    want = this_cpu_reference()[name]  # a seeded run's floats (hence its plan) differ between CPUs: one per model
    teacher, data = inputs
    assert_same(run_case(name, teacher, data, tmp_path), want)
