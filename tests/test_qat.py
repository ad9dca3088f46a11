"""Quantisation-aware fine-tuning: the fake INT8 model computes what ONNX Runtime's dynamic INT8 graph computes."""

import pytest
import torch

from toprune.export import export_onnx, make_session
from toprune.qat import fake_int8, fake_quantize_activation, fake_quantize_weight
from toprune.quantize import quantize_variant

from .conftest import random_batch, tiny_model


@pytest.mark.parametrize("variant", ["per_channel", "dynamic"])
def test_fake_int8_matches_the_onnx_runtime_int8_graph_far_better_than_fp32(variant, tmp_path):
    """The oracle is the served graph itself: the patched model's logits sit much closer to ORT INT8's than the float
    model's do; undo restores the float model exactly."""
    model = tiny_model()
    with torch.no_grad():  # a random head's logits are tiny: scale them so the INT8 error is far above float noise
        model.classifier.weight.mul_(1000.0)
    export_onnx(model, None, tmp_path, samples=[random_batch([9, 3, 17, 12])])
    quantize_variant(tmp_path / "model.onnx", tmp_path / "int8.onnx", variant)
    session = make_session(tmp_path / "int8.onnx")
    batch = random_batch([1], seed=3) | {"input_ids": random_batch([23], seed=3)["input_ids"]}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])  # one example: the min/max span ORT's
    served = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in batch.items()})[0])
    with torch.no_grad():
        fp32 = model(**batch).logits
        undo = fake_int8(model, per_channel=variant == "per_channel")
        simulated = model(**batch).logits
        undo()
        again = model(**batch).logits
    assert torch.equal(again, fp32)
    gap_fp32, gap_sim = (served - fp32).abs().max().item(), (served - simulated).abs().max().item()
    assert gap_fp32 > 1e-3  # INT8 really moved the logits ...
    assert gap_sim < gap_fp32 / 100  # ... and the simulation reproduces it (float noise apart)


def test_fake_quantisers_round_to_the_int8_grids_and_pass_gradients_straight_through():
    x = torch.tensor([-1.0, 0.0, 0.3, 2.0], requires_grad=True)
    q = fake_quantize_activation(x)
    scale = 3.0 / 255
    # ORT: saturate(round(x / scale) + zero point), zero point 85 = round(1 / scale); back to float
    assert torch.allclose(q, torch.round(x.detach() / scale) * scale, atol=1e-6)
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))
    w = torch.tensor([[0.5, -1.27, 0.01], [2.54, 0.0, -0.02]])
    per_row = fake_quantize_weight(w)
    assert torch.allclose(per_row[0], torch.tensor([0.5, -1.27, 0.01]), atol=1e-6)  # scale 0.01: on the grid
    assert per_row[1, 2].item() == pytest.approx(-0.02)  # row 2's own scale (0.02): one step ...
    per_tensor = fake_quantize_weight(w, per_channel=False)
    assert per_tensor[0, 2].item() == 0.0  # ... one scale (0.02) for all rows: 0.01 falls to 0
