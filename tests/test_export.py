"""ONNX export of pruned models: per-example token removal inside the graph, parity with PyTorch (<= 1e-4)."""

import json

import numpy as np
import pytest
import torch
import transformers

import toprune
from toprune import PruningPlan, apply_pruning, pruning_state
from toprune.plan import ScoringSpec
from toprune.export import CONFIG_FILENAME, check_parity, export_folder, export_onnx, make_session
from toprune.serve import OnnxModel

from .conftest import FAMILIES, random_batch, tiny_bert_with_tokenizer, tiny_model

PLAN = PruningPlan.from_keep_ratios(4, {1: 0.6, 2: 0.5, 3: 0.5}, num_bins=10)


def _single_token_plan() -> PruningPlan:
    """Layer 3 keeps no rank bin: only CLS enters it."""
    return PruningPlan(num_layers=4, num_bins=4, kept_bins={1: [True, True, True, False], 3: [False] * 4})


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_pruned_export_matches_pytorch_on_mixed_batches_and_a_batch_of_one(family, tmp_path):
    model = tiny_model(family)
    pad = model.config.pad_token_id or 0
    apply_pruning(model, PLAN)
    trace = [random_batch([9, 3, 17, 12], pad_id=pad)]
    export_onnx(model, None, tmp_path, samples=trace)
    session = make_session(tmp_path / "model.onnx")
    # other lengths, other batch sizes than the traced batch: the axes and the survivor counts are dynamic
    checks = [
        random_batch([30, 2, 11, 25, 1, 7], pad_id=pad, seed=1),
        random_batch([14], pad_id=pad, seed=2),
        random_batch([1], pad_id=pad, seed=3),
    ]
    assert check_parity(model, session, checks) <= 1e-4


def test_export_really_removes_tokens_per_example(tmp_path):
    """PyTorch really shortens the sequence under this plan, and the exported graph holds the selection (TopK)
    and gather ops that do the same (the parity tests on other lengths show they compute the same thing)."""
    model = tiny_model()
    apply_pruning(model, PLAN)
    export_onnx(model, None, tmp_path / "pruned", samples=[random_batch([9, 3, 17, 12])])
    state = pruning_state(model)
    state.record = True
    batch = random_batch([40, 12, 33])
    with torch.no_grad():
        model(**batch)
    lengths = state.last.computed_lengths
    assert lengths[0] == 40 and lengths[-1] < lengths[0] / 3  # PyTorch shortened the sequence ...
    graph = open(tmp_path / "pruned" / "model.onnx", "rb").read()
    assert b"TopK" in graph and b"index_select" in graph  # ... and so does the graph: selection and row gather


def test_a_layer_that_keeps_only_cls_exports_and_matches(tmp_path):
    model = tiny_model()
    state = apply_pruning(model, _single_token_plan())
    state.record = True
    batch = random_batch([9, 3, 17, 1])
    with torch.no_grad():
        model(**batch)
    assert state.last.attn_counts[:, 3].tolist() == [1, 1, 1, 1]  # really a single token at layer 3
    state.record = False
    export_onnx(model, None, tmp_path, samples=[batch])
    assert check_parity(model, make_session(tmp_path / "model.onnx"), [random_batch([5, 20], seed=4)]) <= 1e-4


def test_qa_head_gets_every_position_back_inside_the_graph(tmp_path):
    torch.manual_seed(0)
    config = FAMILIES["bert"]()
    config.num_labels = 2  # start and end
    model = transformers.AutoModelForQuestionAnswering.from_config(config, attn_implementation="sdpa").eval()
    apply_pruning(model, PLAN)
    batch = random_batch([9, 3, 17, 12])
    export_onnx(model, None, tmp_path, samples=[batch])
    meta = json.loads((tmp_path / CONFIG_FILENAME).read_text())
    assert meta["outputs"] == ["start_logits", "end_logits"] and meta["pruned"] and meta["restores_tokens"]
    session = make_session(tmp_path / "model.onnx")
    other = random_batch([21, 6], seed=5)
    start, end = session.run(None, {k: v.numpy() for k, v in other.items()})
    assert start.shape == end.shape == (2, 21)
    assert check_parity(model, session, [other]) <= 1e-4


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_first_row_heads_skip_the_restore_and_still_match(family, tmp_path):
    """Sequence classification reads the CLS row only: the graph drops the restore step (no scatter back)."""
    model = tiny_model(family)
    pad = model.config.pad_token_id or 0
    apply_pruning(model, PLAN)
    export_onnx(model, None, tmp_path, samples=[random_batch([9, 3, 17, 12], pad_id=pad)])
    assert json.loads((tmp_path / CONFIG_FILENAME).read_text())["restores_tokens"] is False
    assert b"ScatterND" not in open(tmp_path / "model.onnx", "rb").read()
    checks = [random_batch([30, 2, 11, 25, 1], pad_id=pad, seed=1), random_batch([14], pad_id=pad, seed=2)]
    assert check_parity(model, make_session(tmp_path / "model.onnx"), checks) <= 1e-4


def test_token_level_logits_keep_the_restore(tmp_path):
    """Token classification also outputs "logits", but per token: the head probe sees it and the restore stays."""
    model = tiny_model(head="AutoModelForTokenClassification")
    apply_pruning(model, PLAN)
    export_onnx(model, None, tmp_path, samples=[random_batch([9, 3, 17, 12])])
    assert json.loads((tmp_path / CONFIG_FILENAME).read_text())["restores_tokens"] is True
    other = random_batch([21, 6], seed=5)
    assert check_parity(model, make_session(tmp_path / "model.onnx"), [other]) <= 1e-4


def test_transformer_fusions_are_kept_only_with_parity_and_can_be_turned_off(tmp_path, capsys):
    """onnxruntime's transformer optimizer runs on every export (dense and pruned), its fused graph is checked like
    the plain one, and it prints nothing to stdout (`toprune bench --json` writes JSON there)."""
    model = tiny_model()
    batch = random_batch([9, 3, 17, 12])
    export_onnx(model, None, tmp_path / "dense", samples=[batch])
    fused = json.loads((tmp_path / "dense" / CONFIG_FILENAME).read_text())["fused_ops"]
    assert fused.get("BiasGelu")
    graph = open(tmp_path / "dense" / "model.onnx", "rb").read()
    assert b"BiasGelu" in graph and b"Attention" in graph  # opset 23: the dense attention is one node
    apply_pruning(model, PLAN)
    export_onnx(model, None, tmp_path / "pruned", samples=[batch])
    assert json.loads((tmp_path / "pruned" / CONFIG_FILENAME).read_text())["fused_ops"].get("BiasGelu")
    checks = [random_batch([30, 2, 11], seed=1), random_batch([1], seed=3)]
    assert check_parity(model, make_session(tmp_path / "pruned" / "model.onnx"), checks) <= 1e-4
    export_onnx(model, None, tmp_path / "plain", samples=[batch], fuse=False)
    assert json.loads((tmp_path / "plain" / CONFIG_FILENAME).read_text())["fused_ops"] == {}
    assert capsys.readouterr().out == ""


def test_dense_export_and_random_baseline_refused(tmp_path):
    model = tiny_model()
    export_onnx(model, None, tmp_path / "dense", samples=[random_batch([9, 3])])
    assert not json.loads((tmp_path / "dense" / CONFIG_FILENAME).read_text())["pruned"]
    plan = PruningPlan.from_keep_ratios(4, {1: 0.5}, scoring=ScoringSpec("random"))
    apply_pruning(model, plan)
    with pytest.raises(toprune.ToPruneError, match="not exportable"):
        export_onnx(model, None, tmp_path / "random", samples=[random_batch([9, 3])])


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory):
    """A tiny random BERT with the real MiniLM tokenizer, saved pruned, and its export folder (with INT8)."""
    folder = tmp_path_factory.mktemp("model")
    model, tokenizer = tiny_bert_with_tokenizer()
    apply_pruning(model, PLAN)
    toprune.save_pruned(model, folder / "pruned", tokenizer)
    export_folder(str(folder / "pruned"), folder / "export", int8=True)
    return folder


def test_onnx_model_predicts_like_pytorch_from_raw_text(tiny_text_model):
    texts = ["The cat sat on the mat.", "Tokens are removed layer by layer, so the sequence gets shorter.", "Hi"]
    pairs = ["A cat was sitting.", "Later layers run on fewer tokens.", "Hello there, how are you?"]
    served = OnnxModel(tiny_text_model / "export")
    model = toprune.load_model(tiny_text_model / "pruned")
    tokenizer = toprune.load_tokenizer(tiny_text_model / "pruned")
    with torch.no_grad():
        probs = model(**tokenizer(texts, pairs, padding=True, return_tensors="pt")).logits.softmax(-1)
    got = served.predict(texts, pairs=pairs, batch_size=2)
    assert [g["label"] for g in got] == [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    assert np.allclose([g["score"] for g in got], probs.max(-1).values.numpy(), atol=1e-4)
    int8 = OnnxModel(tiny_text_model / "export", int8=True).predict(texts, pairs=pairs)
    # quantisation moves the probabilities a little: each INT8 score is close to the float model's probability of
    # the label INT8 picked (a wrong label id, or a score that is not that label's probability, would fail)
    label2id = {name: int(i) for i, name in model.config.id2label.items()}
    float_probs = [float(probs[b, label2id[g["label"]]]) for b, g in enumerate(int8)]
    assert len(int8) == 3 and np.allclose([g["score"] for g in int8], float_probs, atol=0.05)
    with pytest.raises(toprune.ToPruneError, match="no question-answering head"):
        served.answer(["q"], ["c"])


def test_export_cli_errors_are_one_line(tiny_text_model, tmp_path, capsys):
    from toprune.cli import main

    assert main(["export", str(tmp_path / "missing"), "--output", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("user file")
    assert main(["export", str(tiny_text_model / "pruned"), "--output", str(tmp_path / "busy")]) == 2
    assert "not an export folder" in capsys.readouterr().err
    with pytest.raises(toprune.ToPruneError, match="not an export folder"):
        OnnxModel(tmp_path / "busy")


def test_onnx_model_answers_questions_like_pytorch(tmp_path):
    """QA served from the export is decoded like evaluation decodes PyTorch's logits (n-best, context only)."""
    from toprune.squad import eval_features, final_answers, postprocess

    model, tokenizer = tiny_bert_with_tokenizer("BertForQuestionAnswering")
    apply_pruning(model, PLAN)
    toprune.save_pruned(model, tmp_path / "qa", tokenizer)
    export_folder(str(tmp_path / "qa"), tmp_path / "export")
    examples = [
        {
            "id": "0",
            "question": "Who designed the tower?",
            "context": "The tower was designed by the company of Gustave Eiffel in 1889. " * 12,
        }
    ]
    served = OnnxModel(tmp_path / "export")
    got = served.answer([examples[0]["question"]], [examples[0]["context"]], max_length=64, stride=16)
    features = eval_features(examples, tokenizer, 64, 16)
    assert len(features.example_index) > 3  # several windows
    starts, ends = [], []
    reloaded = toprune.load_model(tmp_path / "qa")
    for ids, types in zip(features.inputs["input_ids"], features.inputs["token_type_ids"]):
        with torch.no_grad():
            out = reloaded(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]))
        starts.append(out.start_logits[0].numpy())
        ends.append(out.end_logits[0].numpy())
    expected = final_answers(examples, postprocess(examples, features, starts, ends), "v1.1")[0]["0"]
    assert got[0]["answer"] == expected and expected
    no_answer = served.answer(
        [examples[0]["question"]], [examples[0]["context"]], 64, 16, allow_no_answer=True, threshold=float("-inf")
    )
    assert no_answer[0]["answer"] == ""  # v2.0 models may abstain: any null odds exceed -inf
    with pytest.raises(toprune.ToPruneError, match="no classification head"):
        served.predict(["x"])


@pytest.mark.parametrize("radius", [0, 2])
def test_question_scorer_exports_and_matches(tmp_path, radius):
    model = tiny_model()
    plan = PruningPlan.from_keep_ratios(4, {1: 0.5, 3: 0.5}, scoring=ScoringSpec("question", radius))
    apply_pruning(model, plan)
    batch = random_batch([9, 3, 17, 12])
    batch["token_type_ids"] = (torch.arange(17)[None] >= torch.tensor([4, 2, 6, 5])[:, None]).long() * batch[
        "attention_mask"
    ]
    export_onnx(model, None, tmp_path, samples=[batch])
    other = random_batch([21, 6], seed=5)
    other["token_type_ids"] = (torch.arange(21)[None] >= torch.tensor([7, 3])[:, None]).long() * other["attention_mask"]
    assert check_parity(model, make_session(tmp_path / "model.onnx"), [other]) <= 1e-4


def test_value_scorer_exports_and_matches(tmp_path):
    model = tiny_model()
    apply_pruning(model, PruningPlan.from_keep_ratios(4, {1: 0.5, 3: 0.5}, scoring=ScoringSpec("value")))
    export_onnx(model, None, tmp_path, samples=[random_batch([9, 3, 17, 12])])
    others = [random_batch([21, 6, 14], seed=5), random_batch([11], seed=6)]
    assert check_parity(model, make_session(tmp_path / "model.onnx"), others) <= 1e-4


def test_serving_imports_neither_torch_nor_transformers(tiny_text_model):
    """README: serving needs ONNX Runtime and a tokenizer only. A fresh interpreter loads and runs an export."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom toprune.serve import OnnxModel\n"
        f"model = OnnxModel({str(tiny_text_model / 'export')!r})\n"
        "print(model.predict(['The cat sat.'], pairs=['A cat was sitting.'])[0]['label'])\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_serving_tokenizer_matches_transformers(tmp_path, padding_side):
    """The torch-free tokenizer gives the transformers fast tokenizer's ids, masks, segments, SQuAD windows and
    offsets: both drive the same tokenizer.json."""
    from toprune.fast_tokenizer import FastTokenizer
    from toprune.squad import eval_features

    reference = toprune.load_tokenizer("minilm")
    reference.padding_side = padding_side
    reference.save_pretrained(tmp_path)
    served = FastTokenizer(tmp_path, ["input_ids", "token_type_ids", "attention_mask"])
    texts, pairs = ["The cat sat on the mat.", "Hi", "A much longer sentence " * 20], ["A cat.", "Hello there", "x"]
    got = served(texts, pairs, padding=True, truncation=True, max_length=32, return_tensors="np")
    want = reference(texts, pairs, padding=True, truncation=True, max_length=32, return_tensors="np")
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
    examples = [
        {"id": "0", "question": " Who sat?", "context": "The cat sat on the mat. " * 12},
        {"id": "1", "question": "Where?", "context": "On the mat."},
    ]
    ours, theirs = eval_features(examples, served, 40, 16), eval_features(examples, reference, 40, 16)
    assert ours.example_index == theirs.example_index and len(ours.example_index) > 2  # several windows
    assert ours.offsets == theirs.offsets and ours.inputs == {k: theirs.inputs[k] for k in ours.inputs}
    rows = [dict(zip(ours.inputs, values)) for values in zip(*ours.inputs.values())]
    padded, expected = served.pad(rows, return_tensors="np"), reference.pad(rows, return_tensors="np")
    assert all(np.array_equal(padded[k], expected[k]) for k in padded)
