"""``toprune profile``: a latency cost model of the encoder on this machine, for ``prune --constraint latency``."""

from __future__ import annotations

from .errors import ToPruneError


def add_arguments(p) -> None:
    """The options of ``toprune profile`` (registered in cli.py)."""
    from .cli_types import int_list, non_negative_int, positive_int
    from .costmodel import PROFILE_MAX_TOKENS

    p.add_argument("model", help="model folder (dense or pruned: its encoder shape is what counts) or 'minilm'")
    p.add_argument("--batch-size", type=positive_int, default=1, help="serving batch size (default %(default)s)")
    p.add_argument("--threads", type=positive_int, help="intra-op threads (default: torch's default here)")
    p.add_argument(
        "--backend",
        choices=["pytorch", "onnxruntime"],
        default="pytorch",
        help="eager PyTorch, or ONNX Runtime on the exported graphs (each plan timed is one export)",
    )
    p.add_argument(
        "--task",
        dest="profile_task",  # not `task`: commands with a task default it to mrpc; a profile without one is uniform
        metavar="TASK",
        help="time the lengths of this task's training data (GLUE or SQuAD, read from --data-dir), as "
        "`prune --constraint latency` does: the profile it caches is the one that run reuses",
    )
    p.add_argument("--data-dir", help="GLUE folder for --task (default: ../shared/data/glue if it exists)")
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        help=f"longest input profiled, lengths uniform up to it (default {PROFILE_MAX_TOKENS}; with --task: the "
        "data's 99th percentile)",
    )
    p.add_argument(
        "--check-plans",
        type=non_negative_int,
        default=12,
        help="random plans whose measured latency is compared with the prediction (default 12; 0: none)",
    )
    from .prune_config import SCORERS

    p.add_argument(
        "--scorer",
        default="attention",
        choices=SCORERS,
        help="how the plans timed score tokens, as the `prune --scorer` the profile is for (default attention; "
        "value-weighted scoring costs more per pruning layer)",
    )
    p.add_argument(
        "--pruning-layers",
        type=int_list,
        metavar="L,L,...",
        help="the layers the plans timed drop tokens on, as the `prune --pruning-layers` the profile is for "
        "(default: the model's default layers)",
    )
    p.add_argument("--output", help="also save the profile here (it is always cached for `prune`)")
    p.add_argument("--json", action="store_true")


def cmd_profile(args, data_dir):
    import torch

    from .constraint import cached_profile_path
    from .plan import ScoringSpec
    from .pretrained import load_model
    from .latency_check import check_predictions
    from .profile import profile, timed_length, training_lengths

    from .commands import _quiet

    _quiet()
    if args.profile_task and args.max_tokens:
        raise ToPruneError("--task times its data's own lengths (up to their 99th percentile): drop --max-tokens")
    model = load_model(args.model)
    if args.pruning_layers:  # checked before the training set is tokenised (slow for SQuAD)
        from .prune_config import PruneConfig, resolve_layers

        resolve_layers(PruneConfig(pruning_layers=args.pruning_layers), model.config.num_hidden_layers)
    threads = args.threads or torch.get_num_threads()
    lengths = training_lengths(args.model, args.profile_task, data_dir) if args.profile_task else None
    max_tokens = timed_length(model, lengths, args.max_tokens)
    scoring = ScoringSpec(args.scorer)
    cost = profile(
        model,
        args.backend,
        args.batch_size,
        threads,
        max_tokens=max_tokens,
        lengths=lengths,
        scoring=scoring,
        pruning_layers=args.pruning_layers,
    )
    cached = cost.save(cached_profile_path(cost.key))
    if args.output:
        cost.save(args.output)
    result = {"profile": cost.__dict__ | {"cached_at": str(cached)}}
    if args.check_plans:
        result["check"] = check_predictions(model, cost, args.check_plans, max_tokens, lengths=lengths)
    if not args.json:
        a0, a1, a2 = cost.attention
        print(f"{cost.key['machine']}: {args.backend}, batch {args.batch_size}, {threads} threads")
        print(
            f"per layer: attention {a0:.3f} + {a1:.4f} n + {a2:.6f} n^2 ms, FFN {cost.ffn[0]:.3f} + "
            f"{cost.ffn[1]:.4f} n ms; fixed {cost.fixed:.3f} ms; pruning overhead {cost.prune_overhead:.3f} + "
            f"{cost.prune_overhead_per_token:.4f} n ms per dropping layer"
        )
        if "check" in result:
            print(
                f"{args.check_plans} random plans: median |predicted - measured| / measured = "
                f"{result['check']['median_abs_error']:.1%}"
            )
        print(f"saved: {cached}" + (f" and {args.output}" if args.output else ""))
    return result
