"""Settings of a pruning run (one dataclass, the authors' defaults) and their checks, which fail before anything
is loaded: the CLI, the Python API and the study build runs from this."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import ToPruneError
from .gates import GATE_INIT
from .plan import default_pruning_layers
from .selection import check_select_on
from .squad import is_squad
from .validate import check_count, check_seed

METHODS = ("top", "static", "random")
SCORERS = ("attention", "question")
RANK_TARGETS = ("attention", "answer")


@dataclass
class PruneConfig:
    teacher: str  # folder of the fine-tuned dense model (also the student's initialisation)
    task: str
    data_dir: str
    output_dir: str
    target: str = "2x"  # a FLOPs reduction ("2.5x") or a sparsity ("0.6")
    convention: str = "unpadded"  # or "padded": against the dense model padded to padded_length
    constraint: str = "flops"  # [ours] "latency": the target is a speed-up predicted by a measured profile
    inference_batch_size: int = 1  # latency constraint: the batch size, backend and threads the model will serve at
    inference_backend: str = "pytorch"
    inference_threads: int = 0  # 0: torch's default on this machine
    latency_profile: str | None = None  # a saved `toprune profile` file (else measured now, cached per machine)
    padded_length: int = 128
    epochs: float = 5.0
    warmup_epochs: float = 2.0  # target sparsity ramps linearly over this
    hard_epochs: float = 0.0  # [ours] last epochs: plan frozen, weights trained with the tokens really removed
    batch_size: int = 32
    lr: float = 5e-5
    gate_lr: float = 0.05
    lambda_lr: float = 0.05
    lambda_anti_windup: bool = True  # [ours] lambda1 never pushes away from the target (False: the authors' ascent)
    num_bins: int = 20
    topk: int = 10
    rank_alpha: float = 1e-2
    temperature: float = 2.0
    pruning_layers: list[int] | None = None
    rank_layers: list[int] | None = None
    ranking: bool = True  # ablation: ranking distillation off
    rank_target: str = "attention"  # [ours] QA: "answer" distils the teacher's answer relevance, not its attention
    scorer: str = "attention"  # [ours] "question": attention received from the question rows only
    # [ours] spread each score to its +-r neighbours before ranking (QA: keep the answer's window)
    score_radius: int = 0
    layer_gates: bool = True  # ablation: fine masks only
    gate_init: float = GATE_INIT  # initial layer-gate logit; -3.0 is the authors' (gates start off)
    monotone: bool = False  # keep the top fraction instead of free bins
    fit_plan: bool = True  # [ours] deterministic plans fitted to the budget on real token counts (see fit_plan)
    method: str = "top"  # baselines: "static" (fixed top-k by attention) or "random" (fixed counts, random tokens)
    eval_every: int = 50
    save_every: int = 50
    max_train_samples: int | None = None
    max_length: int = 128
    seed: int = 57
    select_on: str = "heldout"  # checkpoints chosen on a held-out training slice; "dev": the paper's convention
    resume: bool = False
    max_steps: int | None = None  # stop early (tests); the schedule still spans ``epochs``
    train_file: str | None = None  # the user's own data instead of a GLUE task
    validation_file: str | None = None
    text_columns: str | None = None  # comma-separated
    label_column: str | None = None
    task_type: str | None = None  # "classification" or "regression" for the user's files (default: inferred)
    pooling_tokens: str = "restored"  # task "embedding": pool every token's (restored) state, or the survivors only
    embedding_loss: str = "cosine"  # task "embedding": "cosine", "mse" or "cosine+mse" to the teacher's embedding
    overwrite: bool = False  # a fresh run may replace an earlier run in output_dir (else it refuses)
    extra: dict = field(default_factory=dict)


def resolve_layers(cfg: PruneConfig, num_layers: int) -> tuple[list[int], list[int]]:
    """Pruning layers and rank (score) layers. The authors distil into the first ~L/4 score layers, the later ones
    ranking well on their own; an answer target is distilled into every layer whose scores decide a drop."""
    layers = sorted(set(cfg.pruning_layers)) if cfg.pruning_layers else default_pruning_layers(num_layers)
    if not all(1 <= layer < num_layers for layer in layers):
        raise ToPruneError(f"pruning layers must be in 1..{num_layers - 1} (layer 0 always sees every token), "
                           f"got {cfg.pruning_layers}")
    first = layers[0]
    if cfg.rank_layers:
        rank = sorted(set(cfg.rank_layers))
        if not all(0 <= layer < num_layers - 1 for layer in rank):
            raise ToPruneError(f"rank layers must be in 0..{num_layers - 2} (scores of a layer feed the next one's "
                               f"pruning), got {cfg.rank_layers}")
    elif cfg.rank_target == "answer":
        rank = [layer - 1 for layer in layers]
    else:
        rank = list(range(first - 1, first - 1 + max(1, round(num_layers / 4))))
    return layers, rank


def check_config(cfg: PruneConfig) -> None:
    """One-line errors for settings that cannot work (the target is parsed by the run itself)."""
    for name in ("epochs", "batch_size", "num_bins", "topk", "eval_every", "save_every", "max_length", "lr",
                 "gate_lr", "lambda_lr", "warmup_epochs", "rank_alpha", "temperature"):
        check_count(getattr(cfg, name), name)
    if not math.isfinite(cfg.hard_epochs) or cfg.hard_epochs < 0:
        raise ToPruneError(f"hard_epochs must be zero or a positive finite number, got {cfg.hard_epochs!r}")
    check_seed(cfg.seed)
    if not math.isfinite(cfg.gate_init):
        raise ToPruneError(f"gate_init must be a finite logit, got {cfg.gate_init!r}")
    if cfg.method not in METHODS:
        raise ToPruneError(f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    for name, allowed in (("scorer", SCORERS), ("rank_target", RANK_TARGETS)):
        if getattr(cfg, name) not in allowed:
            raise ToPruneError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.score_radius < 0:
        raise ToPruneError(f"score_radius must be >= 0, got {cfg.score_radius}")
    check_select_on(cfg.select_on)
    from .constraint import CONSTRAINTS
    from .profile import BACKENDS

    if cfg.constraint not in CONSTRAINTS:
        raise ToPruneError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got {cfg.constraint!r}")
    if cfg.inference_backend not in BACKENDS:
        raise ToPruneError(f"inference_backend must be one of {', '.join(BACKENDS)} (latency profiles), got "
                           f"{cfg.inference_backend!r}")
    if cfg.inference_batch_size < 1 or cfg.inference_threads < 0:
        raise ToPruneError("inference_batch_size must be >= 1 and inference_threads >= 0")
    if cfg.convention not in ("unpadded", "padded"):
        raise ToPruneError(f"convention must be 'unpadded' or 'padded', got {cfg.convention!r}")
    if cfg.rank_target == "answer" and not is_squad(cfg.task):
        raise ToPruneError("--rank-target answer needs a question-answering task (squad, squad_v2)")
