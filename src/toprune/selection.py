"""Honest model selection: checkpoints and hyper-parameters are chosen on a held-out slice of the *training* data,
and the dev set is evaluated once, on the kept model (the authors selected on the dev set they report,
METHOD.md §8.5; ``select_on="dev"`` keeps that behaviour for comparisons with the paper).

The slice is fixed for a task: it depends on the training file and these constants only, never on the run's seed,
so a teacher and every pruning run of every seed select on the same examples, none of which they trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ToPruneError

SELECT_ON = ("heldout", "dev")
HELDOUT_FRACTION = 0.1  # share of the training examples held out for selection
HELDOUT_MAX = 2000  # large training sets need no more to rank checkpoints, and evaluation stays cheap
HELDOUT_SEED = 0  # fixed on purpose: the same slice for every run and seed of a task


@dataclass(frozen=True)
class Selection:
    """Where checkpoints are chosen, stated in every output folder."""

    on: str  # "heldout" or "dev"
    examples: int  # size of the selection set
    train_examples: int  # training examples left after the slice was taken (before any subsetting)
    paragraphs: int | None = None  # QA: the slice is whole paragraphs (this many), never a trained context

    def describe(self) -> str:
        if self.on == "dev":
            return f"selected on dev ({self.examples} examples; the paper's convention: dev is not held out)"
        unit = "training examples" if self.paragraphs is None else f"training questions ({self.paragraphs} paragraphs)"
        return (
            f"selected on a held-out {self.examples} of {self.examples + self.train_examples} {unit} "
            f"(fraction {HELDOUT_FRACTION:g}, at most {HELDOUT_MAX}, seed {HELDOUT_SEED}); dev evaluated once"
        )

    def as_dict(self) -> dict:
        return {
            "on": self.on,
            "examples": self.examples,
            "train_examples": self.train_examples,
            "fraction": HELDOUT_FRACTION,
            "max": HELDOUT_MAX,
            "seed": HELDOUT_SEED,
            **({} if self.paragraphs is None else {"paragraphs": self.paragraphs}),
        }


def heldout_size(train_size: int) -> int:
    return min(HELDOUT_MAX, max(1, round(HELDOUT_FRACTION * train_size)))


def split_heldout(train):
    """(train without the slice, the slice) of a ``datasets.Dataset``; the slice is a seeded random sample."""
    n = len(train)
    if n < 20:
        raise ToPruneError(
            f"only {n} training examples: too few to hold out a selection slice; pass "
            f"--select-on dev to select on the dev set instead"
        )
    split = train.train_test_split(test_size=heldout_size(n), seed=HELDOUT_SEED, shuffle=True)
    return split["train"], split["test"]


def split_heldout_paragraphs(examples: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training questions, held-out questions) of QA examples (dicts with ``article`` and ``context``): whole
    paragraphs, in a seeded order, are held out until the slice has :func:`heldout_size` questions, so no context
    the selection judges was trained on (paragraphs, not articles: the slice spans many topics); one always trains."""
    import random
    from collections import Counter

    sizes = Counter((e["article"], e["context"]) for e in examples)
    paragraphs = sorted(sizes)
    if len(paragraphs) < 2:
        raise ToPruneError(
            f"the QA training data has {len(paragraphs)} paragraph(s): too few to hold out whole paragraphs for "
            f"selection; pass --select-on dev to select on the dev set instead"
        )
    random.Random(HELDOUT_SEED).shuffle(paragraphs)
    wanted, held, count = heldout_size(len(examples)), set(), 0
    for paragraph in paragraphs[:-1]:
        if count >= wanted:
            break
        held.add(paragraph)
        count += sizes[paragraph]
    is_held = [(e["article"], e["context"]) in held for e in examples]
    return [e for e, h in zip(examples, is_held) if not h], [e for e, h in zip(examples, is_held) if h]


def check_select_on(value: str) -> None:
    if value not in SELECT_ON:
        raise ToPruneError(f"select_on must be one of {', '.join(SELECT_ON)}, got {value!r}")
