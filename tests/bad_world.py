"""The world of the bad-input tables (tests/test_bad_inputs*.py): a tiny WordPiece tokenizer over the words of
the data, tiny random BERTs saved with it (and broken copies), small CSV/TSV files and GLUE layouts; no shared data,
no downloads."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

import toprune

WORDS = [
    "good",
    "great",
    "fine",
    "fun",
    "nice",
    "bad",
    "awful",
    "dull",
    "poor",
    "sad",
    "the",
    "a",
    "film",
    "movie",
    "plot",
    "was",
    "is",
    "very",
    "not",
    "it",
    "and",
    "who",
    "wrote",
    "report",
    "ada",
    "by",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["a good film", "great fun", "the plot was nice", "very fine movie"]
NEGATIVE = ["a bad film", "awful and dull", "the plot was poor", "very sad movie"]


# --- the world the cases run in (built once) -----------------------------------------------------------------------


def make_tokenizer(folder: Path, vocab: list[str]):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(v + "\n" for v in vocab))
    return transformers.BertTokenizer(vocab=str(folder / "vocab.txt"))


def save_model(folder: Path, tokenizer=None, vocab_size: int | None = None, id2label=None, layers: int = 4):
    config = transformers.BertConfig(
        vocab_size=vocab_size or len(SPECIAL) + len(WORDS),
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=2,
    )
    if id2label:
        config.id2label = dict(enumerate(id2label))
        config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    toprune.save_pruned(model, folder, tokenizer)
    return folder


def csv_rows(rows, header="sentence,label") -> str:
    return header + "\n" + "".join(f"{t},{y}\n" for t, y in rows)


GOOD_ROWS = [(t, 1) for t in POSITIVE] + [(t, 0) for t in NEGATIVE]


@dataclass
class World:
    root: Path
    good: Path  # tiny model + its tokenizer, generic labels
    train: Path
    dev: Path
    glue: Path
    squad: Path

    def file(self, name: str, text: str) -> str:
        path = self.root / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def run_folder(self, name: str) -> Path:
        """A finished earlier run: kept model, checkpoint, log, summary (the user's work)."""
        run = self.root / "runs" / name
        if not run.exists():
            save_model(run / "best", self.tokenizer)
            (run / "checkpoint.pt").write_bytes(b"PK-not-really-a-checkpoint" * 10)
            (run / "metrics.jsonl").write_text(
                json.dumps({"step": 1, "dev_metric": 50.0, "dev_flops_reduction_unpadded": 1.5}) + "\n"
            )
            (run / "summary.json").write_text(json.dumps({"task": "custom", "best": None}) + "\n")
        return run


def build_world(root: Path) -> World:
    """Model folders, data files and GLUE/SQuAD layouts, good and broken (made once per test module)."""
    tokenizer = make_tokenizer(root / "vocab", SPECIAL + WORDS)
    w = World(
        root, save_model(root / "good", tokenizer), root / "train.csv", root / "dev.csv", root / "glue", root / "squad"
    )
    w.tokenizer = tokenizer
    w.train.write_text(csv_rows(GOOD_ROWS * 3))  # enough rows to hold out a selection slice
    w.dev.write_text(csv_rows(GOOD_ROWS[::2]))
    mrpc = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (w.glue / "MRPC").mkdir(parents=True)
    (w.glue / "MRPC" / "dev.tsv").write_text(mrpc + "1\t1\t2\ta good film\tgreat fun\n2\t3\t4\ta bad film\tsad\n")
    (w.glue / "MRPC" / "train.tsv").write_text(mrpc + "1\t1\t2\ta good film\tgreat fun\n")
    (w.glue / "WNLI").mkdir()
    (w.glue / "WNLI" / "dev.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\ta film\ta movie\t1\n1\ta film\tsad\t0\n"
    )
    (w.glue / "STS-B").mkdir()
    (w.glue / "STS-B" / "dev.tsv").write_text("index\tsentence1\tsentence2\tscore\n0\ta film\ta movie\thigh\n")
    # model folder variants
    w.no_tokenizer = save_model(root / "no-tokenizer")
    w.big_tokenizer = save_model(
        root / "big-tokenizer", make_tokenizer(root / "v2", SPECIAL + WORDS + [f"w{i}" for i in range(100)])
    )
    swapped = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # same size, padding at another id
    w.other_tokenizer = save_model(root / "other-tokenizer", make_tokenizer(root / "v3", swapped + WORDS))
    w.named = save_model(root / "named", tokenizer, id2label=["neg", "pos"])
    w.swapped = save_model(root / "swapped", tokenizer, id2label=["pos", "neg"])
    w.two_layers = save_model(root / "two-layers", tokenizer, layers=2)
    base = transformers.BertModel(transformers.BertConfig.from_pretrained(w.good))  # no task head
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    w.base = root / "base"
    pruned = transformers.BertForSequenceClassification.from_pretrained(w.good)
    toprune.apply_pruning(pruned, toprune.PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.5}))
    w.pruned = toprune.save_pruned(pruned, root / "pruned", tokenizer)
    for task in ("sst2", "wnli"):  # finetune's record of the task a model was trained on
        folder = root / f"trained-{task}"
        shutil.copytree(w.good, folder)
        (folder / "toprune_teacher.json").write_text(json.dumps({"task": task, "metric": 50.0}))
        setattr(w, f"trained_{task}", folder)
    w.partial = root / "partial"  # a 4-layer config over 2-layer weights: half the encoder would be random
    shutil.copytree(w.two_layers, w.partial)
    config = json.loads((w.partial / "config.json").read_text())
    (w.partial / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    w.truncated = save_model(root / "truncated", tokenizer)
    weights = w.truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    w.no_config = root / "no-config"
    shutil.copytree(w.good, w.no_config)
    (w.no_config / "config.json").unlink()
    w.bad_config = root / "bad-config"
    shutil.copytree(w.good, w.bad_config)
    (w.bad_config / "config.json").write_text("{not json")
    return w


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def without_progress_bars(err: str) -> str:
    """stderr less the progress bars (Hugging Face's, the test's own model saving): what a user reads."""
    lines = [line.rsplit("\r", 1)[-1] for line in err.splitlines()]
    return "".join(line + "\n" for line in lines if line.strip() and not re.search(r"\|\s*\d+/\d+ \[", line))
