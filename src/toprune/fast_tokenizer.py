"""A saved fast tokenizer driven through the ``tokenizers`` library alone, for serving without torch.

``transformers.AutoTokenizer`` imports torch whenever torch is installed; serving needs only ``tokenizer.json``.
:class:`FastTokenizer` loads that file (plus the padding settings of ``tokenizer_config.json``) and answers the
few calls serving makes (a batch of texts or pairs, padded/truncated; SQuAD windows with a stride and offsets;
padding of a list of rows) with the same ids, masks, offsets and windows as the transformers fast tokenizer,
which drives the very same ``tokenizers`` object (tests/test_export.py compares the two).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ToPruneError


class Windows(dict):
    """Model inputs of a batch as lists (``input_ids``...), plus ``sequence_ids(i)`` as a BatchEncoding has."""

    def __init__(self, data: dict, encodings: list) -> None:
        super().__init__(data)
        self._encodings = encodings

    def sequence_ids(self, i: int) -> list[int | None]:
        return self._encodings[i].sequence_ids


class FastTokenizer:
    def __init__(self, folder: str | Path, input_names: list[str]) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise ToPruneError(f"no tokenizer.json in {folder}: export the model with a fast tokenizer")
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        settings_file = folder / "tokenizer_config.json"
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        self.pad_token = settings.get("pad_token") or "[PAD]"
        if isinstance(self.pad_token, dict):  # older configs store an AddedToken
            self.pad_token = self.pad_token["content"]
        self.pad_id = self._tokenizer.token_to_id(self.pad_token) or 0
        self.padding_side = settings.get("padding_side", "right")
        self.input_names = input_names

    def _encode(self, texts, pairs, truncation, max_length, stride):
        self._tokenizer.no_truncation()
        if truncation and max_length:
            strategy = truncation if isinstance(truncation, str) else "longest_first"
            self._tokenizer.enable_truncation(max_length, stride=stride, strategy=strategy)
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        return self._tokenizer.encode_batch(inputs)

    def _rows(self, encodings) -> list[dict]:
        names = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        return [
            {name: list(getattr(enc, names[name])) for name in self.input_names if name in names} for enc in encodings
        ]

    def __call__(
        self,
        texts,
        pairs=None,
        padding: bool = False,
        truncation=False,
        max_length: int | None = None,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
        return_offsets_mapping: bool = False,
        return_tensors: str | None = None,
    ):
        encodings = self._encode(texts, pairs, truncation, max_length, stride)
        samples = list(range(len(encodings)))
        if return_overflowing_tokens:  # each input, then its overflow windows, as transformers orders them
            samples = [i for i, enc in enumerate(encodings) for _ in range(1 + len(enc.overflowing))]
            encodings = [e for enc in encodings for e in (enc, *enc.overflowing)]
        rows = self._rows(encodings)
        if padding:
            return self.pad(rows, return_tensors)
        data = {name: [row[name] for row in rows] for name in rows[0]} if rows else {}
        if return_offsets_mapping:
            data["offset_mapping"] = [list(enc.offsets) for enc in encodings]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = samples
        return Windows(data, encodings)

    def pad(self, rows: list[dict], return_tensors: str | None = "np") -> dict:
        """Pad rows of model inputs to the longest (pad id, mask 0, segment 0), as arrays when asked."""
        width = max(len(row["input_ids"]) for row in rows)
        fill = {"input_ids": self.pad_id}
        out = {}
        for name in rows[0]:
            padded = []
            for row in rows:
                extra = [fill.get(name, 0)] * (width - len(row[name]))
                padded.append(extra + list(row[name]) if self.padding_side == "left" else list(row[name]) + extra)
            out[name] = np.array(padded, dtype=np.int64) if return_tensors == "np" else padded
        return out
