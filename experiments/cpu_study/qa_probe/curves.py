"""The forgetting curves of this folder's runs as Markdown: per probe point, T2T on the LLaMA Questions asked as
text, the flip rate of those answers and KL(start || model) on both prompt sets, with 95 % bootstrap intervals,
and every other method minus Full-FT paired over the same questions at every step both have.

Usage: python experiments/cpu_study/qa_probe/curves.py > experiments/cpu_study/qa_probe/curves.md
"""

from __future__ import annotations

from pathlib import Path

from omnishift.evaluate.scoring import paired_bootstrap_ci
from omnishift.report.forgetting import read_curve

HERE = Path(__file__).parent
FOLDERS = {"Full-FT": "full", "Text control": "text_control", "Layer-LR": "layer_lr", "LoRA": "lora",
           "Frozen LLM": "frozen"}
RUNS = {label: HERE / name for label, name in FOLDERS.items() if (HERE / name / "probes").is_dir()}


def cell(s: dict, m: str, digits: int = 3, scale: float = 1.0) -> str:
    if m not in s:
        return "-"
    lo, hi = s[f"{m}_ci95"]
    return f"{scale * s[m]:.{digits}f} ({scale * lo:.{digits}f}–{scale * hi:.{digits}f})"


def main() -> None:
    curves = {k: {p["step"]: p["sets"] for p in read_curve(d)} for k, d in RUNS.items()}
    print("| method | step | T2T % (LLaMA Q as text) | flip rate | KL, LLaMA Q | KL, held-out Dolly |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, points in curves.items():
        for step, sets in sorted(points.items()):
            qa, held = sets["llama_questions"], sets["heldout"]
            print(f"| {label} | {step} | {cell(qa, 'correct', 1, 100)} | {cell(qa, 'flip', 3)} | "
                  f"{cell(qa, 'kl', 3)} | {cell(held, 'kl', 3)} |")
    full = curves["Full-FT"]
    for label, other in curves.items():
        if label != "Full-FT":
            paired_with_full(label, other, full)


def paired_with_full(label: str, other: dict, full: dict) -> None:
    print(f"\n{label} − Full-FT, paired over the same prompts:\n")
    print("| step | T2T points | KL, LLaMA Q | KL, held-out Dolly |")
    print("| --- | --- | --- | --- |")
    for step in sorted(set(full) & set(other)):
        row = [str(step)]
        for name, m, scale, digits in (("llama_questions", "correct", 100, 1), ("llama_questions", "kl", 1, 3),
                                       ("heldout", "kl", 1, 3)):
            a, b = other[step][name]["per_item"][m], full[step][name]["per_item"][m]
            if None in a or None in b:
                row.append("-")
                continue
            d, lo, hi = paired_bootstrap_ci(a, b)
            row.append(f"{scale * d:+.{digits}f} ({scale * lo:+.{digits}f} to {scale * hi:+.{digits}f})")
        print("| " + " | ".join(row) + " |")

if __name__ == "__main__":
    main()
