"""Stage-1 training (speech in, text out): the loop behind ``omnishift train``.

LLaMA-Omni Stage 1 trains the adaptor and the LLM to answer spoken questions in text; the paper
compares how the LLM is allowed to change (Full-FT, Layer-LR, LoRA; :mod:`.methods`). Everything
else is shared and fixed here, so method comparisons differ only in the method:

* loss on response tokens only (the processor's labels), averaged over all response tokens of
  the optimizer step (``num_items_in_batch``), so gradient accumulation equals one big batch;
* AdamW with per-group LRs (adaptor_lr for the adaptor, lr·scale for LLM groups), cosine
  schedule with linear warm-up, global gradient-norm clipping;
* ``loop.precision``: bf16 autocast with fp32 master weights on CUDA, fp32 on the CPU unless the
  config asks for bf16 there (:func:`autocast_for`);
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
from typing import Callable, NamedTuple

import numpy as np
import torch

from omnishift.models.precision import native_bf16
from omnishift.models.processor import IGNORE_INDEX
from omnishift.models.speech_inputs import SPEECH_INPUTS
from omnishift.paths import atomic_write_text
from omnishift.schema import without
from omnishift.train import distributed as dist
from omnishift.train.checkpoint import LoopState, load_checkpoint, rng_state, save_checkpoint
from omnishift.train.loop import StepLog, adamw, maybe_checkpoint, open_run, resume_from
from omnishift.train.config import TrainConfig, dump_config
from omnishift.train.methods import ParamGroup, setup_method
from omnishift.train.tensorboard_log import TB_DIR, TensorBoardLog

log = logging.getLogger(__name__)

# keys a resumed run may change without changing what it computes
PROBES = "probes"  # forgetting-curve points of a run (``train(probe=...)``)
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
    from omnishift.train.methods import METHODS

    modality = METHODS[config.method.name].modality or d.modality  # the text control reads text
    from omnishift.data.voices import SpeakerMix

    speakers = SpeakerMix(d.engines, d.speaker_seed) if d.engines else None
    items, info = _build(d.source, modality, limit=d.limit, audio_dir=d.audio_dir, tokenizer=tokenizer,
                         speakers=speakers)
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
    """AdamW with one param group per :class:`ParamGroup`, ``lr = base(lr_key) · lr_scale``; weight
    decay on matrices only (:func:`~omnishift.train.loop.adamw`)."""
    base = {"lr": config.optim.lr, "adaptor_lr": config.optim.adaptor_lr}
    for g in groups:
        if g.lr_key not in base:
            raise ValueError(f"group {g.name}: lr_key {g.lr_key!r} must be one of {sorted(base)}")
    return adamw([(g.name, g.params, base[g.lr_key] * g.lr_scale) for g in groups], config.optim.weight_decay)


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


class _Run(NamedTuple):
    """A set-up Stage-1 run: the model and its items, the processes, what trains, and how."""

    model: object
    items: list
    accelerator: object
    groups: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    wrapped: object  # the model as accelerate prepared it
    opt: object  # the optimizer as accelerate prepared it
    total: int
    n_batches: int


def _set_up(config: TrainConfig, model, items: list[dict] | None) -> _Run:
    """Build (or take) the model and items, the accelerator, the method's groups and the optimizer."""
    loop_cfg = config.loop
    model = model if model is not None else build_model(config)
    with dist.process_state(loop_cfg.device).main_process_first():  # rank 0 synthesizes audio / fills the cache
        items = items if items is not None else build_items(config, model.tokenizer)
        items = attach_feature_cache(config, model, items)
    if not items:
        raise ValueError("no training items")
    text_only = any(it.get("audio") is None and it.get("encoder_states") is None for it in items)
    accelerator = dist.make_accelerator(loop_cfg.device, needs_unused_check=text_only)
    model.to(accelerator.device)
    groups = setup_method(model, config.method.name, config.method.options)
    if not model.reading.differentiable:  # e.g. token rows fill the speech slots: no gradient reaches the adaptor
        groups = _without_adaptor(model, groups)
        if not groups:
            raise ValueError(f"method {config.method.name} trains only the adaptor, which speech_input "
                             f"{model.config.speech_input!r} does not reach (it reads token rows): nothing "
                             "to train; evaluate the aligned model as is, or read it with a differentiable "
                             f"speech_input ({', '.join(n for n, r in SPEECH_INPUTS.items() if r.differentiable)})")
    if dist.is_sharded(accelerator) and any(g.fixed for g in groups):
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
    return _Run(model, items, accelerator, groups, optimizer, scheduler, wrapped, opt, total, n_batches)


def _load(r: _Run, last: Path):
    """The loop state of checkpoint ``last``, its tensors loaded into the run."""
    acc = r.accelerator
    if dist.is_sharded(acc):
        state = dist.load_sharded_checkpoint(acc, last, r.scheduler)
    else:
        state = load_checkpoint(last, r.model, r.optimizer, r.scheduler, rank=acc.process_index,
                                world=acc.num_processes)
    log.info("resumed from %s (step %d)", last, state.step)
    return state


def _micro_batches(r: _Run, config: TrainConfig, order: torch.Tensor, state: LoopState) -> tuple[list, int, int]:
    """This rank's micro-batches of the next optimizer step: ``[(item indices, batch, weight)]``, the
    response tokens of the whole step over all ranks, and the batch index the step ends at."""
    bs, rank, world = config.loop.batch_size, r.accelerator.process_index, r.accelerator.num_processes
    stop = min(state.batch_in_epoch + config.loop.grad_accum, r.n_batches)
    micro = []
    for b in range(state.batch_in_epoch, stop):
        whole = order[b * bs:(b + 1) * bs].tolist()
        idx, weight = dist.shard(whole, rank, world), 1.0
        if not idx:  # ragged last batch: no item for this rank, but it must join the all-reduce
            idx, weight = whole[:1], 0.0
        batch = r.model.processor([r.items[i] for i in idx], padding_side="right")
        micro.append((idx, limit_response_tokens(batch, config.data.max_response_tokens), weight))
    local = sum(int(b["labels"][:, 1:].ne(IGNORE_INDEX).sum()) for _, b, w in micro if w)
    n_target = int(dist.all_sum(r.accelerator, [local])[0])
    if n_target == 0:
        ids = [r.items[i].get("id", f"#{i}") for idx, _, w in micro if w for i in idx]
        raise ValueError(f"step {state.step + 1}: items {ids} have no response tokens to train on")
    return micro, n_target, stop


def _step(r: _Run, config: TrainConfig, micro: list, n_target: int, fixed: "FixedEntries", state: LoopState,
          autocast) -> dict:
    """One optimizer step over ``micro``: the loss summed over ranks, clipped gradients, the update.
    A non-finite loss or gradient norm stops every rank at the same step, naming the items."""
    acc, items = r.accelerator, r.items
    world = acc.num_processes
    loss_sum, tokens, bad = 0.0, 0, None
    for j, (idx, batch, weight) in enumerate(micro):
        batch = {k: v.to(acc.device) for k, v in batch.items()}
        with dist.micro_step(acc, r.wrapped, sync=j == len(micro) - 1):
            with autocast():
                loss = r.wrapped(batch, num_items_in_batch=n_target).loss * weight
            if bad is None and not torch.isfinite(loss.detach()):
                bad = (float(loss.detach()), [items[i].get("id", f"#{i}") for i in idx])
            acc.backward(loss * world)  # DDP averages over ranks; the sum is wanted
        loss_sum += float(loss.detach())
        tokens += int(batch["attention_mask"].sum()) if weight else 0
    loss_sum, tokens, n_bad = dist.all_sum(acc, [loss_sum, tokens, float(bad is not None)])
    if n_bad:  # the rank(s) holding the items name them
        where = f"batch items: {bad[1]}" if bad else f"on {int(n_bad)} other process(es)"
        raise FloatingPointError(f"non-finite loss ({bad[0] if bad else 'nan'}) at step {state.step + 1} "
                                 f"(epoch {state.epoch}); {where}")
    fixed.zero_grads()
    trainable = [p for g in r.groups for p in g.params]
    grad_norm = acc.clip_grad_norm_(trainable, config.optim.max_grad_norm or float("inf"))
    grad_norm = None if grad_norm is None else float(grad_norm)  # DeepSpeed may not report it
    if grad_norm is not None and not math.isfinite(grad_norm):
        ids = [items[i].get("id", f"#{i}") for idx, _, w in micro if w for i in idx]
        raise FloatingPointError(f"non-finite gradient norm at step {state.step + 1} (epoch {state.epoch}); "
                                 f"batch items: {ids}")
    lrs = {g["name"]: g["lr"] for g in r.optimizer.param_groups}
    r.opt.step()
    fixed.restore()
    r.scheduler.step()
    r.opt.zero_grad(set_to_none=True)
    return {"loss": loss_sum, "lr": lrs, "grad_norm": grad_norm, "tokens": int(tokens), "target_tokens": n_target}


def train(config: TrainConfig, model=None, items: list[dict] | None = None, resume: bool = False,
          on_step: Callable[[dict], None] | None = None, probe=None) -> Path:
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
        probe: a measurement of the model during training (a forgetting curve:
            :class:`omnishift.evaluate.drift.DriftProbe`): ``probe(model, step) -> dict`` with an
            ``every`` attribute, run on the main process at step 0, every ``every`` steps and at
            the end, each result written to ``out_dir/probes/step-NNNNNNNN.json``.

    Returns:
        ``out_dir/final``, loadable with ``SpeechLLM.from_pretrained``.

    Raises:
        FileExistsError: ``out_dir`` holds a run and ``resume`` is False.
        FloatingPointError: non-finite loss or gradient norm (names step and item ids).
    """
    run, done = open_run(config.out_dir, config.to_dict(), _RESUME_MAY_DIFFER, training_inputs(config, model, items),
                         resume, "training run", resume_hint="`omnishift train CONFIG --resume`, resume=True",
                         fix="train into a new out_dir (the data, starting model or method files changed)")
    if done:
        log.info("%s is already trained", run.final)
        return run.final
    torch.manual_seed(config.loop.seed)
    np.random.seed(config.loop.seed)
    random.seed(config.loop.seed)
    r = _set_up(config, model, items)
    acc, main = r.accelerator, r.accelerator.is_main_process
    state = resume_from(run, resume, lambda last: _load(r, last), len(r.items), main, acc.wait_for_everyone)
    fixed = FixedEntries(r.groups)  # after loading: the fixed values are the base model's either way
    if main:
        atomic_write_text(run.out_dir / "config.yaml", dump_config(config))
    n_trainable = sum(p.numel() for g in r.groups for p in g.params)
    log.info("method %s: %d trainable parameters in %d groups, %d entries held fixed; %d steps on %d process(es)",
             config.method.name, n_trainable, len(r.groups), fixed.count(), r.total, acc.num_processes)
    autocast = autocast_for(config.loop.precision, acc.device)
    r.model.train()
    r.model.encoder.eval()
    tb = TensorBoardLog(run.out_dir / TB_DIR, enabled=main, purge_step=state.step + 1 if resume else None)
    order, order_epoch, record = None, None, {}
    measure = _Probe(probe, run.out_dir / PROBES, r.model, r.total, main and not dist.is_sharded(acc))
    measure(state.step)
    with StepLog(run, r.total, state.step, f"train[{config.method.name}]", config.loop.progress, main, (tb,)) as steps:
        while state.step < r.total:
            t0 = time.perf_counter()
            if order_epoch != state.epoch:
                order, order_epoch = epoch_order(len(r.items), config.loop.seed, state.epoch), state.epoch
            micro, n_target, stop = _micro_batches(r, config, order, state)
            out = _step(r, config, micro, n_target, fixed, state, autocast)
            state.step, state.batch_in_epoch = state.step + 1, stop
            if stop == r.n_batches:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            record = {"step": state.step, "epoch": round(state.epoch + state.batch_in_epoch / r.n_batches, 4), **out,
                      "tokens_per_s": round(out["tokens"] / max(time.perf_counter() - t0, 1e-9), 1)}
            steps.step(record, state.step % config.loop.log_every == 0, loss=f"{out['loss']:.4f}",
                       tok_s=f"{record['tokens_per_s']:.0f}")
            maybe_checkpoint(run, state.step, config.checkpoint.save_every, config.checkpoint.keep_last,
                             lambda path: _save_checkpoint(acc, path, r.model, r.optimizer, r.scheduler, state), main)
            measure(state.step)
            if on_step is not None:
                on_step(record)
    dist.save_final(acc, r.wrapped, r.model, run.final)
    if main:
        summary = {"method": config.method.name, "steps": state.step, "final_loss": record.get("loss"),
                   "trainable_parameters": n_trainable, "fixed_entries": fixed.count(), "processes": acc.num_processes}
        atomic_write_text(run.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return run.final


def autocast_for(precision: str, device: torch.device) -> Callable:
    """A factory of the training step's autocast context for ``loop.precision`` on ``device``.

    Why a factory: each micro-step opens a fresh context. bf16 on a CPU without native bfloat16 is
    allowed (the config's choice, so a run's arithmetic never depends on the machine) but warned about,
    since there it runs many times slower than fp32.
    """
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext
    if not native_bf16(device):
        log.warning("loop.precision=%s asks for bfloat16 on a %s without native bfloat16 (no AVX512-BF16 or AMX): "
                    "bfloat16 products run many times slower than float32 here (benchmarks/bf16_matmul.py); set "
                    "loop.precision=fp32 to train at float32 speed", precision, device.type)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


class _Probe:
    """Runs ``probe`` at step 0, every ``probe.every`` steps and at the last one, once per step: a
    result already on disk (a resumed run passing the step again) is kept, since training is
    deterministic on resume."""

    def __init__(self, probe, folder: Path, model, total: int, main: bool):
        self.probe, self.folder, self.model, self.total = (probe if main else None), folder, model, total
        self.identity = getattr(self.probe, "identity", None)
        for path in sorted(folder.glob("step-*.json")) if self.probe is not None else []:
            if json.loads(path.read_text(encoding="utf-8")).get("probe") != self.identity:
                raise ValueError(f"{path} was measured by another probe (other prompts, base model or settings): "
                                 f"delete {folder} to measure the curve again, or train into a new out_dir")

    def __call__(self, step: int) -> None:
        every = getattr(self.probe, "every", 0)
        if self.probe is None or not (step == 0 or step == self.total or (every and step % every == 0)):
            return
        path = self.folder / f"step-{step:08d}.json"
        if path.is_file():  # checked to be this probe's when the run opened
            return
        was_training = self.model.training
        self.model.eval()
        try:
            result = self.probe(self.model, step)
        finally:
            self.model.train(was_training)
            self.model.encoder.eval()
        atomic_write_text(path, json.dumps({"step": step, "probe": self.identity, **result}) + "\n")


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
