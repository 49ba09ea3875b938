"""How far a fine-tuned model's text behaviour has moved from the base model's, measured finely.

Why: QA accuracy on a few hundred questions moves in steps of 1/n and has a ±5-point interval, so a
Stage 1 that shifts every answer a little looks like no change at all. Scoring the *base model's own
greedy answers* teacher-forced under the fine-tuned model sees small shifts, and needs no labels:

* ``kl``: KL(base ‖ model) per response token, exact over the whole vocabulary (forward KL to the base
  predicts forgetting: "RL's Razor", arXiv 2509.04259);
* ``dnll``: the NLL of those answers under the model minus under the base (nats per token; > 0: the
  model finds the base model's answers less likely);
* ``flip_rate``: the share of prompts whose greedy answer is no longer the base's (needs the
  model's answers; "LoRA Learns Less and Forgets Less", 2405.09673, tracks the same kind of curve);
* ``correct``: on a QA benchmark's questions asked as text, whether the model's greedy answer holds a
  reference answer (T2T accuracy, scored as :mod:`omnishift.evaluate.qa` scores it). Flips of short
  answers to questions separate models; flips of long open-ended continuations saturate.

Each is a mean over prompts of a per-prompt value, with a percentile bootstrap interval over prompts
(:func:`~omnishift.evaluate.scoring.bootstrap_ci`), so two models measured on the same prompts can be
compared pairwise (:func:`~omnishift.evaluate.scoring.paired_bootstrap_ci` on ``per_item``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from omnishift.evaluate.scoring import bootstrap_ci, is_correct, normalize
from omnishift.fingerprint import fingerprint
from omnishift.models.processor import IGNORE_INDEX

#: Fields of a per-prompt record that :func:`summarize` averages.
MEASURES = ("kl", "dnll", "flip", "correct")
ANSWERS = "answers.jsonl"


def greedy_answers(model, prompts: list[str], max_new_tokens: int = 64, slots: int = 16) -> list[str]:
    """``model``'s greedy answer to each text prompt (a user turn, e.g. :func:`t2t_prompt` of a question),
    in order (continuous batching)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths decode together
    items = [{"prompt": prompts[i]} for i in order]
    out = [""] * len(prompts)
    for (j, answer) in model.generate_stream(items, slots=slots, max_new_tokens=max_new_tokens):
        out[order[j]] = answer
    return out


def _response_positions(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the logits predict a response token: ``(B, L-1)`` mask and the tokens ``(B, L-1)``."""
    labels = batch["labels"][:, 1:]  # B, L -> B, L-1 (position t predicts token t + 1)
    return labels != IGNORE_INDEX, labels


def _response_log_probs(model, batch: dict, first: int, mask: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``(N, V)`` at the ``N`` positions of ``mask`` (response tokens) only.

    The vocabulary projection and the float softmax over 49k entries are most of a teacher-forced
    pass; prompt and padding positions need neither, so the LLM projects positions ``first:`` only
    (``logits_to_keep``) and the softmax runs on the masked rows."""
    keep = batch["input_ids"].shape[1] - first  # positions first .. L-1
    logits = model(batch, logits_to_keep=keep).logits[:, :-1]  # B, keep-1, V (predicting first+1 .. L-1)
    return logits[mask[:, first:]].float().log_softmax(-1)  # N, V


@torch.no_grad()
def teacher_forced(model, base, prompts: list[str], answers: list[str], batch_size: int = 8) -> list[dict]:
    """Per prompt: KL(base ‖ model) and ΔNLL per token of the base answer, and its token count.

    Args:
        model, base: :class:`~omnishift.models.speech_llm.SpeechLLM` s sharing a tokenizer.
        prompts, answers: the user turns as text and the base model's answers to them.

    Returns:
        One ``{"kl", "dnll", "tokens"}`` per prompt, in order; a prompt whose answer is empty gets
        ``tokens`` 0 and no measures (:func:`summarize` counts it as skipped).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(answers[i]))  # less padding
    out: list[dict] = [{}] * len(prompts)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = model.processor([{"prompt": prompts[i], "response": answers[i]} for i in idx], padding_side="right")
        mask, target = _response_positions(batch)  # B, L-1
        del batch["labels"]  # logits only: no loss
        if not mask.any():
            for i in idx:
                out[i] = {"tokens": 0}
            continue
        first = int(mask.any(0).nonzero()[0])  # the earliest position that predicts a response token
        lp_m = _response_log_probs(model, batch, first, mask)  # N, V
        lp_b = _response_log_probs(base, batch, first, mask)  # N, V
        kl = (lp_b.exp() * (lp_b - lp_m)).sum(-1)  # N
        tok = target[mask][:, None]  # N, 1
        dnll = (lp_b.gather(-1, tok) - lp_m.gather(-1, tok))[:, 0]  # N
        counts = mask.sum(1).tolist()  # tokens per row; the N positions are row-major
        for i, part_kl, part_dnll, n in zip(idx, kl.split(counts), dnll.split(counts), counts):
            out[i] = {"tokens": n} if n == 0 else {"tokens": n, "kl": float(part_kl.mean()),
                                                   "dnll": float(part_dnll.mean())}
    return out


def flips(model_answers: list[str], base_answers: list[str]) -> list[float]:
    """1.0 where the model's answer differs from the base's, else 0.0; compared as the QA scorer reads them
    (:func:`normalize`: case, punctuation, number words), articles kept."""
    if len(model_answers) != len(base_answers):
        raise ValueError(f"{len(model_answers)} model answers but {len(base_answers)} base answers")
    return [float(normalize(a, keep_articles=True) != normalize(b, keep_articles=True))
            for a, b in zip(model_answers, base_answers)]


def summarize(per_item: list[dict]) -> dict:
    """Mean and 95 % bootstrap interval over prompts of each measure in ``per_item``."""
    out = {"n": len(per_item)}
    for m in MEASURES:
        v = [r[m] for r in per_item if m in r]
        if v:
            lo, hi = bootstrap_ci(v)
            out[m], out[f"{m}_ci95"] = float(np.mean(v)), [lo, hi]
    empty = sum(1 for r in per_item if r.get("tokens") == 0)
    if empty:
        out["skipped_empty_answers"] = empty
    return out


def drift(model, base, prompts: list[str], base_answers: list[str], flip: bool = True,
          max_new_tokens: int = 64, batch_size: int = 8,
          references: list[list[str]] | None = None, slots: int = 16) -> tuple[dict, list[dict]]:
    """All measures of ``model`` against ``base`` on ``prompts``: ``(summary, per_item)``.

    Args:
        base_answers: ``base``'s greedy answers (:func:`greedy_answers`), computed once and reused
            for every model and every point of a forgetting curve.
        flip: also generate the model's answers (the expensive part) for the flip rate.
        references: per prompt, the reference answers of a QA question: the model's answers are
            generated and scored (``correct``: T2T accuracy), and the flip rate comes with them.
    """
    if references is not None and len(references) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(references)} reference lists")
    per_item = teacher_forced(model, base, prompts, base_answers, batch_size)
    if flip or references is not None:
        _add_answers(per_item, greedy_answers(model, prompts, max_new_tokens, slots), base_answers, references)
    return summarize(per_item), per_item


def _add_answers(per_item: list[dict], answers: list[str], base_answers: list[str],
                 references: list[list[str]] | None) -> None:
    """Give each record the model's answer, whether it flipped, and whether it is right (with references)."""
    for r, f, a in zip(per_item, flips(answers, base_answers), answers):
        r["flip"], r["answer"] = f, a
    for r, refs in zip(per_item, references or []):
        r["correct"] = float(is_correct(r["answer"], refs))


def base_answers_unit(base, prompts: list[str], folder: str | Path, max_new_tokens: int = 64,
                      redo: bool = False) -> list[str]:
    """The base model's greedy answers to ``prompts``, computed once into ``folder/answers.jsonl`` and
    reused only while the base model, the prompts and the answer length are the same (``redo``:
    recompute them for another base instead of refusing)."""
    from omnishift.fingerprint import model_identity
    from omnishift.paths import atomic_write_text
    from omnishift.reuse import reuse_unit

    folder = Path(folder)
    inputs = {"base": model_identity(base), "prompts": prompts_fingerprint(prompts),
              "max_new_tokens": max_new_tokens}
    if not reuse_unit(folder, inputs, what="base answers", redo=redo, complete=lambda d: (d / ANSWERS).is_file(),
                      fix="use a new folder for another base model or prompt set (or delete this one)"):
        answers = greedy_answers(base, prompts, max_new_tokens)
        atomic_write_text(folder / ANSWERS, "".join(json.dumps({"prompt": p, "answer": a}) + "\n"
                                                    for p, a in zip(prompts, answers)))
    return [json.loads(x)["answer"] for x in (folder / ANSWERS).read_text(encoding="utf-8").splitlines() if x.strip()]


def drift_prompts(data: str | None, benchmark: str | None, limit: int | None,
                  prompt: str = "instruction") -> tuple[list[str], list[list[str]] | None]:
    """Text prompts to measure drift on, and their reference answers where they are QA questions:
    a data source's instructions (as the T2T training prompt puts them; no references) or a
    benchmark's questions (as T2T evaluation asks them, ``prompt`` as in ``EvalSettings``)."""
    if bool(data) == bool(benchmark):
        raise ValueError("give exactly one of --data (held-out instructions) and --benchmark (its questions as text)")
    if data:
        from omnishift.data.items import build_items

        items, _ = build_items(data, "text", limit=limit)
        return [it["prompt"] for it in items], None
    from omnishift.evaluate.qa import build_eval_items, load_benchmark

    items = build_eval_items(load_benchmark(benchmark, limit=limit), "t2t", prompt)
    return [it["prompt"] for it in items], [list(it["references"]) for it in items]


def cmd_drift(args) -> int:
    """``omnishift eval drift MODEL``: drift of a model from the base on held-out text, as JSON."""
    from omnishift.models.speech_llm import load_speech_llm
    from omnishift.paths import atomic_write_text, ensure_writable_dir

    out = ensure_writable_dir(args.out)
    prompts, references = drift_prompts(args.data, args.benchmark, args.limit)
    base = load_speech_llm(None if args.base in (None, "base") else args.base).eval()
    answers = base_answers_unit(base, prompts, out / "base", args.max_new_tokens)
    model = load_speech_llm(None if args.model == "base" else args.model).eval()
    summary, per_item = drift(model, base, prompts, answers, flip=args.flip, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, references=references)
    summary = {"model": args.model, "base": args.base or "base", "data": args.data, "benchmark": args.benchmark,
               "max_new_tokens": args.max_new_tokens, **summary}
    atomic_write_text(out / "items.jsonl", "".join(json.dumps(r) + "\n" for r in per_item))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_ci95")}))
    return 0


def add_parser(sub) -> None:
    from omnishift.schema import positive_int

    s = sub.add_parser("drift", help="how far a model's text answers moved from the base's: KL(base||model) and "
                                     "dNLL of the base's own answers, flip rate, bootstrap CIs")
    s.add_argument("model", help="a speech-LLM folder (a Stage-1 model), or 'base'")
    s.add_argument("--base", help="the folder it started from (default: the base models)")
    s.add_argument("--data", help="held-out instructions (a source spec or manifest no stage trains on)")
    s.add_argument("--benchmark", help="or a benchmark's questions, as text (llama_questions): T2T accuracy too")
    s.add_argument("--limit", type=positive_int, default=200, help="prompts")
    s.add_argument("--max-new-tokens", type=positive_int, default=64, help="length of the base's answers")
    s.add_argument("--no-flip", dest="flip", action="store_false", help="skip the model's own answers (flip rate)")
    s.add_argument("--batch-size", type=positive_int, default=8)
    s.add_argument("--out", required=True, help="folder: base/answers.jsonl (reused), items.jsonl, summary.json")
    s.set_defaults(func=cmd_drift)


@dataclass(frozen=True)
class ProbeSet:
    """One prompt set a :class:`DriftProbe` measures at every point.

    Args:
        name: its key in the probe's results (``heldout``, ``llama_questions``).
        prompts, base_answers: text prompts and the starting model's answers (:func:`base_answers_unit`).
        references: reference answers per prompt (a QA benchmark): T2T accuracy and flips at each point.
        flip: the flip rate of a set without references (generates every model's answers).
        max_new_tokens: answer length, as the base answers were made.
    """

    name: str
    prompts: list
    base_answers: list
    references: list | None = None
    flip: bool = False
    max_new_tokens: int = 32

    def identity(self) -> dict:
        return {"name": self.name, "prompts": self.prompts, "answers": self.base_answers,
                "references": self.references, "flip": self.flip, "max_new_tokens": self.max_new_tokens}


def start_measures(base, prompts: list[str], base_answers: list[str], flip: bool = False,
                   references: list[list[str]] | None = None, batch_size: int = 32) -> list[dict]:
    """What :func:`drift` gives for ``base`` against itself, without running it: KL and ΔNLL are 0 and
    every answer is the base's own (greedy decoding is deterministic and batching-invariant), so only
    the answer token counts and the accuracy of the base answers are computed."""
    tokens = []
    for s in range(0, len(prompts), batch_size):
        items = [{"prompt": p, "response": a} for p, a in zip(prompts[s:s + batch_size], base_answers[s:s + batch_size])]
        tokens += _response_positions(base.processor(items, padding_side="right"))[0].sum(1).tolist()
    per_item = [{"tokens": n, "kl": 0.0, "dnll": 0.0} if n else {"tokens": 0} for n in tokens]
    if flip or references is not None:
        _add_answers(per_item, base_answers, base_answers, references)
    return per_item


class DriftProbe:
    """Drift from the model training started from, at points of training: a forgetting curve
    (``omnishift.train.trainer.train(probe=...)`` calls it at step 0, every ``every`` steps and at
    the end). Teacher-forced KL and ΔNLL cost two forward passes over each set's prompts; flips and
    T2T accuracy also generate the model's answers.

    Every measure reads the LLM alone (text in, text out), so a model whose LLM is still the start's
    bit for bit (step 0 of every method; every step of an adaptor-only method) has the start's own
    point, which follows from the start's answers without a forward pass (:func:`start_measures`);
    it is returned marked ``"llm_unchanged": true``.

    Args:
        base: the starting model (frozen copy; only its LLM is used, on text).
        sets: what to measure (:class:`ProbeSet`), each reported under its name.
        batch_size: prompts per teacher-forced pass; slots: answers decoded at once (continuous batching).
    """

    def __init__(self, base, sets: list[ProbeSet], every: int, batch_size: int = 8, slots: int = 16):
        names = [s.name for s in sets]
        if not sets or len(set(names)) != len(names):
            raise ValueError(f"a probe needs one or more prompt sets with distinct names, got {names}")
        self.base, self.sets = base.eval().requires_grad_(False), list(sets)
        self.every, self.batch_size, self.slots = every, batch_size, slots
        #: what the points measure: a curve is continued only by a probe of the same identity
        self.identity = fingerprint({"sets": [s.identity() for s in self.sets]})

    def __call__(self, model, step: int) -> dict:
        from omnishift.fingerprint import same_weights, weights_sha256

        weights = {"llm_sha256": weights_sha256(model.llm)}  # which LLM answered: its answers can be reused
        if same_weights(model.llm, self.base.llm):
            return {**self._point({s.name: start_measures(self.base, s.prompts, s.base_answers, s.flip, s.references)
                                   for s in self.sets}), **weights, "llm_unchanged": True}
        return {**self._point({s.name: drift(model, self.base, s.prompts, s.base_answers, flip=s.flip,
                                             max_new_tokens=s.max_new_tokens, batch_size=self.batch_size,
                                             references=s.references, slots=self.slots)[1]
                                       for s in self.sets}), **weights}

    def _point(self, per_set: dict[str, list[dict]]) -> dict:
        out = {}
        for s in self.sets:
            per_item = per_set[s.name]
            kept = [m for m in (*MEASURES, "answer") if any(m in r for r in per_item)]  # answers: what changed
            out[s.name] = {**summarize(per_item), "per_item": {m: [r.get(m) for r in per_item] for m in kept},
                           "prompts_fp": prompts_fingerprint(s.prompts), "max_new_tokens": s.max_new_tokens}
        return {"sets": out}


def prompts_fingerprint(prompts: list[str]) -> str:
    """What a probe point's answers answer: read back to reuse them only for the same prompts."""
    return fingerprint({"prompts": list(prompts)})


def probe_answers(point: dict, name: str, llm, prompts: list[str], max_new_tokens: int) -> list[str] | None:
    """The answers of set ``name`` at a forgetting-curve ``point``, if ``llm`` gave them to exactly ``prompts``
    with ``max_new_tokens`` (the LLM's weights, the prompts and the length all match by fingerprint); else None.

    Why: a curve's last point has already generated the greedy T2T answers that an evaluation of the final
    model would generate again (the same LLM, the same prompts, the same decoding)."""
    from omnishift.fingerprint import weights_sha256

    s = (point.get("sets") or {}).get(name) or {}
    answers = (s.get("per_item") or {}).get("answer")
    if (answers is None or s.get("prompts_fp") != prompts_fingerprint(prompts) or len(answers) != len(prompts)
            or s.get("max_new_tokens") != max_new_tokens or point.get("llm_sha256") != weights_sha256(llm)):
        return None
    return list(answers)
