"""Tables of the forgetting_1k study from its runs: ``python experiments/forgetting_1k/summarize.py``.

Writes ``summary.json`` beside this file: per method, T2T / S2T on the 300 LLaMA Questions with 95 % CIs,
the last forgetting-curve point on 200 held-out Dolly instructions, the LLaMA Q T2T flip rate against the base
model's own answers, and paired differences (text control − each speech method; each method − Full-FT).
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.evaluate.drift import flips
from omnishift.evaluate.scoring import bootstrap_ci, paired_bootstrap_ci
from omnishift.report.forgetting import read_curve

RUNS = Path("runs/forgetting_1k")
HERE = Path(__file__).parent
BASE_T2T = Path("experiments/eval_base_smollm2/instruction/items.jsonl")  # No-FT, LLaMA-Omni prompt, 64 tokens


def _items(path: Path) -> dict:
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return {r["id"]: r for r in rows}


def _paired(a: dict, b: dict, key: str) -> list:
    ids = sorted(set(a) & set(b))
    mean, lo, hi = paired_bootstrap_ci([float(a[i][key]) for i in ids], [float(b[i][key]) for i in ids])
    return [round(mean, 4), round(lo, 4), round(hi, 4), len(ids)]


def main() -> None:
    base = _items(BASE_T2T)
    out, evals, last = {"methods": {}}, {}, {}
    for m in ("full", "text_control", "lora", "layer_lr"):
        if not (RUNS / "eval" / m / "s2t" / "summary.json").is_file():
            continue
        evals[m] = {mode: _items(RUNS / "eval" / m / mode / "items.jsonl") for mode in ("t2t", "s2t")}
        curve = read_curve(RUNS / m)
        last[m] = curve[-1]
        t2t = evals[m]["t2t"]
        f = flips([t2t[i]["output"] for i in sorted(t2t)], [base[i]["output"] for i in sorted(t2t)])
        out["methods"][m] = {
            **{mode: {"accuracy": sum(r["correct"] for r in evals[m][mode].values()) / len(evals[m][mode]),
                      "ci95": bootstrap_ci([r["correct"] for r in evals[m][mode].values()])} for mode in ("t2t", "s2t")},
            "llama_q_t2t_flip_vs_base": {"rate": sum(f) / len(f), "ci95": bootstrap_ci(f)},
            "curve": [{k: v for k, v in p.items() if k not in ("per_item", "probe")} for p in curve],
        }
    for m in evals:
        if m != "text_control" and "text_control" in evals:
            out["methods"][m]["t2t_text_control_minus_this"] = _paired(evals["text_control"]["t2t"], evals[m]["t2t"],
                                                                       "correct")
        if m != "full" and "full" in evals:
            a, b = last[m]["per_item"], last["full"]["per_item"]
            out["methods"][m]["vs_full"] = {
                "kl": paired_bootstrap_ci(a["kl"], b["kl"]), "flip": paired_bootstrap_ci(a["flip"], b["flip"]),
                "t2t": _paired(evals[m]["t2t"], evals["full"]["t2t"], "correct"),
                "s2t": _paired(evals[m]["s2t"], evals["full"]["s2t"], "correct")}
    (HERE / "summary.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=1)[:4000])


if __name__ == "__main__":
    main()
