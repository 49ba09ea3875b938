"""Dual-modality spoken QA (paper Sec. 3.2): the same questions as text (T2T) and as speech (S2T).

Prompts and decoding are identical for every model: the LLM's chat template; S2T user turn
``<speech>\\nPlease directly answer the questions in the user's speech.`` (LLaMA-Omni), T2T the
question text followed by the same instruction (``prompt="instruction"``) or the bare question
(``prompt="plain"``); greedy decoding. Items are sorted by prompt length before batching (left
padding), which changes nothing in greedy outputs but wastes less compute on padding.

Per-item results stream to ``items.jsonl`` (append + flush), so an interrupted evaluation resumes
from the items already answered; ``summary.json`` holds accuracy and a seeded bootstrap 95% CI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from omnishift.evaluate.scoring import bootstrap_ci, is_correct
from omnishift.models.processor import s2t_prompt, t2t_prompt
from omnishift.paths import atomic_write_text


def build_eval_items(examples, mode: str, prompt: str = "instruction") -> list[dict]:
    """Processor items plus bookkeeping (id, question, references) for one mode."""
    from omnishift.data.audio import load_audio

    if mode not in ("t2t", "s2t"):
        raise ValueError(f"mode {mode!r} unknown: use t2t or s2t")
    if prompt not in ("instruction", "plain"):
        raise ValueError(f"prompt {prompt!r} unknown: use 'instruction' or 'plain'")
    items = []
    for e in examples:
        if not e.answers:
            raise ValueError(f"item {e.id!r} has no reference answers; QA evaluation needs 'answers'")
        item = {"id": e.id, "question": e.text, "references": e.answers}
        if mode == "t2t":
            item["prompt"] = t2t_prompt(e.text) if prompt == "instruction" else e.text
        else:
            if not e.audio:
                raise ValueError(f"item {e.id!r} has no audio for S2T: synthesize it with `omnishift synth`")
            item["prompt"], item["audio"] = s2t_prompt(), load_audio(e.audio, item=e.id)
        items.append(item)
    return items


def evaluate(model, items: list[dict], out_dir: str | Path, batch_size: int = 16, max_new_tokens: int = 64,
             progress: bool = True, label: str = "") -> dict:
    """Answer, score and summarise; resumes from ``out_dir/items.jsonl``.

    Returns:
        The summary dict (``accuracy``, ``ci95``, ``n``, ``correct``, ``seconds``, ``questions_per_s``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done_file = out_dir / "items.jsonl"
    done = {}
    if done_file.is_file():
        for line in done_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["id"]] = r
    todo = [it for it in items if it["id"] not in done]
    todo.sort(key=lambda it: len(it["prompt"]) + (len(it["audio"]) / 1600 if "audio" in it else 0))
    t0 = time.perf_counter()
    with open(done_file, "a", encoding="utf-8") as f, tqdm(total=len(items), initial=len(items) - len(todo),
                                                           desc=f"eval {label}".strip(), disable=not progress) as bar:
        for s in range(0, len(todo), batch_size):
            chunk = todo[s:s + batch_size]
            batch = model.processor([{k: it[k] for k in ("prompt", "audio") if k in it} for it in chunk],
                                    padding_side="left")
            outputs = model.generate(batch, max_new_tokens=max_new_tokens)
            for it, out in zip(chunk, outputs):
                rec = {"id": it["id"], "question": it["question"], "references": it["references"],
                       "output": out, "correct": is_correct(out, it["references"])}
                done[it["id"]] = rec
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(chunk))
    seconds = time.perf_counter() - t0
    verdicts = [done[it["id"]]["correct"] for it in items]
    lo, hi = bootstrap_ci(verdicts)
    summary = {"label": label, "n": len(verdicts), "correct": int(sum(verdicts)),
               "accuracy": sum(verdicts) / len(verdicts), "ci95": [lo, hi], "max_new_tokens": max_new_tokens,
               "batch_size": batch_size, "seconds": round(seconds, 2),
               "questions_per_s": round(len(todo) / seconds, 3) if todo and seconds > 0 else None}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
