"""Stage-1 training (speech in, text out): the loop behind ``omnishift train``.

LLaMA-Omni Stage 1 trains the adaptor and the LLM to answer spoken questions in text; the paper
compares how the LLM is allowed to change (Full-FT, Layer-LR, LoRA; :mod:`.methods`). Everything
else is shared and fixed here, so method comparisons differ only in the method:

* loss on response tokens only (the processor's labels), averaged over all response tokens of
  the optimizer step (``num_items_in_batch``), so gradient accumulation equals one big batch;
* AdamW with per-group LRs (adaptor_lr for the adaptor, lr·scale for LLM groups), cosine
  schedule with linear warm-up, global gradient-norm clipping;
* fp32 on CPU; bf16 autocast (fp32 master weights) only on CUDA;
* data order: a permutation per epoch from a generator seeded with ``seed + epoch``, so the
  order does not depend on how many RNG draws happened before (and resumes exactly);
* a non-finite loss or gradient norm stops the run, naming the step and the batch's item ids;
* ``log.jsonl`` (append + flush) and the same scalars as TensorBoard events in ``tb/``
  (:mod:`.tensorboard_log`), checkpoints every ``save_every`` steps (:mod:`.checkpoint`),
  ``resume=True`` continuing bit for bit, and ``final/`` written by ``SpeechLLM.save_pretrained``;
* the same function is every process of ``accelerate launch`` (DDP; FSDP/DeepSpeed untested):
  the global batch comes from the config alone and is split over the processes, the token
  count of the loss is all-reduced, and only the main process writes (:mod:`.distributed`).

Data seam: :func:`train` takes ``items`` (processor dicts ``{"prompt", "audio", "response"}``
plus an optional ``"id"``) directly; without them :func:`build_items` makes them from
``config.data``. Manifest wiring, synthesis and an encoder feature cache belong there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from omnishift.models.processor import IGNORE_INDEX
from omnishift.paths import atomic_write_text, ensure_writable_dir, read_jsonl_tolerant, remove_stale_temps
from omnishift.reuse import reuse_unit
from omnishift.train import distributed as dist
from omnishift.train.checkpoint import (
    LoopState,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
)
from omnishift.schema import check_same_run, without
from omnishift.train.config import TrainConfig, dump_config
from omnishift.train.methods import ParamGroup, setup_method
from omnishift.train.tensorboard_log import TB_DIR, TensorBoardLog

log = logging.getLogger(__name__)

# keys a resumed run may change without changing what it computes
_RESUME_MAY_DIFFER = {("checkpoint",), ("loop", "log_every"), ("loop", "progress"), ("out_dir",)}


def training_inputs(config: TrainConfig, model=None, items: list[dict] | None = None) -> dict:
    """What a trained folder is made from, by content: the config (less what only says where and how
    often it saves), the data rows and their audio (or the ``items`` given), the starting model (its
    folder or base parts, or the weights of the ``model`` given), and the files the method reads
    (eq. 3 coefficients, text scores). A run folder is reused or resumed only when these match."""
    from omnishift.data.sources import source_fingerprint
    from omnishift.fingerprint import items_fingerprint, model_identity
    from omnishift.models.identity import model_fingerprint
    from omnishift.reuse import content_sha256
    from omnishift.train.methods import METHODS

    opts = config.method.options or {}
    files = {o: content_sha256(opts[o]) for o in METHODS[config.method.name].inputs if opts.get(o) is not None}
    if items is not None:
        data = items_fingerprint(items)
    else:
        data = source_fingerprint(config.data.source, config.data.limit) if config.data.source else None
    start = model_identity(model) if model is not None else model_fingerprint(config.model)
    return {"config": without(config.to_dict(), _RESUME_MAY_DIFFER), "data": data, "start": start,
            "method_files": files}


def build_model(config: TrainConfig):
    """The speech LLM named by ``config.model``: a fresh adaptor on the base models, or a saved folder."""
    from omnishift.models.speech_llm import SpeechLLM

    if isinstance(config.model, str):
        return SpeechLLM.from_pretrained(config.model)
    return SpeechLLM.from_config(config.model)


def build_items(config: TrainConfig, tokenizer=None) -> list[dict]:
    """Processor items from ``config.data`` (:func:`omnishift.data.items.build_items`).

    Returns:
        ``[{"prompt", "audio", "response"}, ...]``; speech items synthesize missing audio into
        ``data.audio_dir``. Replace this function to add manifests or cached encoder features.
    """
    from omnishift.data.items import build_items as _build

    d = config.data
    if not d.source:
        raise ValueError("no training data: set data.source (e.g. instructions:alpaca_gpt4_llamafactory_demo1k) "
                         "or pass items= to train()")
    items, info = _build(d.source, d.modality, limit=d.limit, audio_dir=d.audio_dir, tokenizer=tokenizer)
    log.info("training items: %s", info)
    return items


def attach_feature_cache(config: TrainConfig, model, items: list[dict]) -> list[dict]:
    """Swap raw audio for cached encoder states when ``data.feature_cache`` is set."""
    if not config.data.feature_cache:
        return items
    from omnishift.models.feature_cache import EncoderFeatureCache

    cache = EncoderFeatureCache(config.data.feature_cache, model)
    items = cache.attach(items)
    log.info("encoder feature cache %s: %d hits, %d computed", config.data.feature_cache, cache.hits, cache.misses)
    model.use_token_cache(Path(config.data.feature_cache) / "ctc_tokens")  # beam-decoded CTC input, if any
    return items


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The item order of one epoch: ``randperm(n)`` from a generator seeded with ``seed + epoch``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def limit_response_tokens(batch: dict, n: int | None) -> dict:
    """Keep the first ``n`` labelled tokens per row and crop columns nothing needs any more.

    Later response tokens are dropped rather than re-tokenised into a shorter answer, so the
    model is never taught to end early. Works on right-padded batches (prompt before response).
    """
    if not n:
        return batch
    labels = batch["labels"]
    labelled = labels.ne(IGNORE_INDEX)
    keep = labelled & (labelled.cumsum(1) <= n)
    if keep.equal(labelled):
        return batch
    cols = torch.arange(labels.shape[1])
    length = int(torch.where(keep, cols, -1).max()) + 1
    out = dict(batch)
    out["labels"] = labels.masked_fill(labelled & ~keep, IGNORE_INDEX)
    for k in ("input_ids", "attention_mask", "labels", "speech_mask"):
        out[k] = out[k][:, :length]
    if int(out["speech_mask"].sum()) != int(batch["speech_mask"].sum()):
        raise RuntimeError("cropping the response would cut speech slots; the batch is not right-padded")
    return out


class FixedEntries:
    """Holds :attr:`ParamGroup.fixed` entries still: zero their grads, restore them after a step."""

    def __init__(self, groups: list[ParamGroup]):
        self.entries = []
        for g in groups:
            for i, idx in g.fixed.items():
                p = g.params[i]
                if not p.is_contiguous():
                    raise ValueError(f"group {g.name}: fixed entries need contiguous parameters")
                self.entries.append((p, idx, p.detach().view(-1)[idx].clone()))

    def zero_grads(self) -> None:
        for p, idx, _ in self.entries:
            if p.grad is not None:
                p.grad.view(-1).index_fill_(0, idx, 0.0)

    @torch.no_grad()
    def restore(self) -> None:
        for p, idx, values in self.entries:
            p.view(-1).index_copy_(0, idx, values)

    def count(self) -> int:
        return sum(idx.numel() for _, idx, _ in self.entries)


def build_optimizer(groups: list[ParamGroup], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one param group per :class:`ParamGroup`, ``lr = base(lr_key) · lr_scale``.

    Weight decay applies to matrices only (nanoGPT): with ``optim.weight_decay > 0`` a group's
    biases, norm gains and other 1-D tensors go to a sibling group ``NAME.no_decay`` at the same
    LR. With 0 (every shipped config) the groups stay one per :class:`ParamGroup`, as in runs and
    checkpoints made before the split.
    """
    base = {"lr": config.optim.lr, "adaptor_lr": config.optim.adaptor_lr}
    wd = config.optim.weight_decay
    out = []
    for g in groups:
        if g.lr_key not in base:
            raise ValueError(f"group {g.name}: lr_key {g.lr_key!r} must be one of {sorted(base)}")
        lr = base[g.lr_key] * g.lr_scale
        if not wd:
            out.append({"params": g.params, "lr": lr, "name": g.name, "weight_decay": 0.0})
            continue
        out.append({"params": [p for p in g.params if p.dim() >= 2], "lr": lr, "name": g.name, "weight_decay": wd})
        out.append({"params": [p for p in g.params if p.dim() < 2], "lr": lr, "name": f"{g.name}.no_decay",
                    "weight_decay": 0.0})
    return torch.optim.AdamW([g for g in out if g["params"]], weight_decay=wd)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past ``step`` (written by the killed run after its last checkpoint)."""
    if path.is_file():  # a torn last line (killed mid-write) is dropped with a warning naming the file
        keep = [r for r in read_jsonl_tolerant(path) if r["step"] <= step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _without_adaptor(model, groups: list[ParamGroup]) -> list[ParamGroup]:
    """Freeze the adaptor and drop the groups that hold only its parameters.

    Why: under a reading that is not differentiable (``ctc_top1``: token rows fill the speech slots)
    no gradient reaches the adaptor; AdamW's weight decay would still move it. Groups are matched by parameter
    identity, not by name, so a method may name or split its adaptor group as it likes.

    Args:
        model: the speech LLM.
        groups: the method's parameter groups.
    Returns:
        The groups left to train (possibly none).
    Raises:
        ValueError: a group mixes adaptor and other parameters (its fixed indices could not be kept).
    """
    model.adaptor.requires_grad_(False)
    adaptor = {id(p) for p in model.adaptor.parameters()}
    kept = []
    for g in groups:
        inside = sum(id(p) in adaptor for p in g.params)
        if 0 < inside < len(g.params):
            raise ValueError(f"parameter group {g.name!r} mixes adaptor and LLM parameters; under a "
                             "speech_input without gradient the adaptor is frozen, so give it a group of its own")
        if inside == 0:
            kept.append(g)
    return kept


def train(config: TrainConfig, model=None, items: list[dict] | None = None, resume: bool = False,
          on_step: Callable[[dict], None] | None = None) -> Path:
    """Train a speech LLM for Stage 1 and save it (one process, or every process of ``accelerate launch``).

    Args:
        config: the run (:func:`omnishift.train.config.load_config`).
        model: a :class:`SpeechLLM` to train in place (default: :func:`build_model`); LoRA wraps
            its ``llm``. On resume it must be built exactly as for the first run.
        items: processor items (default: :func:`build_items`); ``id`` keys name them in errors.
            Every process must get the same items in the same order (:mod:`.distributed`).
        resume: continue from the newest checkpoint in ``out_dir`` (start fresh if there is none).
        on_step: called with each step's log record after logging and checkpointing (progress
            hooks; tests raise from it to simulate a kill).

    Returns:
        ``out_dir/final``, loadable with ``SpeechLLM.from_pretrained``.

    Raises:
        FileExistsError: ``out_dir`` holds a run and ``resume`` is False.
        FloatingPointError: non-finite loss or gradient norm (names step and item ids).
    """
    out_dir = ensure_writable_dir(config.out_dir, "out_dir")  # before hours of work, not when it saves
    ckpt_root, log_file, final_dir = out_dir / "checkpoints", out_dir / "log.jsonl", out_dir / "final"
    if not resume and (log_file.exists() or ckpt_root.exists() or final_dir.exists()):
        raise FileExistsError(f"{out_dir} already holds a run: resume it (`omnishift train CONFIG --resume`, "
                              "resume=True) or choose a new out_dir (out_dir=...)")
    if resume:
        check_same_run(out_dir, config.to_dict(), _RESUME_MAY_DIFFER)
    if reuse_unit(out_dir, training_inputs(config, model, items), what="training run", redo=False, complete=lambda d: final_dir.is_dir(),
                  fix="train into a new out_dir (the data, starting model or method files changed)"):
        log.info("%s is already trained", final_dir)
        return final_dir
    loop_cfg, seed = config.loop, config.loop.seed
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = model if model is not None else build_model(config)
    with dist.process_state(loop_cfg.device).main_process_first():  # rank 0 synthesizes audio / fills the cache
        items = items if items is not None else build_items(config, model.tokenizer)
        items = attach_feature_cache(config, model, items)
    if not items:
        raise ValueError("no training items")
    text_only = any(it.get("audio") is None and it.get("encoder_states") is None for it in items)
    accelerator = dist.make_accelerator(loop_cfg.device, needs_unused_check=text_only)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    sharded = dist.is_sharded(accelerator)
    model.to(accelerator.device)
    groups = setup_method(model, config.method.name, config.method.options)
    if not model.reading.differentiable:  # e.g. token rows fill the speech slots: no gradient reaches the adaptor
        groups = _without_adaptor(model, groups)
        if not groups:
            raise ValueError(f"method {config.method.name} trains only the adaptor, which speech_input "
                             f"{model.config.speech_input!r} does not reach (its CTC path is read as token rows): nothing "
                             "to train; evaluate the aligned model as is, or train it with speech_input: adaptor")
    if sharded and any(g.fixed for g in groups):
        raise ValueError(f"method {config.method.name} holds entries fixed in place, which FSDP/DeepSpeed shard; "
                         "run it on one process or with DDP (configs/accelerate/ddp_gpu.yaml)")
    optimizer = build_optimizer(groups, config)
    n_batches = math.ceil(len(items) / loop_cfg.batch_size)
    total = loop_cfg.max_steps or loop_cfg.epochs * math.ceil(n_batches / loop_cfg.grad_accum)
    from transformers import get_cosine_schedule_with_warmup

    # stepped by hand once per optimizer step (accelerate's prepared scheduler would step world times)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(total * config.optim.warmup_ratio), total)
    if dist.is_deepspeed(accelerator):
        dist.set_deepspeed_micro_batch(accelerator, loop_cfg.batch_size)
    wrapped, opt = accelerator.prepare(model, optimizer)
    trainable = [p for g in groups for p in g.params]
    state = LoopState(n_items=len(items))
    if main:  # a killed run's half-written checkpoint copies (1.7 GB each for full) go first
        remove_stale_temps(ckpt_root)
        remove_stale_temps(out_dir)
    accelerator.wait_for_everyone()
    last = latest_checkpoint(ckpt_root) if resume else None
    if last is not None:
        if sharded:
            state = dist.load_sharded_checkpoint(accelerator, last, scheduler)
        else:
            state = load_checkpoint(last, model, optimizer, scheduler, rank=rank, world=world)
        if state.n_items != len(items):
            raise ValueError(f"{last} was trained on {state.n_items} items, this resume has {len(items)}; "
                             "resume with the same data")
        log.info("resumed from %s (step %d)", last, state.step)
    if resume and main:
        _truncate_log(log_file, state.step)  # records the killed run wrote after its last checkpoint
    fixed = FixedEntries(groups)  # after loading: the fixed values are the base model's either way
    if main:
        atomic_write_text(out_dir / "config.yaml", dump_config(config))
    log.info("method %s: %d trainable parameters in %d groups, %d entries held fixed; %d steps on %d process(es)",
             config.method.name, sum(p.numel() for p in trainable), len(groups), fixed.count(), total, world)

    cuda = accelerator.device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    model.train()
    model.encoder.eval()
    bar = tqdm(total=total, initial=state.step, disable=not (loop_cfg.progress and main),
               desc=f"train[{config.method.name}]")
    tb = TensorBoardLog(out_dir / TB_DIR, enabled=main, purge_step=state.step + 1 if resume else None)
    order, order_epoch, record = None, None, {}
    logfile = open(log_file, "a", encoding="utf-8") if main else contextlib.nullcontext()  # noqa: SIM115 (with below)
    with logfile as logf, contextlib.closing(bar), contextlib.closing(tb):
        while state.step < total:
            t0 = time.perf_counter()
            if order_epoch != state.epoch:
                order, order_epoch = epoch_order(len(items), seed, state.epoch), state.epoch
            stop = min(state.batch_in_epoch + loop_cfg.grad_accum, n_batches)
            micro = []  # (this rank's item indices, batch, weight)
            for b in range(state.batch_in_epoch, stop):
                whole = order[b * loop_cfg.batch_size:(b + 1) * loop_cfg.batch_size].tolist()
                idx, weight = dist.shard(whole, rank, world), 1.0
                if not idx:  # ragged last batch: no item for this rank, but it must join the all-reduce
                    idx, weight = whole[:1], 0.0
                batch = model.processor([items[i] for i in idx], padding_side="right")
                batch = limit_response_tokens(batch, config.data.max_response_tokens)
                micro.append((idx, batch, weight))
            local_target = sum(int(b["labels"][:, 1:].ne(IGNORE_INDEX).sum()) for _, b, w in micro if w)
            n_target = int(dist.all_sum(accelerator, [local_target])[0])  # response tokens of the whole step
            ids = [items[i].get("id", f"#{i}") for idx, _, w in micro if w for i in idx]
            if n_target == 0:
                raise ValueError(f"step {state.step + 1}: items {ids} have no response tokens to train on")
            loss_sum, tokens, bad = 0.0, 0, None
            for j, (idx, batch, weight) in enumerate(micro):
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                with dist.micro_step(accelerator, wrapped, sync=j == len(micro) - 1):
                    with autocast():
                        loss = wrapped(batch, num_items_in_batch=n_target).loss * weight
                    if bad is None and not torch.isfinite(loss.detach()):
                        bad = (float(loss.detach()), [items[i].get("id", f"#{i}") for i in idx])
                    accelerator.backward(loss * world)  # DDP averages over ranks; the sum is wanted
                loss_sum += float(loss.detach())
                tokens += int(batch["attention_mask"].sum()) if weight else 0
            loss_sum, tokens, n_bad = dist.all_sum(accelerator, [loss_sum, tokens, float(bad is not None)])
            if n_bad:  # every rank stops at the same step; the one(s) holding the items name them
                where = f"batch items: {bad[1]}" if bad else f"on {int(n_bad)} other process(es)"
                raise FloatingPointError(f"non-finite loss ({bad[0] if bad else 'nan'}) at step {state.step + 1} "
                                         f"(epoch {state.epoch}); {where}")
            fixed.zero_grads()
            grad_norm = accelerator.clip_grad_norm_(trainable, config.optim.max_grad_norm or float("inf"))
            grad_norm = None if grad_norm is None else float(grad_norm)  # DeepSpeed may not report it
            if grad_norm is not None and not math.isfinite(grad_norm):
                raise FloatingPointError(f"non-finite gradient norm at step {state.step + 1} (epoch {state.epoch}); "
                                         f"batch items: {ids}")
            lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
            opt.step()
            fixed.restore()
            scheduler.step()
            opt.zero_grad(set_to_none=True)

            state.step += 1
            state.batch_in_epoch = stop
            if stop == n_batches:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            seconds = time.perf_counter() - t0
            record = {"step": state.step, "epoch": round(state.epoch + state.batch_in_epoch / n_batches, 4),
                      "loss": loss_sum, "lr": lrs, "grad_norm": grad_norm, "tokens": int(tokens),
                      "target_tokens": n_target, "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}
            if main and (state.step % loop_cfg.log_every == 0 or state.step == total):
                logf.write(json.dumps(record) + "\n")
                logf.flush()
                tb.log(record)
            bar.set_postfix(loss=f"{loss_sum:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            bar.update(1)
            every = config.checkpoint.save_every
            if every and state.step % every == 0:
                _save_checkpoint(accelerator, checkpoint_path(ckpt_root, state.step), model, optimizer, scheduler,
                                 state)
                if main:
                    prune_checkpoints(ckpt_root, config.checkpoint.keep_last)
            if on_step is not None:
                on_step(record)
    dist.save_final(accelerator, wrapped, model, final_dir)
    if main:
        summary = {"method": config.method.name, "steps": state.step, "final_loss": record.get("loss"),
                   "trainable_parameters": sum(p.numel() for p in trainable), "fixed_entries": fixed.count(),
                   "processes": world}
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return final_dir


def _save_checkpoint(accelerator, path: Path, model, optimizer, scheduler, state: LoopState) -> None:
    """One resumable checkpoint: plain files from the main process, or accelerate's sharded state."""
    if dist.is_sharded(accelerator):
        def extra(tmp: Path) -> None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            atomic_write_text(tmp / "state.json", json.dumps({"loop": dataclasses.asdict(state)}) + "\n")

        dist.save_sharded_checkpoint(accelerator, path, extra)
        return
    rngs = dist.gather_rng_states(accelerator, rng_state())  # collective: every rank calls it
    if accelerator.is_main_process:
        save_checkpoint(path, model, optimizer, scheduler, state, rng_ranks=rngs)
