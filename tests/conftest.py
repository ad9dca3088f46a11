"""Shared fixtures: tiny random encoders of every supported family, and the real MiniLM."""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

import pytest
import torch
import transformers

import toprune
import toprune.profile

# unit tests check the profiler's logic on tiny models, not steady timings: no quarter-second minimum per timing
toprune.profile.MIN_TIMED_SECONDS = 0.0

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

# parallel workers (`pytest -n auto`, pytest-xdist) share the cores: each gets its share of torch and OpenMP threads
# (its CLI subprocesses too), not every core per worker
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    torch.set_num_threads(_THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))

TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, vocab_size=120)
FAMILIES = {
    "bert": lambda: transformers.BertConfig(**TINY, max_position_embeddings=520),
    "roberta": lambda: transformers.RobertaConfig(**TINY, max_position_embeddings=520, pad_token_id=1),
    "electra": lambda: transformers.ElectraConfig(**TINY, embedding_size=16, max_position_embeddings=520),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(**TINY, max_position_embeddings=520, pad_token_id=1),
    "distilbert": lambda: transformers.DistilBertConfig(
        dim=32, n_layers=4, n_heads=4, hidden_dim=64, vocab_size=120, max_position_embeddings=520
    ),
}


def tiny_model(family: str = "bert", head: str = "AutoModelForSequenceClassification", seed: int = 0):
    torch.manual_seed(seed)
    config = FAMILIES[family]()
    config.num_labels = 3
    model = getattr(transformers, head).from_config(config, attn_implementation="sdpa")
    return model.eval()


def random_batch(lengths, vocab=120, seed=0, pad_id=0):
    """Token ids (first token plays CLS) right-padded to the longest length, with the matching mask."""
    gen = torch.Generator().manual_seed(seed)
    n = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), n), generator=gen)
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for b, length in enumerate(lengths):
        mask[b, :length] = 1
    ids = ids.masked_fill(mask == 0, pad_id)
    ids[:, 0] = 2
    return {"input_ids": ids, "attention_mask": mask}


@functools.lru_cache(maxsize=1)
def _minilm():
    return toprune.load_model("minilm", num_labels=2), toprune.load_tokenizer("minilm")


@pytest.fixture()
def minilm():
    """The real pretrained MiniLM-L6-H384 (random classifier head), freshly unpatched for each test."""
    model, tokenizer = _minilm()
    toprune.remove_pruning(model)
    return model, tokenizer


def tiny_bert_with_tokenizer(
    cls: str = "BertForSequenceClassification", num_hidden_layers: int = 4, num_labels: int = 2
):
    """A tiny random BERT with the real MiniLM vocabulary and tokenizer (real text in, runs in seconds)."""
    tokenizer = toprune.load_tokenizer("minilm")
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    return getattr(transformers, cls)(config).eval(), tokenizer


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A tiny random BERT with the real MiniLM vocabulary and tokenizer, so runs take seconds."""
    folder = tmp_path_factory.mktemp("teacher")
    model, tokenizer = tiny_bert_with_tokenizer()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


# CI sets this: there the shared data is expected, and its absence must fail the run instead of going unnoticed
REQUIRE_SHARED_DATA = os.environ.get("TOPRUNE_REQUIRE_SHARED_DATA") == "1"
# TOPRUNE_SMALL_DATA=1 runs the training-path tests on the small data even where the shared data exists
SMALL_DATA = os.environ.get("TOPRUNE_SMALL_DATA") == "1"


def pytest_sessionstart(session):
    if REQUIRE_SHARED_DATA and not DATA_DIR.is_dir():
        raise pytest.UsageError(f"TOPRUNE_REQUIRE_SHARED_DATA=1 but the shared data is missing: {DATA_DIR.resolve()}")


@pytest.fixture()
def real_data_dir():
    """The shared data folder, for tests about the real files themselves (row counts, known rows)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR} (expected ../shared/data beside the repo)")
    return DATA_DIR


_WORDS = (
    "the a cat dog report film market river city bank man woman child court company team engine rain price "
    "quickly slowly sold bought wrote read saw found left moved rose fell said told large small old new red "
    "quiet early late after before during with without under over near far"
).split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 22))).capitalize() + " ."


def write_small_glue(root: Path, train_rows: int = 96, dev_rows: int = 40, seed: int = 0) -> Path:
    """MRPC and STS-B in the GLUE TSV layout (header rows as in the official files), random sentence pairs."""
    rng = random.Random(seed)
    for split, rows in (("train", train_rows), ("dev", dev_rows)):
        mrpc = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        stsb = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        for i in range(rows):
            a, b = _sentence(rng), _sentence(rng)
            mrpc.append(f"{i % 2}\t{i}\t{i + rows}\t{a}\t{b}")
            stsb.append(f"{i}\tmain\tsmall\t2024\t{i:04d}\tnone\tnone\t{a}\t{b}\t{rng.uniform(0, 5):.3f}")
        for folder, lines in (("MRPC", mrpc), ("STS-B", stsb)):
            (root / "glue" / folder).mkdir(parents=True, exist_ok=True)
            (root / "glue" / folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The shared data folder when present, else a small GLUE-layout folder made here: the training path always
    runs (CI, with TOPRUNE_REQUIRE_SHARED_DATA=1, refuses to start without the shared data instead)."""
    if DATA_DIR.is_dir() and not SMALL_DATA:
        return DATA_DIR
    return write_small_glue(tmp_path_factory.mktemp("small-data"))


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Token pruning removes unimportant tokens layer by layer, so later layers run on shorter sequences.",
    "Short.",
    "ToP learns which rank positions to keep under a FLOPs budget set by the user, and distils the ranking of "
    "the final layer of a fine-tuned teacher into the early layers of the student.",
]


@pytest.fixture()
def private_datasets_cache(tmp_path, monkeypatch):
    """A test-private ``datasets`` cache: broken files made by one case never answer another from the cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
