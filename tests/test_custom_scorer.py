"""An experiment's own token scorer: one Scorer subclass registered by name, named by the plan's ScoringSpec, and the
runtime ranks tokens by it (inference and training paths), as a registered constraint judges a run."""

import copy

import pytest
import torch

import toprune
from toprune import PruningPlan, ScoringSpec, apply_pruning
from toprune.plan import kept_count
from toprune.runtime import SoftMasks
from toprune.strategies import REGISTRY, QuestionScorer, Scorer
from toprune.train import prepare_data

from .conftest import random_batch, tiny_bert_with_tokenizer, tiny_model, write_small_glue

LENGTHS = [9, 3, 17, 1, 12]
BINS = 10


class LastFirst(Scorer):
    """Ranks by original position, the last token first: nothing attention would ever choose."""

    kind = "last_first"
    seen: list = []

    def token_scores(self, view):
        n = view.probs.shape[-1]
        assert view.positions.shape == view.valid.shape == view.hidden.shape[:2] == (view.probs.shape[0], n)
        self.seen.append(view.layer)
        return view.positions.to(view.probs.dtype)


@pytest.fixture
def last_first(monkeypatch):
    monkeypatch.setitem(REGISTRY["scorer"], LastFirst.kind, LastFirst)
    monkeypatch.setattr(LastFirst, "seen", [])
    return LastFirst


def _plan(kind: str) -> PruningPlan:
    return PruningPlan.from_keep_ratios(4, {2: 0.5}, num_bins=BINS, scoring=ScoringSpec(kind))


def _survivors(model, batch) -> list[set[int]]:
    """Original positions entering layer 2, per example (the gather path)."""
    with torch.no_grad():
        model(**batch)
    entering = toprune.pruning_state(model).last.positions[2]
    return [set(row[row >= 0].tolist()) for row in entering]


def _last_ones(length: int, plan: PruningPlan) -> set[int]:
    keep = kept_count(plan.kept_bins[2], length - 1)
    return {0, *range(length - keep, length)}


def test_a_registered_scorer_decides_which_tokens_survive(last_first):
    model = tiny_model()
    plan = _plan("last_first")
    state = apply_pruning(model, plan)
    assert isinstance(state.scorer, LastFirst)
    state.record = True
    batch = random_batch(LENGTHS)
    want = [_last_ones(length, plan) for length in LENGTHS]
    assert _survivors(model, batch) == want  # padded batch: the masked path
    single = {k: v[2:3, : LENGTHS[2]] for k, v in batch.items()}
    assert _survivors(model, single) == [want[2]]  # no padding: the fast path
    assert last_first.seen and set(last_first.seen) == {1}  # layer 1's attention decides who enters layer 2
    state.set_plan(_plan("attention"))
    assert state.scorer is None and _survivors(model, batch) != want  # attention keeps other tokens

    # the training (soft) path ranks by it too: binary masks keep exactly the same tokens
    state.set_plan(plan)
    state.soft_masks = SoftMasks([2], torch.tensor([plan.kept_bins[2]], dtype=torch.float), torch.ones(1))
    with torch.no_grad():
        model(**batch)
    keep = state.last.keep[2]
    assert [set(torch.nonzero(row > 0).flatten().tolist()) for row in keep] == want


def test_the_plan_names_a_registered_scorer_and_refuses_an_unknown_one(tmp_path, last_first):
    plan = _plan("last_first")
    plan.save(tmp_path)
    assert PruningPlan.load(tmp_path).scoring == ScoringSpec("last_first")
    with pytest.raises(toprune.ToPruneError, match="unknown scorer 'nope'; choose one of attention, .*last_first"):
        ScoringSpec("nope")


def test_a_registered_question_scorer_reads_the_question_rows(monkeypatch):
    """A subclass of the question scorer gets its rows (``by_question``); returning the library's score over them
    gives the built-in question scorer's output exactly, and not the all-rows one."""

    class SameAsQuestion(QuestionScorer):
        kind = "same_as_question"

    monkeypatch.setitem(REGISTRY["scorer"], SameAsQuestion.kind, SameAsQuestion)
    model = tiny_model()
    batch = random_batch(LENGTHS, seed=3)
    segments = torch.zeros_like(batch["input_ids"])
    for b, length in enumerate(LENGTHS):
        segments[b, max(2, length // 3) : length] = 1
    batch["token_type_ids"] = segments
    outputs = {}
    for kind in ("question", "same_as_question", "attention"):
        apply_pruning(model, _plan(kind))
        with torch.no_grad():
            outputs[kind] = model(**batch).logits
    assert torch.equal(outputs["question"], outputs["same_as_question"])
    assert not torch.equal(outputs["question"], outputs["attention"])


def test_the_pruner_builds_a_registered_scorer_by_name(tmp_path, last_first):
    data_dir = write_small_glue(tmp_path / "data", train_rows=40, dev_rows=10)
    teacher, tokenizer = tiny_bert_with_tokenizer()
    data = prepare_data(tokenizer, "mrpc", data_dir / "glue", 64, seed=57)
    config = toprune.PruneConfig(task="mrpc", scorer="last_first", max_length=64, batch_size=8, max_steps=1)
    pruner = toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, config, log=lambda *_: None)
    assert isinstance(pruner.state.scorer, LastFirst) and isinstance(pruner.teacher_state.scorer, LastFirst)
    batch = next(iter(toprune.train.make_loader(data.train, tokenizer, 8, shuffle=False)))
    pruner.train_step(batch)  # the soft path: the scorer ranks the student's tokens at every pruning layer
    assert set(pruner.layers) - {1 + layer for layer in last_first.seen} == set()
