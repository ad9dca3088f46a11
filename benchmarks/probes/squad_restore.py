"""Zero-shot probe: LAT-style restore, i.e. every pruned token re-enters the last layer. Usage:
python benchmarks/probes/squad_restore.py runs/squad-teacher '1:.5,2:.5,3:.5,4:.5' [threads]

Run from the repo root. Diagnostic script of the SQuAD investigation (benchmarks/README.md §6); results in
benchmarks/results/squad_probe_*. Public hooks only: the pruned model returns its hidden states at full length
(``output_hidden_states``; dropped tokens hold their state at removal), and a forward hook on the base model runs
the last layer densely on the one entering it, in place of the pruned last layer's output. The token counts the
runtime recorded are corrected the same way (the last layer sees every token), so the FLOPs reduction is honest.
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from toprune import PruningPlan, apply_pruning, load_model, load_tokenizer, pruning_state  # noqa: E402
from toprune.adapters import base_model, block_parts  # noqa: E402
from toprune.qa import prepare_squad  # noqa: E402
from toprune.scoring import self_attention  # noqa: E402
from toprune.train import evaluate, make_loader  # noqa: E402


def restore_last_layer(model) -> None:
    """After the pruned encoder: the last layer again, dense, on the restored full-length input of that layer."""
    last = block_parts(model)[-1]
    model.config.output_hidden_states = True  # the runtime then records full-length states (read below)

    def hook(module, args, kwargs, output):
        mask = kwargs.get("attention_mask")
        entering = output.hidden_states[-2]  # the input of the last layer, every token at its position
        valid = None if mask is None or bool(mask.all()) else mask.bool()
        context, _, _ = self_attention(last, entering, valid, False, False)
        output.last_hidden_state = last.ffn(last.attn_output(context, entering))
        record = pruning_state(model).last
        if record.attn_counts is not None:  # the last layer's count: every real token
            full = (
                mask.sum(dim=1) if mask is not None else torch.full_like(record.attn_counts[:, -1], entering.shape[1])
            )
            record.attn_counts[:, -1] = full
            record.computed_lengths[-1] = entering.shape[1]
        return output

    base_model(model).register_forward_hook(hook, with_kwargs=True)


def main() -> None:
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    folder = sys.argv[1]
    tok, model = load_tokenizer(folder), load_model(folder)
    data_dir = Path(__file__).resolve().parents[3] / "shared" / "data"
    data = prepare_squad(tok, "squad", str(data_dir), dev_only=True)
    loader = make_loader(data.dev, tok, 64, shuffle=False)
    apply_pruning(model)
    restore_last_layer(model)  # after apply_pruning: its hooks fill hidden_states first
    for spec in sys.argv[2].split(";"):
        ratios = {int(k): float(v) for k, v in (kv.split(":") for kv in spec.split(","))}
        plan = PruningPlan.from_keep_ratios(model.config.num_hidden_layers, ratios)
        started = time.time()
        apply_pruning(model, plan)
        out = evaluate(model, loader, data, padded_length=384)
        print(
            json.dumps(
                {
                    "restore_last": True,
                    "ratios": ratios,
                    "f1": round(out["f1"], 2),
                    "red_unp": round(out["flops_reduction_unpadded"], 3),
                    "kept": out["kept_fraction_per_layer"],
                    "s": round(time.time() - started),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
