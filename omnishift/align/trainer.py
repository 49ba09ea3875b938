"""Adaptor alignment (``omnishift align``): teach the adaptor to carry speech content, LLM frozen.

Why a stage before Stage 1: with ~1k spoken instructions, Stage 1's cheapest way to lower the
response loss is a content-free soft prompt (LLaMA-Omni needs 100k+ examples). Aligning
the adaptor first, on tens of thousands of cheap synthetic clips and with objectives that can only
be met by carrying the words (:mod:`.objectives`), gives Stage 1 an adaptor that already listens.

The run folder, resume, step log, checkpoint cadence and AdamW are Stage 1's
(:mod:`omnishift.train.loop`); the step differs: no LLM pass for ``ctc``, and the LLM stays bit-identical, so ``final/`` stores only the adaptor
(``llm_format: "base"``). Each objective walks its own seeded item order, whose position follows
from the step alone, so a resume needs no data cursor.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

import torch
from omnishift.align.config import AlignConfig, dump_align_config
from omnishift.align.objectives import OBJECTIVES, CTCOptions, ctc_frames_needed, ctc_loss
from omnishift.models.precision import warn_slow_bf16
from omnishift.paths import atomic_write_text
from omnishift.schema import build, without
from omnishift.train.checkpoint import load_checkpoint, save_checkpoint
from omnishift.train.loop import StepLog, adamw, maybe_checkpoint, open_run, resume_from

log = logging.getLogger(__name__)


# what a resumed (or moved) run may change without changing what it computes
_MAY_DIFFER = {("out_dir",), ("loop", "progress"), ("loop", "log_every"), ("loop", "eval_every"), ("checkpoint",)}


def alignment_inputs(config: AlignConfig, model=None) -> dict:
    """What an aligned folder is made from, by content: the config (less where and how often it saves
    and logs), each alignment set's recorded inputs (``meta.json``), and the starting model (its folder
    or base parts, or the weights of the ``model`` given). A run is reused or resumed only when these match."""
    from omnishift.fingerprint import model_identity
    from omnishift.models.identity import model_fingerprint
    from omnishift.reuse import content_sha256

    sets = config.data.set if isinstance(config.data.set, list) else [config.data.set]
    metas = [content_sha256(Path(s) / "meta.json") if (Path(s) / "meta.json").is_file() else f"{s}: no set" for s in sets]
    start = model_identity(model) if model is not None else model_fingerprint(config.model)
    return {"config": without(config.to_dict(), _MAY_DIFFER), "sets": metas, "start": start}


def build_align_model(config: AlignConfig):
    """A fresh adaptor on the base models (``model`` fields) or a saved speech LLM to continue, with
    ``grow_layers`` identity-initialised context layers added (seeded by ``loop.seed``)."""
    from omnishift.models.speech_llm import SpeechLLM

    if not isinstance(config.model, str):
        return SpeechLLM.from_config(config.model)
    model = SpeechLLM.from_pretrained(config.model, reading=config.reading)
    if config.grow_layers:
        with torch.random.fork_rng():
            torch.manual_seed(config.loop.seed)
            model.adaptor.grow_context(config.grow_layers)
        model.config.adaptor_layers += config.grow_layers  # the saved folder then rebuilds the grown adaptor
    return model


def check_set_matches(model, meta: dict, where: str) -> None:
    """The set's encoder states are only valid for the same encoder, window policy, k and margin."""
    from omnishift.models.feature_cache import encoder_identity

    fp = model.processor.frame_policy
    want = {"policy": fp.policy, "k": fp.k, "margin_s": fp.margin_s, "max_frames": fp.max_frames}
    have = {k: meta["policy"].get(k) for k in want}
    if have != want:
        raise ValueError(f"{where}: alignment set was encoded with frame policy {have}, the model uses {want}; "
                         "build a set with the model's policy (omnishift data align --policy ...) or change model.*")
    if meta.get("encoder_identity") != encoder_identity(model.encoder):
        raise ValueError(f"{where}: alignment set was encoded by another encoder ({meta.get('encoder')}); "
                         "rebuild it with this model's encoder")


def add_ctc_targets(model, items: list[dict]) -> tuple[list[dict], int]:
    """Give items their transcript's LLM token ids; drop (and count) those CTC cannot fit
    (more labels + repeats than speech embeddings)."""
    tok = model.tokenizer
    kept, dropped = [], 0
    for it in items:
        ids = tok(it["text"], add_special_tokens=False)["input_ids"]
        if not ids or ctc_frames_needed(ids) > it["encoder_states"].shape[0] // model.config.k:
            dropped += 1
            continue
        kept.append({**it, "ctc_targets": ids})
    return kept, dropped


def load_sets(model, config: AlignConfig) -> tuple[list[dict], list[dict], int]:
    """Training and held-out items of the run's alignment set(s), with CTC targets.

    Each set keeps its last ``data.heldout`` usable clips out of training, so the dev WER covers
    every set (e.g. eSpeak NG and SVOX Pico voices); ``data.limit`` applies per set.

    Returns:
        ``(train items, dev items, clips dropped as CTC-infeasible)``.
    """
    from omnishift.align.dataset import load_alignment_set

    sets = [config.data.set] if isinstance(config.data.set, str) else list(config.data.set)
    if not sets:
        raise ValueError("data.set: give an alignment-set folder (or a list of them)")
    train, dev, dropped = [], [], 0
    for path in sets:
        meta, items = load_alignment_set(path, config.data.limit)
        check_set_matches(model, meta, path)
        items, d = add_ctc_targets(model, items)
        dropped += d
        if len(items) <= config.data.heldout:
            raise ValueError(f"{path}: {len(items)} usable clips, not more than data.heldout="
                             f"{config.data.heldout}; build a larger set or lower data.heldout")
        cut = len(items) - config.data.heldout
        train, dev = train + items[:cut], dev + items[cut:]
    return train, dev, dropped


def order_position(step: int, batch_size: int, n: int, seed: int, stream: int) -> list[int]:
    """Item indices of one objective's batch at ``step`` (0-based): the ``step``-th slice of an
    endless sequence of per-epoch permutations seeded with ``(seed, stream, epoch)``."""
    out, start = [], step * batch_size
    for pos in range(start, start + batch_size):
        epoch, j = divmod(pos, n)
        perm = _perm(n, seed, stream, epoch)
        out.append(int(perm[j]))
    return out


@functools.lru_cache(maxsize=8)
def _perm(n: int, seed: int, stream: int, epoch: int) -> torch.Tensor:
    """The item order of one objective's epoch (cached: a step reads one or two epochs)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + stream * 10_007 + epoch)
    return torch.randperm(n, generator=g)


@torch.no_grad()
def dev_metrics(model, items: list[dict]) -> dict:
    """CTC loss per target token and greedy-CTC WER on held-out clips (adaptor in eval mode)."""
    from omnishift.evaluate.wer import corpus_wer

    was = model.adaptor.training
    model.adaptor.eval()
    total, count = 0.0, 0
    for s in range(0, len(items), 64):
        loss, n = ctc_loss(model, items[s:s + 64], CTCOptions())
        total, count = total + float(loss), count + n
    hyps = model.ctc_transcripts([it["encoder_states"] for it in items])
    model.adaptor.train(was)
    wer = corpus_wer([(it["text"], h) for it, h in zip(items, hyps)])
    return {"dev_ctc": round(total / max(count, 1), 4), "dev_wer": wer["wer"], "dev_examples": list(zip(
        [it["text"] for it in items[:3]], hyps[:3]))}


def _llm_is_base(config: AlignConfig) -> bool:
    """Whether the (frozen) LLM is the base model named in the config, so ``final/`` needs no LLM copy."""
    if not isinstance(config.model, str):
        return True
    from omnishift.models.speech_llm import CONFIG_NAME

    return json.loads((Path(config.model) / CONFIG_NAME).read_text()).get("llm_format") == "base"


def _prepared_targets(model, config: AlignConfig, name: str, entry, items: list[dict], opts, out_dir: Path) -> None:
    """Give ``items`` the objective's prepared targets (its ``needs`` fields), computed once and
    cached in ``out_dir`` under a key of the LLM's weights, the options and the texts, so a resume
    or a rerun reuses them and a changed LLM or option recomputes them."""
    import hashlib

    from omnishift.models.feature_cache import encoder_identity  # sha256 of any module's config + weights

    key = {"llm": encoder_identity(model.llm), "objective": name, "options": vars(opts),
           "texts": [it["text"] for it in items]}
    fp = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache = out_dir / f"targets-{name}-{fp}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        for it, fields in zip(items, saved["items"]):
            it.update(fields)
        log.info("%s targets: %d reused from %s", name, len(items), cache)
        return
    was = model.training
    model.eval()
    entry.prepare(model, items, opts)
    model.train(was)
    tmp = cache.with_name(f".{cache.name}.tmp")
    torch.save({"items": [{k: it[k] for k in entry.needs} for it in items]}, tmp)
    tmp.replace(cache)


def _pools(model, config: AlignConfig, train_items: list[dict], out_dir: Path) -> list[tuple]:
    """Each objective's training items, with its prepared targets: ``[(objective config, options, items)]``."""
    pools = []
    for oc in config.objective_configs():
        entry = OBJECTIVES[oc.name]
        opts = build(entry.options, oc.options, "options")
        warn_slow_bf16(f"objective {oc.name}", opts, model.adaptor.linear1.weight.device)
        pool = entry.select(train_items, opts) if entry.select else train_items
        pool = pool[: oc.limit] if oc.limit else pool
        if not pool:
            raise ValueError(f"objective {oc.name}: no training item qualifies (options {oc.options})")
        if entry.prepare is not None:
            _prepared_targets(model, config, oc.name, entry, pool, opts, out_dir)
        pools.append((oc, opts, pool))
    return pools


def _step(model, pools: list[tuple], config: AlignConfig, optimizer, scheduler, step: int) -> dict:
    """One update: ``weight · sum / count`` of every objective on its own batch, clipped, stepped."""
    loss, parts = 0.0, {}
    for j, (oc, opts, pool) in enumerate(pools):
        batch = [pool[i] for i in order_position(step, oc.batch_size, len(pool), config.loop.seed, j)]
        s, n = OBJECTIVES[oc.name].loss(model, batch, opts)
        term = oc.weight * s / max(n, 1)
        term.backward()
        loss += float(term.detach())
        parts[oc.name] = round(float(s.detach()) / max(n, 1), 5)
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite alignment loss at step {step + 1}: {parts}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.optim.max_grad_norm or float("inf")))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": round(loss, 5), **{f"loss_{k}": v for k, v in parts.items()}, "grad_norm": round(grad_norm, 4),
            "lr": lr}


def align(config: AlignConfig, model=None, resume: bool = False, on_step: Callable[[dict], None] | None = None) -> Path:
    """Align the adaptor (see the module docstring) and save ``out_dir/final``.

    Args:
        config: the run (:func:`omnishift.align.config.load_align_config`).
        model: a speech LLM to align in place (default: :func:`build_align_model`).
        resume: continue from the newest checkpoint in ``out_dir``.
        on_step: called with each step's record (tests raise from it to simulate a kill).

    Returns:
        ``out_dir/final``, loadable with ``SpeechLLM.from_pretrained`` (the LLM is the base model).
    """
    from transformers import get_cosine_schedule_with_warmup

    run, done = open_run(config.out_dir, config.to_dict(), _MAY_DIFFER, alignment_inputs(config, model), resume,
                         "alignment run", resume_hint="--resume", fix="align into a new out_dir (the sets or the "
                         "starting model changed)")
    if done:
        return run.final
    torch.manual_seed(config.loop.seed)
    model = model if model is not None else build_align_model(config)
    train_items, dev, dropped = load_sets(model, config)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    pools = _pools(model, config, train_items, run.out_dir)
    for oc, opts, _ in pools:
        if OBJECTIVES[oc.name].before_training is not None:
            OBJECTIVES[oc.name].before_training(model, opts)
    model.requires_grad_(False)
    model.adaptor.requires_grad_(True)
    optimizer = adamw([("adaptor", list(model.adaptor.parameters()), config.optim.lr)], config.optim.weight_decay)
    total = config.loop.max_steps
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(total * config.optim.warmup_ratio), total)
    state = resume_from(run, resume, lambda last: load_checkpoint(last, model, optimizer, scheduler), len(train_items))
    atomic_write_text(run.out_dir / "config.yaml", dump_align_config(config))
    info = {"clips": len(train_items) + len(dev) + dropped, "dropped_ctc_infeasible": dropped,
            "train": len(train_items), "dev": len(dev), "pools": {f"{oc.name}": len(p) for oc, _, p in pools}}
    atomic_write_text(run.out_dir / "data.json", json.dumps(info, indent=2) + "\n")
    log.info("alignment data: %s", info)
    model.train()
    model.llm.eval()
    model.encoder.eval()
    record: dict = {}
    with StepLog(run, total, state.step, "align", config.loop.progress) as steps:
        while state.step < total:
            t0 = time.perf_counter()
            record = {"step": state.step + 1, **_step(model, pools, config, optimizer, scheduler, state.step)}
            state.step += 1
            record["seconds"] = round(time.perf_counter() - t0, 3)
            every = config.loop.eval_every
            if (every and state.step % every == 0) or state.step == total:
                record.update(dev_metrics(model, dev))
            steps.step(record, state.step % config.loop.log_every == 0 or "dev_wer" in record,
                       loss=f"{record['loss']:.3f}", **({"dev_wer": f"{record['dev_wer']:.3f}"} if "dev_wer" in record else {}))
            maybe_checkpoint(run, state.step, config.checkpoint.save_every, config.checkpoint.keep_last,
                             lambda path: save_checkpoint(path, model, optimizer, scheduler, state))
            if on_step is not None:
                on_step(record)
    model.eval()
    model.save_pretrained(run.final, llm_is_base=_llm_is_base(config))
    summary = {"steps": state.step, "final_loss": record.get("loss"), **{k: record[k] for k in ("dev_ctc", "dev_wer")
               if k in record}, "data": info, "adaptor_parameters": sum(p.numel() for p in model.adaptor.parameters())}
    atomic_write_text(run.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return run.final
