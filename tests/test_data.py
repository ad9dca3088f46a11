"""GLUE loaders on the real files (row counts from the official releases) and on small files in the same layout."""

import pytest

from toprune import ToPruneError
from toprune.data import glue_task, load_glue_split
from toprune.metrics import glue_metrics

OFFICIAL_COUNTS = [
    ("cola", "train", 8551),
    ("cola", "dev", 1043),
    ("sst2", "dev", 872),
    ("mrpc", "train", 3668),
    ("mrpc", "dev", 408),
    ("stsb", "dev", 1500),
    ("rte", "dev", 277),
    ("qnli", "dev", 5463),
]


@pytest.mark.parametrize("task, split, rows", OFFICIAL_COUNTS)
def test_real_glue_row_counts(real_data_dir, task, split, rows):
    ds = load_glue_split(real_data_dir / "glue", task, split)
    assert len(ds) == rows
    assert all(text.strip() for text in ds["text_a"][:50])


def test_quotes_are_data_and_labels_are_strings(real_data_dir):
    mrpc = load_glue_split(real_data_dir, "mrpc", "dev")  # the shared folder itself is accepted too
    assert mrpc[0]["text_b"].startswith('" The foodservice')
    assert set(mrpc["label"]) == {"0", "1"}
    assert isinstance(load_glue_split(real_data_dir, "stsb", "dev")[0]["label"], float)


def test_mnli_and_qqp_loaders_on_small_files_in_the_glue_layout(tmp_path):
    (tmp_path / "MNLI").mkdir()
    header = (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
    )
    row = '0\t1\t2\tfiction\t(x)\t(y)\t(x)\t(y)\tHe said "hi".\tHe spoke.\tentailment\tentailment'
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        (tmp_path / "MNLI" / name).write_text(header + "\n" + row + "\n")
    ds = load_glue_split(tmp_path, "mnli", "dev")
    assert ds[0] == {"text_a": 'He said "hi".', "text_b": "He spoke.", "label": "entailment"}
    assert len(load_glue_split(tmp_path, "mnli", "dev_mismatched")) == 1
    (tmp_path / "QQP").mkdir()
    (tmp_path / "QQP" / "train.tsv").write_text(
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tWhy?\tHow come?\t1\n"
    )
    assert load_glue_split(tmp_path, "qqp", "train")[0]["label"] == "1"


def test_unknown_task_and_missing_files(tmp_path):
    with pytest.raises(ToPruneError, match="unknown GLUE task 'nope'"):
        glue_task("nope")
    with pytest.raises(ToPruneError, match="rte train file not found"):
        load_glue_split(tmp_path, "rte", "train")


def test_metrics_on_the_glue_scale():
    assert glue_metrics("accuracy", [1, 0, 1, 1], [1, 0, 0, 1]) == {"accuracy": 75.0}
    f1 = glue_metrics("f1", [1, 0, 1, 1], [1, 0, 0, 1])
    assert f1["f1"] == pytest.approx(100 * 0.8)
    assert glue_metrics("mcc", [1, 0, 1, 0], [1, 0, 1, 0])["mcc"] == pytest.approx(100.0)
    corr = glue_metrics("pearson", [1.0, 2.0, 3.0], [2.0, 4.0, 6.5])
    assert corr["spearman"] == pytest.approx(100.0) and 99 < corr["pearson"] <= 100


def test_the_tests_small_glue_folder_reads_like_the_real_layout(tmp_path):
    """The folder the training-path tests fall back on (tests/conftest.py) goes through the real loader."""
    from .conftest import write_small_glue

    root = write_small_glue(tmp_path, train_rows=6, dev_rows=4)
    mrpc = load_glue_split(root / "glue", "mrpc", "train")
    assert len(mrpc) == 6 and set(mrpc["label"]) == {"0", "1"} and mrpc[0]["text_b"].endswith(" .")
    stsb = load_glue_split(root, "stsb", "dev")
    assert len(stsb) == 4 and all(0.0 <= s <= 5.0 for s in stsb["label"])
