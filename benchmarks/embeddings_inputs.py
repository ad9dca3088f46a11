"""The inputs of `embeddings_bench.py`: the SQuAD corpus and held-out questions, the STS-B pairs, the timed order,
and NNCF's calibration texts (training articles only)."""

from __future__ import annotations

import numpy as np

CALIBRATION_TEXTS = 320  # NNCF's OpenVINO INT8: 20 batches of 16 (section 22's rows were calibrated so)


class Inputs:
    """The corpus, the held-out questions and the STS-B pairs (cut by the --max-* options for a smoke test)."""

    def __init__(self, args, tokenizer) -> None:
        from toprune.embedding_eval import retrieval_task, stsb_dev

        paragraphs, questions, gold, held = retrieval_task(args.squad_file)
        self.all_lengths = [
            len(x) for x in tokenizer(paragraphs, truncation=True, max_length=args.max_length)["input_ids"]
        ]
        if args.max_queries:
            questions, gold = questions[: args.max_queries], gold[: args.max_queries]
        if args.max_passages and args.max_passages < len(paragraphs):  # the gold paragraphs, then others in order
            keep = list(dict.fromkeys([*gold.tolist(), *range(len(paragraphs))]))[: max(args.max_passages, 1)]
            where = {old: new for new, old in enumerate(keep)}
            questions = [q for q, g in zip(questions, gold) if g in where]
            gold = np.array([where[g] for g in gold if g in where])
            paragraphs = [paragraphs[i] for i in keep]
        self.paragraphs, self.questions, self.gold, self.heldout_articles = paragraphs, questions, gold, held
        lengths = [len(x) for x in tokenizer(paragraphs, truncation=True, max_length=args.max_length)["input_ids"]]
        order = sorted(range(len(paragraphs)), key=lambda i: -lengths[i]) if args.order == "length" else None
        self.timed = [paragraphs[i] for i in order] if order else list(paragraphs)  # longest first, as ST's encode
        if args.speed_passages and args.speed_passages < len(self.timed):  # evenly spaced: the same length spread
            step = len(self.timed) / args.speed_passages
            self.timed = [self.timed[int(i * step)] for i in range(args.speed_passages)]
        self.dense_queries = None  # the dense PyTorch model's question embeddings (set by main)
        self.stsb_a, self.stsb_b, self.stsb_gold = stsb_dev(args.glue_dir)
        if args.max_pairs:
            self.stsb_a, self.stsb_b = self.stsb_a[: args.max_pairs], self.stsb_b[: args.max_pairs]
            self.stsb_gold = self.stsb_gold[: args.max_pairs]

    def texts(self) -> dict:
        return {
            "passages": self.paragraphs,
            "queries": self.questions,
            "stsb_a": self.stsb_a,
            "stsb_b": self.stsb_b,
            "timed": self.timed,
        }

    def accuracy(self, arrays: dict) -> dict:
        """Retrieval and STS-B from the row's embeddings of passages, queries, stsb_a, stsb_b."""
        from toprune.embedding_eval import retrieval_metrics, spearman_of

        out = retrieval_metrics(arrays["queries"], arrays["passages"], self.gold)
        out["stsb_spearman"] = spearman_of(arrays["stsb_a"], arrays["stsb_b"], self.stsb_gold)
        if self.dense_queries is not None:  # the asymmetric use: the corpus encoded by this row, the queries dense
            asym = retrieval_metrics(self.dense_queries, arrays["passages"], self.gold)
            out.update({f"{k}_dense_queries": v for k, v in asym.items()})
        return out

    def encode_all(self, encode) -> dict:
        texts = self.texts()
        return {name: encode(texts[name]) for name in ("passages", "queries", "stsb_a", "stsb_b")}


def calibration_texts(squad_file) -> list[str]:
    """NNCF's calibration inputs: a few hundred texts of the SQuAD file's *training* articles (paragraphs and
    questions alike, evenly spaced in the list), never the held-out articles' questions that are scored; their
    paragraphs are in the scored corpus as distractors, as they are in the embedding model's training text. A
    calibrated graph is kept in ``--workdir`` and reused: delete it after changing the file."""
    from toprune.embedding_eval import squad_training_texts

    texts = squad_training_texts(squad_file)
    step = max(1, len(texts) // CALIBRATION_TEXTS)
    return texts[::step][:CALIBRATION_TEXTS]
