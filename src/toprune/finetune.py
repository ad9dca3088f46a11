"""Dense teacher fine-tuning: the task's recipe (:mod:`toprune.recipes`), selection on the held-out slice of the
training data, the dev set read once, a checkpoint every epoch (``resume``)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .errors import ToPruneError
from .plan import PLAN_FILENAME
from .pretrained import load_model, load_tokenizer, resolve_model, save_pruned
from .recipes import teacher_recipe
from .report import WallTimeEstimate, setup_facts, setup_lines
from .runfolder import make_folder
from .safeio import LOCK_FILENAME, atomic_save_file, atomic_write_text, check_writable, run_lock
from .task_spec import task_spec, write_task
from .train import (
    check_qa_head,
    default_device,
    evaluate,
    head_logits,
    make_loader,
    prepare_data,
    seed_everything,
    split_targets,
    supervised_loss,
)
from .validate import (
    DEFAULT_SEED,
    check_count,
    check_encoder_complete,
    check_finite_loss,
    check_finite_weights,
    check_max_length,
    training_steps,
)


def finetune_teacher(
    model_name: str,
    task_name: str | None,
    data_dir,
    output_dir,
    epochs: float | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    max_length: int = 128,
    max_train_samples: int | None = None,
    seed: int = DEFAULT_SEED,
    log=print,
    select_on: str = "heldout",
    resume: bool = False,
    overwrite: bool = False,
    **user_files,
) -> dict:
    """Dense fine-tuning with the task's recipe (:mod:`toprune.recipes`; explicit arguments override it).

    The selection set (the held-out training slice, or dev with ``select_on="dev"``) is evaluated after every epoch;
    the best epoch's weights are kept and saved as an HF folder, and the dev set is evaluated once, on them.
    Every epoch ends with ``OUTPUT/checkpoint.pt``; ``resume=True`` continues from it to the same result (the file
    is removed once the model is saved).
    ``user_files``: train_file, validation_file, text_columns, label_column, task_type for the user's own data.
    ``output_dir`` must be new or empty unless ``overwrite`` or ``resume``; it is checked writable before anything
    trains.
    """
    recipe = teacher_recipe(
        task_name if not user_files.get("train_file") else None, epochs=epochs, lr=lr, batch_size=batch_size
    )
    for name, value in (("epochs", recipe.epochs), ("lr", recipe.lr), ("batch_size", recipe.batch_size)):
        check_count(value, name)
    check_writable(output_dir)
    out = Path(output_dir)
    resumable = resume and (out / "checkpoint.pt").is_file()
    if not (overwrite or resumable) and out.is_dir() and any(p.name != LOCK_FILENAME for p in out.iterdir()):
        raise ToPruneError(f"--output {out} already holds files; give a new --output or pass --overwrite")
    make_folder(out)
    with run_lock(out):  # a second run into this folder refuses while this one writes
        return _finetune(
            model_name,
            task_name,
            data_dir,
            output_dir,
            recipe,
            max_length,
            max_train_samples,
            seed,
            log,
            select_on,
            resume,
            user_files,
        )


def _finetune(
    model_name,
    task_name,
    data_dir,
    output_dir,
    recipe,
    max_length,
    max_train_samples,
    seed,
    log,
    select_on,
    resume,
    user_files,
) -> dict:
    seed_everything(seed)
    tokenizer = load_tokenizer(model_name)
    data = prepare_data(
        tokenizer, task_name, data_dir, max_length, max_train_samples, seed, select_on=select_on, **user_files
    )
    device = default_device()
    if Path(resolve_model(model_name), PLAN_FILENAME).is_file():
        raise ToPruneError(f"--model {model_name} is a pruned model; fine-tune the dense model")
    model = load_model(model_name, auto_class=data.auto_class, num_labels=data.num_labels).to(device)
    check_qa_head(model, model_name, data)
    check_encoder_complete(model, str(model_name))
    check_max_length(model.config, max_length, str(model_name))
    if data.kind != "qa":
        model.config.id2label = {i: name for i, name in enumerate(data.labels or ("score",))}
        model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    steps_per_epoch, total = training_steps(len(data.train), recipe.batch_size, recipe.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup * total), total)
    setup = setup_facts(
        data,
        {
            "epochs": recipe.epochs,
            "steps": total,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": recipe.batch_size,
            "lr": recipe.lr,
            "warmup_steps": int(recipe.warmup * total),
            "max_length": max_length,
        },
    )
    for line in setup_lines(setup):  # the recipe, the selection slice and the data, said once
        log(line)
    select_loader = make_loader(data.select_set, tokenizer, 64, False)
    step, epoch, seconds, curve, best = 0, 0, 0.0, [], None
    checkpoint = Path(output_dir) / "checkpoint.pt"
    settings = dict(
        model=str(model_name),
        task=data.name,
        recipe=asdict(recipe),
        max_length=max_length,
        max_train_samples=max_train_samples,
        seed=seed,
        select_on=select_on,
        **{k: str(v) for k, v in user_files.items() if v},
    )
    if resume and checkpoint.is_file():
        blob = torch.load(checkpoint, weights_only=False, map_location=device)
        if blob["settings"] != settings:
            raise ToPruneError(
                f"cannot resume {checkpoint}: it was started with other settings; use a new --output "
                "or the same options"
            )
        model.load_state_dict(blob["model"]), optimizer.load_state_dict(blob["optimizer"])
        schedule.load_state_dict(blob["schedule"])
        step, epoch, seconds, curve, best = (blob[k] for k in ("step", "epoch", "seconds", "curve", "best"))
        torch.set_rng_state(blob["rng"])
        log(f"resumed from epoch {epoch} (step {step})")
    eta = WallTimeEstimate(total, log, done=step, extra=", plus an evaluation of the selection set every epoch")
    bar = tqdm(total=total, initial=step, desc=f"fine-tuning {data.name}")
    while step < total:
        model.train()
        # length-grouped batches: less padding per step, same examples per epoch
        for batch in make_loader(data.train, tokenizer, recipe.batch_size, True, seed, epoch, group_by_length=True):
            batch = {k: v.to(device) for k, v in batch.items()}
            started = time.perf_counter()
            inputs, targets = split_targets(batch)
            loss = supervised_loss(head_logits(model(**inputs)), targets, data)
            check_finite_loss(loss.item(), step + 1, "nothing was saved; lower --lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step(), schedule.step(), optimizer.zero_grad()
            seconds += time.perf_counter() - started  # same span as ToPRun's step time, for the cost ratio
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            eta.step()
            if step >= total:
                break
        epoch += 1
        score = evaluate(model, select_loader, data.on_selection(), padded_length=max_length)["metric"]
        curve.append({"epoch": round(step / steps_per_epoch, 3), "step": step, "selection_metric": score})
        if best is None or score > best[0]:
            best = (score, step, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        if step < total:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            blob = dict(
                settings=settings,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                schedule=schedule.state_dict(),
                step=step,
                epoch=epoch,
                seconds=seconds,
                curve=curve,
                best=best,
                rng=torch.get_rng_state(),
            )
            # atomic: a kill mid-save keeps the previous checkpoint
            atomic_save_file(checkpoint, lambda tmp, blob=blob: torch.save(blob, tmp))
    bar.close()
    model.load_state_dict(best[2])
    check_finite_weights(model, str(model_name), "nothing was saved; lower --lr")
    save_pruned(model, output_dir, tokenizer)  # saved before evaluating: a failed evaluation loses no training
    write_task(output_dir, task_spec(data, max_length))  # eval/bench/export/show need nothing twice
    result = evaluate(model, make_loader(data.dev, tokenizer, 64, False), data, padded_length=max_length)
    result.update(
        task=data.name,
        steps=step,
        kept_step=best[1],
        selection_metric=best[0],
        selection=data.selection_info.as_dict(),
        selection_curve=curve,
        epochs=recipe.epochs,
        lr=recipe.lr,
        warmup=recipe.warmup,
        batch_size=recipe.batch_size,
        train_examples=len(data.train),
        seed=seed,
        mean_step_ms=1000 * seconds / max(1, step),
        setup=setup,
        time_estimate=eta.estimate,
    )
    atomic_write_text(Path(output_dir, "toprune_teacher.json"), json.dumps(result, indent=1) + "\n")
    checkpoint.unlink(missing_ok=True)  # the run is complete: its resume state is no longer needed
    log(
        f"teacher {data.name}: kept step {best[1]} of {step} ({data.metric} {best[0]:.2f} on the selection set); "
        f"{data.metric} {result['metric']:.2f} on dev ({len(data.dev)} examples)"
    )
    return result
