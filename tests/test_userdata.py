"""The user's own train/validation files: formats, column inference, regression inference, one-line errors."""

from __future__ import annotations

import json

import datasets
import pytest

from toprune.errors import ToPruneError
from toprune.userdata import UserTaskInfo, load_user_data


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    # keep the many tiny files of these tests out of the user's ~/.cache/huggingface
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path, rows):
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def load_error(*args, **kwargs) -> str:
    with pytest.raises(ToPruneError) as info:
        load_user_data(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture()
def good_csv(tmp_path):
    train = write(tmp_path / "train.csv", 'sentence,label\ngreat film,pos\nawful,neg\n"fine, really",pos\n')
    dev = write(tmp_path / "dev.csv", "sentence,label\nnot bad,pos\nboring,neg\n")
    return train, dev


# --- formats -----------------------------------------------------------------------------------------------------


def test_csv_single_text_classification(good_csv):
    train, dev, info = load_user_data(*good_csv)
    assert info == UserTaskInfo(("sentence",), "label", ("neg", "pos"))
    assert not info.is_regression
    assert train.column_names == ["text_a", "label"]
    assert train["text_a"] == ["great film", "awful", "fine, really"]  # CSV quoting is honoured
    assert train["label"] == ["pos", "neg", "pos"]
    assert dev["label"] == ["pos", "neg"]
    assert train.features["label"] == datasets.Value("string")


def test_tsv_pair_keeps_quotes_verbatim(tmp_path):
    rows = 'sentence1\tsentence2\tlabel\n"Hi," she said\the said "bye\tentailment\nA\tB "C" D\tneutral\n'
    train = write(tmp_path / "train.tsv", rows)
    dev = write(tmp_path / "dev.tsv", 'sentence1\tsentence2\tlabel\n"quoted"\tplain\tneutral\n')
    tr, dv, info = load_user_data(train, dev)
    assert info.text_columns == ("sentence1", "sentence2")
    assert info.labels == ("entailment", "neutral")
    assert tr.column_names == ["text_a", "text_b", "label"]
    assert tr["text_a"] == ['"Hi," she said', "A"]
    assert tr["text_b"] == ['he said "bye', 'B "C" D']
    assert dv["text_a"] == ['"quoted"']


def test_csv_keeps_null_like_text_and_leading_zeros(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\nnull,007\nNA,1\n")
    tr, _, info = load_user_data(train, train)
    assert tr["text_a"] == ["null", "NA"]
    assert info.labels == ("007", "1")


def test_jsonl_regression_numeric_labels(tmp_path):
    rows = [{"sentence1": f"a{i}", "sentence2": i, "score": i / 4} for i in range(12)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"sentence1": "x", "sentence2": "y", "score": 3}])
    tr, dv, info = load_user_data(train, dev)
    assert info.is_regression and info.labels is None and info.label_column == "score"
    assert tr["text_b"][:2] == ["0", "1"]  # numeric text becomes str
    assert tr["label"][:3] == [0.0, 0.25, 0.5]
    assert dv["label"] == [3.0]
    assert tr.features["label"] == datasets.Value("float64")


def test_json_extension_reads_json_lines(tmp_path):
    train = write_jsonl(tmp_path / "train.json", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    tr, _, info = load_user_data(train, train)
    assert info.labels == ("0", "1")  # integer class ids become label strings
    assert tr["label"] == ["0", "1"]


# --- column inference -----------------------------------------------------------------------------------------------


def test_explicit_columns_override_inference(tmp_path):
    train = write(tmp_path / "train.csv", "sentence,review,label,stars\nx,good,a,5\ny,bad,b,1\n")
    tr, _, info = load_user_data(train, train, text_columns="review", label_column="stars")
    assert info == UserTaskInfo(("review",), "stars", ("1", "5"))
    assert tr["text_a"] == ["good", "bad"]
    assert tr["label"] == ["5", "1"]


def test_explicit_pair_columns(tmp_path):
    train = write(tmp_path / "train.csv", "q,a,y\nwho,me,1\nwhy,because,0\n")
    tr, _, info = load_user_data(train, train, text_columns=["a", "q"], label_column="y")
    assert info.text_columns == ("a", "q")
    assert tr["text_a"] == ["me", "because"] and tr["text_b"] == ["who", "why"]


@pytest.mark.parametrize("label", ["labels", "score", "target"])
def test_label_column_fallbacks(tmp_path, label):
    train = write(tmp_path / "train.csv", f"text,{label}\na,x\nb,y\n")
    assert load_user_data(train, train)[2].label_column == label


def test_label_preferred_over_other_candidates(tmp_path):
    train = write(tmp_path / "train.csv", "text,target,label\na,x,1\nb,y,0\n")
    assert load_user_data(train, train)[2].label_column == "label"


@pytest.mark.parametrize("names", [("question", "sentence"), ("premise", "hypothesis"), ("text_a", "text_b")])
def test_known_pair_layouts(tmp_path, names):
    train = write(tmp_path / "train.csv", f"id,{names[0]},{names[1]},label\n1,a,b,x\n2,c,d,y\n")
    assert load_user_data(train, train)[2].text_columns == names


def test_remaining_string_columns_used_when_unambiguous(tmp_path):
    train = write(tmp_path / "train.csv", "body,label\nhello,x\nworld,y\n")
    assert load_user_data(train, train)[2].text_columns == ("body",)


def test_too_many_candidate_text_columns(tmp_path):
    train = write(tmp_path / "train.csv", "a,b,c,label\n1,2,3,x\n")
    message = load_error(train, train)
    assert "train.csv" in message and "text_columns" in message


def test_no_label_column(tmp_path):
    train = write(tmp_path / "train.csv", "text,y\na,1\n")
    message = load_error(train, train)
    assert "train.csv" in message and "label_column" in message


# --- regression inference ----------------------------------------------------------------------------------------


def test_float_labels_infer_regression(tmp_path):
    body = "".join(f"s{i},{i * 0.37:.2f}\n" for i in range(11))
    train = write(tmp_path / "train.csv", "sentence,label\n" + body)
    tr, _, info = load_user_data(train, train)
    assert info.is_regression
    assert tr["label"][1] == pytest.approx(0.37)


def test_few_numeric_labels_stay_classification(tmp_path):
    body = "".join(f"s{i},{i % 10}\n" for i in range(30))  # 10 distinct values: class ids
    train = write(tmp_path / "train.csv", "sentence,label\n" + body)
    assert load_user_data(train, train)[2].labels == tuple(str(i) for i in range(10))


def test_regression_flag_overrides_inference(tmp_path, good_csv):
    train = write(tmp_path / "num.csv", "sentence,label\na,1\nb,2.5\n")
    assert load_user_data(train, train, regression=True)[2].is_regression
    many = write(tmp_path / "many.csv", "sentence,label\n" + "".join(f"s{i},{i}.5\n" for i in range(20)))
    assert load_user_data(many, many, regression=False)[2].labels[0] == "0.5"


# --- one-line errors -------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path, good_csv):
    message = load_error(good_csv[0], tmp_path / "nope.csv")
    assert "nope.csv" in message and "not found" in message


def test_unsupported_extension(tmp_path, good_csv):
    data = write(tmp_path / "train.xlsx", "whatever")
    message = load_error(data, good_csv[1])
    assert "train.xlsx" in message and "unsupported" in message


def test_unreadable_encoding(tmp_path, good_csv):
    data = tmp_path / "train.csv"
    data.write_bytes(b"sentence,label\n\xff\xfe\xfa,x\n")
    assert "train.csv" in load_error(data, good_csv[1])


def test_malformed_json_lines(tmp_path, good_csv):
    data = write(tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n{"text": oops\n')
    message = load_error(data, data)
    assert message.startswith("cannot read") and "train.jsonl" in message and "generating" not in message


@pytest.mark.parametrize("rows", ["a,b,c,d\n", "a,b\nc,d,e\n"])
def test_row_longer_than_header(tmp_path, rows):
    # pandas would otherwise read the extra leading fields of a first long row as an index, silently
    data = write(tmp_path / "train.csv", "sentence,label\n" + rows)
    message = load_error(data, data)
    assert message.startswith("cannot read") and "train.csv" in message and "generating" not in message


def test_row_shorter_than_header(tmp_path):
    data = write(tmp_path / "train.csv", "sentence,label\na,x\nb\n")
    assert "train.csv row 2: empty label" in load_error(data, data)


@pytest.mark.parametrize("content", ["", "sentence,label\n"])
def test_empty_csv(tmp_path, good_csv, content):
    data = write(tmp_path / "train.csv", content)
    message = load_error(data, good_csv[1])
    assert "train.csv" in message and ("empty" in message or "no data rows" in message)


def test_empty_jsonl(tmp_path, good_csv):
    data = write(tmp_path / "dev.jsonl", "\n")
    message = load_error(good_csv[0], data)
    assert "dev.jsonl" in message and "no data rows" in message


def test_missing_given_column(good_csv):
    message = load_error(*good_csv, text_columns=("review",))
    assert "train.csv" in message and "'review'" in message


def test_missing_column_in_validation(tmp_path, good_csv):
    dev = write(tmp_path / "dev.csv", "text,label\nx,pos\n")
    message = load_error(good_csv[0], dev)
    assert "dev.csv" in message and "'sentence'" in message


def test_empty_text_names_row(tmp_path, good_csv):
    train = write(tmp_path / "train.csv", "sentence,label\na,pos\nb,neg\n   ,pos\n")
    assert load_error(train, good_csv[1]).endswith("train.csv row 3: empty text in column 'sentence'")


def test_empty_text_b_in_tsv(tmp_path):
    train = write(tmp_path / "train.tsv", "sentence1\tsentence2\tlabel\na\tb\tx\nc\t\ty\n")
    assert "train.tsv row 2: empty text in column 'sentence2'" in load_error(train, train)


def test_null_text_in_jsonl(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": None, "label": "y"}])
    assert "train.jsonl row 2: empty text" in load_error(train, train)


def test_empty_label_names_row(tmp_path, good_csv):
    dev = write(tmp_path / "dev.csv", "sentence,label\nok,pos\nfine,\n")
    assert "dev.csv row 2: empty label in column 'label'" in load_error(good_csv[0], dev)


def test_unseen_validation_label(tmp_path, good_csv):
    dev = write(tmp_path / "dev.csv", "sentence,label\nok,pos\nmeh,neutral\nbad,neg\n")
    message = load_error(good_csv[0], dev)
    assert "dev.csv row 2" in message and "'neutral'" in message and "train.csv" in message


def test_non_numeric_regression_label(tmp_path):
    train = write(tmp_path / "train.csv", "sentence,score\na,1.5\nb,high\n")
    assert "train.csv row 2: regression label 'high'" in load_error(train, train, regression=True)


def test_non_numeric_validation_label_in_inferred_regression(tmp_path):
    train = write(tmp_path / "train.csv", "sentence,score\n" + "".join(f"s{i},{i / 3:.3f}\n" for i in range(15)))
    dev = write(tmp_path / "dev.csv", "sentence,score\na,0.5\nb,1\nc,n/a\n")
    assert "dev.csv row 3: regression label 'n/a'" in load_error(train, dev)


def test_wrong_number_of_text_columns(good_csv):
    assert "1 or 2" in load_error(*good_csv, text_columns=("a", "b", "c"))
