"""The embedding task: pooling from the sentence-transformers config, pooling a pruned model (restored states or
survivors only), the embedding loss, the sentence-transformers round trip, and a short run on unlabelled text."""

import json
import random

import numpy as np
import pytest
import torch

import toprune
from toprune.embedding import (
    Pooling,
    embed,
    embedding_loss,
    load_sentence_transformer,
    load_texts,
    read_pooling,
    save_sentence_transformer,
)
from toprune.embedding_eval import encode_with_flops, squad_training_texts
from toprune.errors import ToPruneError
from toprune.plan import PruningPlan
from toprune.prune import PruneConfig, ToPRun

from .conftest import tiny_bert_with_tokenizer

SENTENCES = [
    "a short one",
    "the cat sat on the mat while the dog slept by the warm fire all afternoon",
    "embedding models pool token states",
    "ok",
    "token pruning drops the least attended words layer by layer, so later layers run on fewer tokens",
]


def _tiny_encoder():
    return tiny_bert_with_tokenizer("BertModel")


def _batch(tokenizer, texts=SENTENCES):
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def test_pooling_config_is_read_from_the_sentence_transformers_files(tmp_path):
    assert read_pooling(tmp_path) == Pooling("mean", False)  # a plain HF folder: mean, as sentence-transformers
    (tmp_path / "1_Pooling").mkdir()
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    config = tmp_path / "1_Pooling" / "config.json"
    config.write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    assert read_pooling(tmp_path, "survivors") == Pooling("cls", True, "survivors")
    config.write_text(json.dumps({"pooling_mode": "max"}))  # the sentence-transformers >= 6 spelling
    assert read_pooling(tmp_path).mode == "max"
    config.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}))
    with pytest.raises(ToPruneError, match="exactly one"):
        read_pooling(tmp_path)
    with pytest.raises(ToPruneError, match="pooling tokens"):
        Pooling(tokens="some")


def test_keep_all_pooling_equals_sentence_transformers_on_the_packaged_minilm():
    """Both pooling variants of the unpruned runtime give what sentence-transformers itself gives the real model
    (its own mean pooling and normalisation, padded batches)."""
    from sentence_transformers import SentenceTransformer

    folder = toprune.pretrained.resolve_model("minilm")
    dense = torch.tensor(SentenceTransformer(folder, device="cpu").encode(SENTENCES))
    model, tokenizer = toprune.load_model(folder, "AutoModel"), toprune.load_tokenizer(folder)
    state = toprune.apply_pruning(model)  # keep-all plan
    for tokens in ("restored", "survivors"):
        pooling = read_pooling(folder, tokens)
        assert pooling.mode == "mean" and pooling.normalize
        with torch.no_grad():
            ours = embed(model, _batch(tokenizer), pooling, state)
        torch.testing.assert_close(ours, dense, atol=2e-5, rtol=1e-4)


def test_survivor_pooling_pools_only_the_tokens_that_reached_the_last_layer():
    """A plan that keeps only CLS from layer 1: survivor mean pooling is CLS's final state; the restored variant
    also averages the dropped tokens' states and differs."""
    model, tokenizer = _tiny_encoder()
    state = toprune.apply_pruning(model, PruningPlan.from_keep_ratios(4, {1: 0.0}))
    batch = _batch(tokenizer)
    with torch.no_grad():
        survivors = embed(model, batch, Pooling(tokens="survivors"), state)
        cls = model(**batch).last_hidden_state[:, 0]
        restored = embed(model, batch, Pooling(tokens="restored"), state)
    torch.testing.assert_close(survivors, cls)
    assert not torch.allclose(restored, cls, atol=1e-3)


def test_embedding_loss_is_zero_for_identical_embeddings_and_trains_the_student_only():
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    for kind in ("cosine", "mse", "cosine+mse"):
        assert embedding_loss(teacher.clone(), teacher, kind).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    target = teacher.clone().requires_grad_()
    loss = embedding_loss(student, target, "cosine")
    assert loss.item() > 0
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and target.grad is None
    # on unit vectors the squared distance is 2 (1 - cos)
    assert embedding_loss(student, teacher, "mse").item() == pytest.approx(2 * loss.item(), rel=1e-5)


@pytest.mark.parametrize("tokens", ["restored", "survivors"])
def test_sentence_transformers_round_trip_runs_pruned(tmp_path, tokens):
    """save_sentence_transformer -> load_sentence_transformer: encode() of padded batches equals our pruned
    embedding, and differs from the dense model (the plan really acts inside sentence-transformers)."""
    from sentence_transformers import SentenceTransformer

    model, tokenizer = _tiny_encoder()
    pooling = Pooling("mean", True, tokens)
    toprune.apply_pruning(model, PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.5, 3: 0.5}))
    folder = save_sentence_transformer(model, tmp_path / "st", tokenizer, pooling)
    ours, _ = encode_with_flops(toprune.load_model(folder, "AutoModel"), tokenizer, SENTENCES, pooling, batch_size=3)
    st = load_sentence_transformer(folder)
    pruned = st.encode(SENTENCES, batch_size=3)
    torch.testing.assert_close(torch.tensor(pruned), torch.tensor(ours), atol=1e-5, rtol=1e-4)
    dense = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, batch_size=3)
    assert not torch.allclose(torch.tensor(dense), torch.tensor(pruned), atol=1e-3)


def test_unlabelled_text_sources(tmp_path):
    (tmp_path / "t.txt").write_text("first line\n\n  second line \nfirst line\n")
    assert load_texts(str(tmp_path / "t.txt")) == ["first line", "second line"]
    (tmp_path / "t.csv").write_text("id,body\n1,hello there\n2,general kenobi\n")
    assert load_texts(str(tmp_path / "t.csv"), column="body") == ["hello there", "general kenobi"]
    with pytest.raises(ToPruneError, match="text column"):
        load_texts(str(tmp_path / "t.csv"))
    (tmp_path / "t.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert load_texts(str(tmp_path / "t.jsonl")) == ["one", "two"]
    # several sources joined by +: concatenated in order, duplicates across them dropped
    joined = f"{tmp_path / 't.jsonl'}+{tmp_path / 't.txt'}+{tmp_path / 't.jsonl'}"
    assert load_texts(joined) == ["one", "two", "first line", "second line"]


def test_squad_training_text_never_includes_held_out_articles(tmp_path):
    articles = [
        {
            "title": f"a{i}",
            "paragraphs": [
                {
                    "context": f"paragraph of article {i}",
                    "qas": [
                        {
                            "id": f"q{i}",
                            "question": f"question {i}?",
                            "answers": [{"text": "article", "answer_start": 13}],
                        }
                    ],
                }
            ],
        }
        for i in range(40)
    ]
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps({"data": articles, "version": "1.1"}))
    texts = squad_training_texts(path)
    assert "paragraph of article 37" in texts and "question 0?" in texts
    assert not any(t.endswith(("38", "39", "38?", "39?")) for t in texts)
    assert load_texts(f"squad:{path}") == texts
    paragraphs = load_texts(f"squad-paragraphs:{path}")
    assert paragraphs == [t for t in texts if t.startswith("paragraph")] and "paragraph of article 0" in paragraphs


@pytest.mark.parametrize("method, merge", [("top", False), ("static", False), ("static", True)])
def test_a_short_pruning_run_on_unlabelled_sentences_completes(tmp_path, method, merge):
    model, tokenizer = _tiny_encoder()
    model.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    rng = random.Random(0)
    words = "the a cat dog runs over lazy fox river bank money house green small large red blue sky".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(60)]
    (tmp_path / "texts.txt").write_text("\n".join(lines))
    cfg = PruneConfig(
        teacher=str(tmp_path / "teacher"),
        task="embedding",
        data_dir="",
        train_file=str(tmp_path / "texts.txt"),
        output_dir=str(tmp_path / "run"),
        target="1.3x",
        epochs=2,
        warmup_epochs=1,
        batch_size=8,
        eval_every=4,
        save_every=4,
        max_length=64,
        num_bins=5,
        topk=4,
        method=method,
        pooling_tokens="survivors",
        merge=merge,
    )
    logged = []
    summary = ToPRun(cfg, log=logged.append).run()
    assert summary["steps"] > 0 and summary["task"] == "embedding"
    # the setup names the text and the kind of task, not GLUE's columns and labels
    setup = "\n".join(str(line) for line in logged)
    assert f"data: unlabelled text from {tmp_path / 'texts.txt'}" in setup and "sentence embedding" in setup
    assert "label column" not in setup and "hub dataset" not in setup
    if method == "static":  # a fixed plan meets the target at once: a model is kept and judged on held-out text
        assert 0 < summary["dev"]["teacher_cosine"] <= 100 + 1e-6
        assert summary["dev"]["flops_reduction_unpadded"] > 1.1  # plan fitted on train and selection lengths
        st = load_sentence_transformer(tmp_path / "run" / "best")
        assert st.encode(lines[:3]).shape == (3, 32)
        assert PruningPlan.load(tmp_path / "run" / "best").scoring.merge == merge  # saved with the model
    if merge:  # the model was trained with merged survivors on the real path; ToP's soft phase cannot merge
        with pytest.raises(ToPruneError, match="--merge runs on the real"):
            ToPRun(PruneConfig(**{**cfg.__dict__, "method": "top", "output_dir": str(tmp_path / "t")}))


def test_onnx_export_serves_the_pruned_embedding(tmp_path):
    """Survivor pooling inside the exported graph: OnnxModel.encode() equals the PyTorch pruned embedding on a
    padded batch of mixed lengths (export_onnx also refuses a graph that disagrees)."""
    from toprune.embedding_onnx import export_embedding_onnx
    from toprune.serve import OnnxModel

    model, tokenizer = _tiny_encoder()
    toprune.apply_pruning(model, PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.5, 3: 0.5}))
    pooling = Pooling("mean", True, "survivors")
    folder = export_embedding_onnx(model, tokenizer, pooling, tmp_path / "onnx", fuse=False)
    served = OnnxModel(folder).encode(SENTENCES, batch_size=5)
    ours, _ = encode_with_flops(model, tokenizer, SENTENCES, pooling, batch_size=5)
    torch.testing.assert_close(torch.tensor(served), torch.tensor(ours), atol=1e-5, rtol=1e-4)
    with pytest.raises(ToPruneError, match="no classification head"):
        OnnxModel(folder).predict(["x"])


def test_cli_embedding_task_needs_text_and_is_for_prune_only(tmp_path, capsys):
    from toprune.cli import main

    assert main(["prune", "--teacher", str(tmp_path), "--task", "embedding", "--output", str(tmp_path / "o")]) == 2
    assert "needs --train-file" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--task", "embedding"]) == 2
    assert "for `toprune prune`" in capsys.readouterr().err


def _fake_encoder(vectors):
    """encode_with_flops stand-in: each text's designed vector (so the metrics are known by hand)."""

    def fake(model, tokenizer, texts, pooling, **kw):
        return np.stack([vectors[t] for t in texts]).astype(np.float32), None

    return fake


def test_squad_retrieval_ranks_held_out_questions_against_every_paragraph(tmp_path, monkeypatch):
    """40 one-paragraph articles; the held-out two (38, 39) ask questions: one's gold paragraph ranks first, the
    other's second -> recall@1 50, recall@5 100, MRR (1 + 1/2) / 2 = 75."""
    from toprune import embedding_eval

    articles = [
        {
            "title": f"a{i}",
            "paragraphs": [
                {
                    "context": f"paragraph {i}",
                    "qas": [
                        {
                            "id": f"q{i}",
                            "question": f"question {i}?",
                            "answers": [{"text": "paragraph", "answer_start": 0}],
                        }
                    ],
                }
            ],
        }
        for i in range(40)
    ]
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps({"data": articles, "version": "1.1"}))
    eye = np.eye(40)
    vectors = {f"paragraph {i}": eye[i] for i in range(40)}
    vectors.update({"question 38?": eye[38], "question 39?": eye[0] + 0.5 * eye[39]})
    monkeypatch.setattr(embedding_eval, "encode_with_flops", _fake_encoder(vectors))
    out = embedding_eval.squad_retrieval(None, None, Pooling(), path)
    assert (out["questions"], out["paragraphs"], out["heldout_articles"]) == (2, 40, 2)
    assert out["recall@1"] == pytest.approx(50) and out["recall@5"] == pytest.approx(100)
    assert out["mrr"] == pytest.approx(75)


def test_stsb_spearman_is_the_rank_correlation_of_cosines_with_gold(tmp_path, monkeypatch):
    from toprune import embedding_eval

    (tmp_path / "STS-B").mkdir()
    gold = [0.5, 4.0, 2.0, 3.0]
    rows = [f"g\tm\t0\t0\t0\t0\ts{i}\tt{i}\t{g}" for i, g in enumerate(gold)]
    header = "genre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    (tmp_path / "STS-B" / "dev.tsv").write_text("\n".join([header] + rows) + "\n")
    angles = {0: 1.2, 1: 0.1, 2: 0.9, 3: 0.3}  # cosine order: 1 > 3 > 2 > 0, the gold order
    vectors = {f"s{i}": np.array([1.0, 0.0]) for i in range(4)}
    vectors.update({f"t{i}": np.array([np.cos(a), np.sin(a)]) for i, a in angles.items()})
    monkeypatch.setattr(embedding_eval, "encode_with_flops", _fake_encoder(vectors))
    assert embedding_eval.stsb_spearman(None, None, Pooling(), tmp_path)["stsb_spearman"] == pytest.approx(100)
    angles[3] = 0.05  # rows 1 and 3 swap ranks: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    vectors.update({f"t{i}": np.array([np.cos(a), np.sin(a)]) for i, a in angles.items()})
    assert embedding_eval.stsb_spearman(None, None, Pooling(), tmp_path)["stsb_spearman"] == pytest.approx(80)


def test_soft_training_path_pools_the_same_survivors_as_the_gather_path():
    """Hard 0/1 soft masks (everything but CLS dropped at layer 1) give the survivor embedding of the real path,
    and with partly kept tokens gradients reach the gate values through the pooled embedding."""
    from toprune.runtime import SoftMasks

    model, tokenizer = _tiny_encoder()
    batch = _batch(tokenizer)
    pooling = Pooling(tokens="survivors")
    state = toprune.apply_pruning(model, PruningPlan.from_keep_ratios(4, {1: 0.0}))
    with torch.no_grad():
        real = embed(model, batch, pooling, state)
    state.set_plan(PruningPlan.keep_all(4))
    bins = torch.zeros(3, 5, requires_grad=True)
    gates = torch.tensor([1.0, 0.0, 0.0], requires_grad=True)
    state.soft_masks = SoftMasks([1, 2, 3], bins, gates)
    soft = embed(model, batch, pooling, state)
    torch.testing.assert_close(soft, real, atol=1e-5, rtol=1e-4)
    gates = torch.tensor([0.5, 0.0, 0.0], requires_grad=True)  # partly kept tokens: their weight is differentiable
    state.soft_masks = SoftMasks([1, 2, 3], bins, gates)
    embed(model, batch, pooling, state).sum().backward()
    assert gates.grad is not None and gates.grad[0] != 0


def test_relational_loss_is_the_kl_of_in_batch_similarities_and_scale_free():
    """Zero when the student equals the teacher; positive when two texts' embeddings are swapped (the cosine to
    the teacher and the ranking both break); equal to the KL computed by hand; gradients reach the student only."""
    from toprune.embedding import RELATIONAL_TEMPERATURE, relational_loss

    torch.manual_seed(0)
    teacher = torch.randn(5, 16)
    assert relational_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert relational_loss(3.0 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    student = (teacher + 0.3 * torch.randn(5, 16)).requires_grad_()
    target = teacher.clone().requires_grad_()
    loss = relational_loss(student, target)
    t = torch.nn.functional.normalize(teacher, dim=-1)
    s = torch.nn.functional.normalize(student.detach(), dim=-1)
    p = (t @ t.T / RELATIONAL_TEMPERATURE).softmax(-1)
    q = (s @ t.T / RELATIONAL_TEMPERATURE).softmax(-1)
    assert loss.item() == pytest.approx(float((p * (p.log() - q.log())).sum(-1).mean()), rel=1e-4)
    loss.backward()
    assert student.grad.abs().sum() > 0 and target.grad is None
    swapped = teacher[[1, 0, 2, 3, 4]]
    assert relational_loss(swapped, teacher).item() > 1.0
    both = embedding_loss(student.detach(), teacher, "cosine+relational")
    cosine = embedding_loss(student.detach(), teacher, "cosine")
    assert both.item() == pytest.approx(cosine.item() + relational_loss(student.detach(), teacher).item(), rel=1e-5)


def test_token_loss_is_relative_error_over_the_pooled_tokens_only():
    """Zero for equal states; ignores tokens of weight 0 (padding, dropped tokens under survivor pooling); scale-free
    (the same relative error at any norm of the teacher's states)."""
    from toprune.embedding import token_loss

    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 8)
    weights = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.float32)
    assert token_loss(teacher.clone(), teacher, weights).item() == pytest.approx(0.0, abs=1e-7)
    student = teacher.clone()
    student[:, 3:] += 100.0  # only unpooled positions differ
    student[1, 2] += 100.0
    assert token_loss(student, teacher, weights).item() == pytest.approx(0.0, abs=1e-7)
    student = teacher + 0.1 * torch.randn(2, 5, 8)
    loss = token_loss(student, teacher, weights).item()
    assert loss > 0
    assert token_loss(10 * student, 10 * teacher, weights).item() == pytest.approx(loss, rel=1e-5)


def test_distill_embedding_adds_the_token_term_and_returns_the_teachers_pooled_embedding():
    from toprune.embedding import distill_embedding, pool

    teacher, tokenizer = _tiny_encoder()
    student, _ = _tiny_encoder()
    with torch.no_grad():  # a student that differs from its teacher
        for param in student.encoder.parameters():
            param.add_(0.05 * torch.randn_like(param))
    state = toprune.apply_pruning(student, PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.5}))
    batch = _batch(tokenizer)
    plain, target = distill_embedding(student, teacher, batch, Pooling(loss="cosine"), state)
    both, _ = distill_embedding(student, teacher, batch, Pooling(loss="cosine+tokens"), state)
    with torch.no_grad():
        expected = pool(teacher(**batch).last_hidden_state, batch["attention_mask"], Pooling())
    torch.testing.assert_close(target, expected)
    assert both.item() > plain.item() > 0
    both.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.encoder.parameters())
