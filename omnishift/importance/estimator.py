"""First-order Taylor importance I(θ) = |∂L/∂θ ⊙ θ| of every LLM parameter (paper eq. 2).

L is the mean token NLL of the response given the prompt, as text or as speech (same response
tokens, so the two are comparable). Two accumulation modes:

``dataset``  eq. 2 taken literally: the gradient of the loss over the whole set. Each batch's loss
             is its summed token NLL divided by the number of response tokens in the *whole* set,
             so gradients summed across batches are exactly ∂L_D/∂θ; |g ⊙ θ| is taken once at the
             end. Memory: only the ``.grad`` buffers (what the public "linguistic regions" code does).
``batch``    Σ_b |g_b ⊙ θ| with g_b the gradient of batch b's mean token NLL: sign cancellations
             between batches no longer hide a parameter. Memory: one extra score buffer.

A pass is resumable: every ``save_every`` batches the accumulator (grads or scores) and the batch
counter are written atomically to ``out_dir/state``; a rerun with the same settings continues.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from omnishift.importance.scores import save_scores
from omnishift.models.processor import IGNORE_INDEX
from omnishift.paths import atomic_dir


@dataclass
class ImportanceConfig:
    """Settings of one importance pass.

    Args:
        mode: ``dataset`` or ``batch`` (see module docstring).
        modality: ``text`` or ``speech``: recorded in the metadata; the items decide the input.
        fraction: share of the items used (the paper uses 1/30 of the training set).
        batch_size: items per forward/backward.
        seed: seed of the subset choice and order.
        dtype: score dtype on disk, ``float32`` or ``bfloat16``.
        save_every: batches between resume checkpoints (0 = never).
    """

    mode: str = "dataset"
    modality: str = "text"
    fraction: float = 1.0
    batch_size: int = 4
    seed: int = 0
    dtype: str = "float32"
    save_every: int = 25

    def __post_init__(self):
        if self.mode not in ("dataset", "batch"):
            raise ValueError(f"importance mode {self.mode!r} unknown: use 'dataset' or 'batch'")
        if self.modality not in ("text", "speech"):
            raise ValueError(f"modality {self.modality!r} unknown: use 'text' or 'speech'")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"score dtype {self.dtype!r} unsupported: use float32 or bfloat16")


def select_items(items: list, fraction: float, seed: int) -> list:
    """A seeded random subset of ``ceil(fraction·n)`` items, in a seeded order."""
    n = max(1, round(len(items) * fraction))
    idx = random.Random(seed).sample(range(len(items)), n)
    return [items[i] for i in idx]


def response_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over labelled positions, and how many there were."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])  # B, L-1, V -> B*(L-1), V
    shift_labels = labels[:, 1:].reshape(-1)  # B, L-1 -> B*(L-1)
    loss = F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((shift_labels != IGNORE_INDEX).sum())


def _count_tokens(processor, batches) -> int:
    return sum(processor.num_response_tokens(item) for b in batches for item in b)


def compute_importance(model, items: list[dict], config: ImportanceConfig, out_dir: str | Path,
                       extra_meta: dict | None = None, progress: bool = True) -> Path:
    """Score every LLM parameter of ``model`` on ``items`` and write a score folder.

    Args:
        model: a :class:`~omnishift.models.speech_llm.SpeechLLM` (only ``model.llm`` is scored).
        items: processor items (``prompt``, ``response``, optional ``audio``).
        config: :class:`ImportanceConfig`.
        out_dir: output folder (``scores.safetensors``, ``meta.json``, ``layers.csv``,
            ``modules.csv``; ``state/`` while running).
        extra_meta: merged into the metadata (model and data names).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: ``out_dir`` holds a pass (finished or partial) made from another model, other
            items or other settings (``PRODUCED_BY.json``); a finished pass from the same inputs
            is returned as it is.
    """
    from omnishift.fingerprint import check_produced_by, items_fingerprint, model_identity

    out_dir = Path(out_dir)
    chosen = select_items(items, config.fraction, config.seed)
    # a partial pass (state/) or finished scores are reused only for the same model, items and settings
    check_produced_by(out_dir, {"model": model_identity(model), "items": items_fingerprint(chosen),
                                "config": asdict(config)}, "importance pass",
                      "score into a new --out folder (or delete this one)",
                      results=("scores.safetensors", "meta.json", "modules.csv", "state"))
    if (out_dir / "modules.csv").is_file() and (out_dir / "scores.safetensors").is_file():
        return out_dir  # finished earlier from the same inputs
    batches = [chosen[i:i + config.batch_size] for i in range(0, len(chosen), config.batch_size)]
    params = dict(model.llm.named_parameters())
    saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    model.eval()  # no dropout: the gradient of the deterministic loss
    try:
        total_tokens = _count_tokens(model.processor, batches)
        if total_tokens == 0:
            raise ValueError("no response tokens to score: every item needs a non-empty 'response'")

        def batch_loss(b: int):
            batch = model.processor(batches[b])
            return response_nll_sum(model(_no_labels(batch)).logits, batch["labels"])

        t0 = time.perf_counter()
        scores, tokens = taylor_scores(params, batch_loss, len(batches), total_tokens, config, out_dir / "state", progress)
        meta = {**(extra_meta or {}), **asdict(config), "items": len(chosen), "batches": len(batches),
                "tokens_seen": tokens, "seconds": round(time.perf_counter() - t0, 2)}
        save_scores(out_dir, scores, meta, dtype=getattr(torch, config.dtype))
        _clear_state(out_dir / "state")
        return out_dir
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved_flags[n])
            p.grad = None


def taylor_scores(params: dict[str, torch.nn.Parameter], batch_loss, num_batches: int, total_tokens: int,
                  config: ImportanceConfig, state: Path | None = None, progress: bool = False):
    """The accumulation loop, independent of the model type (tested on a 2-layer MLP too).

    Args:
        params: ``named_parameters()`` to score (``requires_grad`` set).
        batch_loss: ``b -> (summed token NLL, token count)`` for batch ``b``.
        num_batches: number of batches.
        total_tokens: tokens in the whole set (the ``dataset`` mode's normaliser).
        config: mode, checkpoint interval.
        state: folder for resume checkpoints (None: no resume).

    Returns:
        ``(scores keyed like params, tokens seen)``.
    """
    start, tokens, acc = _resume(state, config, params) if state else (0, 0, _fresh_acc(config, params))
    bar = tqdm(total=num_batches, initial=start, desc=f"importance ({config.mode}, {config.modality})",
               disable=not progress, unit="batch")
    for b in range(start, num_batches):
        nll, n = batch_loss(b)
        if not torch.isfinite(nll):
            raise FloatingPointError(f"non-finite loss in importance batch {b}; check that batch's items")
        loss = nll / total_tokens if config.mode == "dataset" else nll / max(n, 1)
        loss.backward()
        tokens += n
        if config.mode == "batch":
            with torch.no_grad():
                for name, p in params.items():
                    if p.grad is not None:  # in place: no temporary the size of the model
                        acc[name].add_(p.grad.mul_(p.detach()).abs_())
                    p.grad = None
        bar.update(1)
        bar.set_postfix(tokens=tokens)
        if state and config.save_every and (b + 1) % config.save_every == 0 and b + 1 < num_batches:
            _checkpoint(state, config, params, acc, b + 1, tokens)
    bar.close()
    with torch.no_grad():
        if config.mode == "batch":
            return acc, tokens
        # |g ⊙ θ| computed inside the gradient buffers: the pass never holds more than the grads.
        return {n: p.grad.mul_(p.detach()).abs_() if p.grad is not None else torch.zeros_like(p)
                for n, p in params.items()}, tokens


def _fresh_acc(config, params):
    for p in params.values():
        p.grad = None
    return {n: torch.zeros_like(p) for n, p in params.items()} if config.mode == "batch" else None


def _no_labels(batch: dict) -> dict:
    """The processor batch without labels: the loss is computed here, not by the HF model."""
    return {k: v for k, v in batch.items() if k != "labels"}


def _resume(state: Path, config: ImportanceConfig, params: dict) -> tuple[int, int, dict | None]:
    """Load accumulator + counters from an interrupted pass, or start fresh."""
    acc = _fresh_acc(config, params)
    progress_file = state / "progress.json"
    if not progress_file.is_file():
        return 0, 0, acc
    progress = json.loads(progress_file.read_text())
    if progress["config"] != asdict(config):
        raise ValueError(f"{state} holds an interrupted pass with other settings {progress['config']}; "
                         "delete that folder or rerun with the same settings")
    saved = load_file(state / "accumulator.safetensors")
    missing = set(params) - set(saved)
    if missing:
        raise ValueError(f"{state}: accumulator lacks {sorted(missing)[:3]}...; delete the folder and rerun")
    for n, p in params.items():
        if config.mode == "batch":
            acc[n].copy_(saved[n])
        else:
            p.grad = saved[n].to(p.dtype).clone()
    return progress["batches_done"], progress["tokens"], acc


def _checkpoint(state: Path, config, params, acc, batches_done: int, tokens: int) -> None:
    """Write accumulator and counter together: one folder swapped in by a single rename."""
    tensors = acc if config.mode == "batch" else {
        n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in params.items()}
    with atomic_dir(state) as tmp:
        save_file({n: t.detach().contiguous() for n, t in tensors.items()}, tmp / "accumulator.safetensors")
        (tmp / "progress.json").write_text(json.dumps(
            {"config": asdict(config), "batches_done": batches_done, "tokens": tokens}) + "\n")


def _clear_state(state: Path) -> None:
    shutil.rmtree(state, ignore_errors=True)
