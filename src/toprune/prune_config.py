"""Settings of a pruning run (one dataclass, the authors' defaults) and their checks, which fail before anything
is loaded: the CLI, the Python API and the study build runs from this."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .embedding import LOSSES as EMBEDDING_LOSSES
from .errors import ToPruneError
from .gates import GATE_INIT
from .plan import check_min_tokens, default_pruning_layers, pruning_layers_or_default
from .selection import SELECT_ON, check_select_on
from .squad import is_squad
from .validate import DEFAULT_SEED, check_count, check_seed

from .strategies import REGISTRY, build

METHODS, SCORERS, RANK_TARGETS = (tuple(REGISTRY[name]) for name in ("method", "scorer", "rank_target"))
MAX_LENGTH, QA_MAX_LENGTH = 128, 384  # truncation lengths: sentences (GLUE, your files), SQuAD windows


def option(default, help, **cli):
    """A config field with its command-line option (:mod:`toprune.config_options` generates ``toprune prune``'s
    options from these): ``flag`` (default ``--field-name``), ``negate`` (a ``--no-...`` switch for a True default),
    ``kind`` (a parser type of :mod:`toprune.cli_types`), ``choices``, ``group``, ``metavar``, ``also`` (other fields
    the option sets). ``help`` may be a function (text computed from the code that decides it). A field without
    ``help`` has no option."""
    return field(default=default, metadata={"help": help, **cli})


def _layer_range(num_layers: int) -> str:
    layers = default_pruning_layers(num_layers)
    return f"{layers[0]}-{layers[-1]}"


_LATENCY = "latency constraint [ours]: the target is a speed-up on this machine"
_EMBEDDING = (
    "--task embedding: a sentence-embedding model (the teacher: itself, dense) on unlabelled text from "
    "--train-file (.txt, CSV/JSON Lines column, glue:TASK, squad:FILE.json or squad-paragraphs:FILE.json; several "
    "joined by +)"
)


@dataclass
class PruneConfig:
    """Every setting of a pruning run, with its default (the authors' where they have one) and its option's help:
    the only place either is written. Task-dependent defaults (``max_length``, ``padded_length``) are resolved by
    :func:`task_defaults` when the config is made, for the CLI and the Python API alike."""

    # the folders of a run (toprune.prune.ToPRun); an in-memory toprune.Pruner needs none of them
    teacher: str | None = None  # folder of the fine-tuned dense model (also the student's initialisation)
    task: str | None = None
    data_dir: str | None = None
    output_dir: str | None = None
    target: str = option(
        "2x",
        "FLOPs reduction ('2.5x') or sparsity ('0.6') of the whole encoder, measured against "
        "the dense model on the same inputs (see --convention), or with --constraint latency a "
        "predicted speed-up: a checkpoint is kept only if its reduction on the selection set "
        "meets it",
    )
    convention: str = option(
        "unpadded",
        "what the target is measured against: the dense model on each example's real "
        "tokens (unpadded, honest) or on inputs padded to --padded-length (the "
        "paper's convention)",
        choices=("unpadded", "padded"),
    )
    constraint: str = option(
        "flops",
        "what --target counts: FLOPs (the paper) or latency predicted by a measured "
        "profile of this machine (`toprune profile`; measured and cached if none)",
        choices=tuple(REGISTRY["constraint"]),
        group=_LATENCY,
    )
    inference_batch_size: int = option(
        1, "latency: the batch size the model will serve at", kind="positive_int", group=_LATENCY
    )
    inference_backend: str = option("pytorch", "latency: the runtime it will serve in", group=_LATENCY)
    inference_threads: int = option(
        0, "latency: intra-op threads at serving time (0: torch's default here)", kind="positive_int", group=_LATENCY
    )
    latency_profile: str | None = option(
        None, "a saved `toprune profile` JSON to use instead of measuring", group=_LATENCY
    )
    latency_check_examples: int = option(
        256,
        "latency: after training, time the kept plan against the dense model on this many selection examples (0: skip)",
        kind="non_negative_int",
        group=_LATENCY,
    )
    padded_length: int | None = option(
        None, "length of the padded-FLOPs convention (default: --max-length)", kind="positive_int"
    )
    epochs: float = option(
        5.0, "training epochs (the time is estimated after the first 10 steps)", kind="positive_float"
    )
    warmup_epochs: float = option(2.0, "the target ramps up over these epochs", kind="positive_float")
    ramp_start: str = option(
        "zero",
        "where the target's ramp starts: sparsity 0 (the authors') or [ours] the expected sparsity of the initial "
        "masks, so that lambda1 never pushes the masks up to their clamp in the first steps, where they stall "
        "(benchmarks/README.md 'Gate collapse')",
        choices=("zero", "initial"),
    )
    hard_epochs: float = option(
        0.0,
        "[ours] the last epochs train with the learned plan frozen and tokens really "
        "removed, as at inference (the soft masks keep partly masked tokens alive); "
        "recommended for QA. 0: the authors' schedule",
        kind="non_negative_float",
    )
    batch_size: int = 32
    lr: float = option(5e-5, "learning rate of the weights (linear decay)", kind="positive_float")
    gate_lr: float = option(0.05, "learning rate of the gate logits", kind="positive_float")
    lambda_lr: float = option(
        0.05,
        "learning rate of the Lagrange multipliers (lower: a gentler approach to the target)",
        kind="positive_float",
    )
    lambda_anti_windup: bool = option(
        True,
        "[ours] lambda1 never pushes the sparsity away from the target (off: "
        "the authors' plain ascent, which winds up while the sparsity lags and "
        "overshoots after; benchmarks/README.md 'Gate collapse')",
        negate=True,
    )
    num_bins: int = option(20, "rank bins per pruning layer (K)", kind="positive_int", flag="--bins")
    topk: int = option(
        10,
        "teacher's top-k tokens distilled into early layers (with --rank-target answer: the k most "
        "answer-relevant tokens, ranked above all others)",
        kind="positive_int",
    )
    rank_alpha: float = option(
        1e-2,
        "weight of the ranking loss (the authors'; under ToP it decays over the "
        "warm-up). With --rank-target answer it also trains under a fixed plan "
        "(--method static, --hard-epochs) at this constant weight",
        kind="positive_float",
    )
    temperature: float = 2.0
    pruning_layers: list[int] | None = option(
        None,
        lambda: (
            "comma-separated layers whose input may be pruned; layer 0 "
            "always sees every token. Default: from round(L/6) on: "
            f"{_layer_range(6)} of a 6-layer model (MiniLM), {_layer_range(12)} of "
            "12. With layer gates (the default) the learned plan may leave some of "
            "them dense: the run prints and saves the keep ratio of every layer"
        ),
        kind="int_list",
    )
    rank_layers: list[int] | None = option(
        None,
        "comma-separated layers whose scores are distilled (default: the "
        "first ~L/4 score layers; with --rank-target answer every layer whose "
        "scores decide a drop)",
        kind="index_list",
    )
    ranking: bool = option(True, "ablation: ranking distillation off", negate=True)
    rank_target: str = option(
        "attention",
        "what the early score layers learn to rank like: the teacher's final "
        "attention (the authors') or, for QA, [ours] its answer relevance from the "
        "start/end logits (the top-k tokens above all the others)",
        choices=tuple(REGISTRY["rank_target"]),
    )
    scorer: str = option(
        "attention",
        "token importance: attention received from every row; [ours] 'question': for QA and "
        "other pairs, from the first segment's rows only (needs token_type_ids: BERT, "
        "ELECTRA, MiniLM); [ours] 'value': weighted by the norm of each token's value "
        "vector (for mean-pooled embeddings)",
        choices=tuple(REGISTRY["scorer"]),
    )
    score_radius: int = option(
        0,
        "[ours] before ranking, raise each token's score to the best within R positions of "
        "it, so the words next to a strongly attended one survive with it; for QA with "
        "--scorer question (benchmarks/README.md section 6)",
        kind="int",
        metavar="R",
    )
    merge: bool = option(
        False,
        "[ours, after ToMe] merge each removed token into its most similar survivor instead of "
        "dropping it (same FLOPs; for mean-pooled embeddings, benchmarks/README.md section 11); "
        "fixed plans only: --method static, or given with --init-from",
    )
    min_tokens: int = option(
        0,
        "[ours] token floor: an input with fewer tokens than this (CLS included) when it reaches a pruning layer "
        "keeps them all there (short texts cost little and lose the most per token removed; benchmarks/README.md "
        "section 21); fixed plans only: --method static, or given with --init-from",
        kind="non_negative_int",
        metavar="N",
    )
    layer_gates: bool = option(
        True, "fine (rank-bin) masks only, no layer gates (benchmarks/README.md compares both)", negate=True
    )
    gate_init: float = option(
        GATE_INIT,
        "initial layer-gate logit ([ours] default: gates start on, every layer may "
        "prune from the start; the authors' -3 starts them off, see "
        "benchmarks/README.md 'Gate collapse')",
        kind="float",
    )
    monotone: bool = option(False, "keep the top fraction instead of free bins")
    fit_plan: bool = option(
        True,
        "evaluate and export the authors' rounded masks as they are; by default [ours] they "
        "are fitted to the budget on the real token counts (bins dropped or given back by "
        "logit), without which short inputs (CoLA) miss the target",
        negate=True,
    )
    method: str = option(
        "top",
        "top: learned ToP masks; baselines at the same FLOPs, fine-tuned the same way: "
        "static (each layer keeps a fixed share of the most-attended tokens) or random; "
        "given: the plan of --init-from (set by it)",
        choices=tuple(REGISTRY["method"]),
    )
    init_from: str | None = option(
        None,
        "[ours] start from this pruned model (a run's best/) instead of the teacher: its weights and its plan, kept "
        "fixed (the method 'given'); with --qat, the short fine-tuning that makes its INT8 export accurate",
        metavar="FOLDER",
    )
    qat: bool = option(
        False,
        "[ours] quantisation-aware training wherever the plan is fixed (--init-from, --method static, ToP's "
        "--hard-epochs): every encoder Linear computes ONNX Runtime's dynamic INT8 and checkpoints are chosen so, "
        "for `toprune export --int8` (benchmarks/README.md 'INT8-aware fine-tuning')",
    )
    eval_every: int = option(
        50, "steps between evaluations (and checkpoints)", kind="positive_int", also=("save_every",)
    )
    save_every: int = 50
    max_train_samples: int | None = option(
        None, "train on a seeded random subset of this many examples (default: all)", kind="positive_int"
    )
    max_length: int | None = None  # None: the task's (task_defaults); an option of every command (cli._common)
    seed: int = DEFAULT_SEED  # an option of every command (cli._common)
    select_on: str = SELECT_ON[0]  # "heldout" (a held-out training slice) or "dev" (the paper's convention)
    resume: bool = option(False, "continue a killed run from its last checkpoint")
    max_steps: int | None = None  # stop early (tests); the schedule still spans ``epochs``
    train_file: str | None = None  # the user's own data instead of a GLUE task (options: cli._common)
    validation_file: str | None = None
    text_columns: str | None = None  # comma-separated
    label_column: str | None = None
    task_type: str | None = None  # "classification" or "regression" for the user's files (default: inferred)
    pooling_tokens: str = option(
        "restored",
        "pool every token (pruned ones with their state when dropped) or only the tokens that reached the last layer",
        choices=("restored", "survivors"),
        group=_EMBEDDING,
    )
    embedding_loss: str = option(
        "cosine", "distance of the pooled embedding to the teacher's", choices=EMBEDDING_LOSSES, group=_EMBEDDING
    )
    overwrite: bool = False  # a fresh run may replace an earlier run in output_dir (else it refuses)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.max_length, self.padded_length = task_defaults(self.task, self.max_length, self.padded_length)
        if self.init_from and self.method == "top":  # the default method: a pruned start trains its own plan
            self.method = "given"


def task_defaults(task: str | None, max_length: int | None, padded_length: int | None = None) -> tuple[int, int]:
    """The task-dependent defaults, for every command and the API: SQuAD windows of 384 tokens, else 128; the
    padded-FLOPs reference at the truncation length."""
    if max_length is None:
        max_length = QA_MAX_LENGTH if is_squad(task) else MAX_LENGTH
    return max_length, max_length if padded_length is None else padded_length


def resolve_layers(cfg: PruneConfig, num_layers: int) -> tuple[list[int], list[int]]:
    """Pruning layers and rank (score) layers. The authors distil into the first ~L/4 score layers, the later ones
    ranking well on their own; an answer target is distilled into every layer whose scores decide a drop."""
    layers = pruning_layers_or_default(cfg.pruning_layers, num_layers)
    if not all(1 <= layer < num_layers for layer in layers):
        raise ToPruneError(
            f"pruning layers must be in 1..{num_layers - 1} (layer 0 always sees every token), got {cfg.pruning_layers}"
        )
    if cfg.rank_layers:
        rank = sorted(set(cfg.rank_layers))
        if not all(0 <= layer < num_layers - 1 for layer in rank):
            raise ToPruneError(
                f"rank layers must be in 0..{num_layers - 2} (scores of a layer feed the next one's "
                f"pruning), got {cfg.rank_layers}"
            )
    else:
        rank = build("rank_target", cfg.rank_target).default_rank_layers(layers, num_layers)
    return layers, rank


def check_config(cfg: PruneConfig) -> None:
    """One-line errors for settings that cannot work (the target is parsed by the run itself)."""
    for name in (
        "epochs",
        "batch_size",
        "num_bins",
        "topk",
        "eval_every",
        "save_every",
        "max_length",
        "lr",
        "gate_lr",
        "lambda_lr",
        "warmup_epochs",
        "rank_alpha",
        "temperature",
    ):
        check_count(getattr(cfg, name), name)
    if not math.isfinite(cfg.hard_epochs) or cfg.hard_epochs < 0:
        raise ToPruneError(f"hard_epochs must be zero or a positive finite number, got {cfg.hard_epochs!r}")
    check_seed(cfg.seed)
    if not math.isfinite(cfg.gate_init):
        raise ToPruneError(f"gate_init must be a finite logit, got {cfg.gate_init!r}")
    for name in REGISTRY:  # method, scorer, rank_target, constraint
        build(name, getattr(cfg, name))
    if cfg.score_radius < 0:
        raise ToPruneError(f"score_radius must be >= 0, got {cfg.score_radius}")
    check_select_on(cfg.select_on)
    from .profile import BACKENDS

    if cfg.inference_backend not in BACKENDS:
        raise ToPruneError(
            f"inference_backend must be one of {', '.join(BACKENDS)} (latency profiles), got {cfg.inference_backend!r}"
        )
    if cfg.inference_batch_size < 1 or cfg.inference_threads < 0 or cfg.latency_check_examples < 0:
        raise ToPruneError("inference_batch_size must be >= 1, inference_threads and latency_check_examples >= 0")
    if cfg.convention not in ("unpadded", "padded"):
        raise ToPruneError(f"convention must be 'unpadded' or 'padded', got {cfg.convention!r}")
    build("rank_target", cfg.rank_target).check(cfg)
    if (cfg.method == "given") != bool(cfg.init_from):
        raise ToPruneError("--method given trains the plan of the model given with --init-from FOLDER: use both")
    if cfg.merge and build("method", cfg.method).learned:
        raise ToPruneError(
            "--merge runs on the real (gather) path: use it with a fixed plan (--method static, or given with "
            "--init-from); ToP's soft phase has no merge"
        )
    check_min_tokens(cfg.min_tokens)
    if cfg.min_tokens and build("method", cfg.method).learned:
        raise ToPruneError(
            "--min-tokens is a fixed plan's rule (ToP's soft phase and its budget do not model it yet): use it with "
            "--method static, or given with --init-from"
        )
    if cfg.qat and build("method", cfg.method).learned and cfg.hard_epochs <= 0:
        raise ToPruneError(
            "--qat trains under a fixed plan: add --hard-epochs N to ToP, or use --method static or --init-from"
        )
