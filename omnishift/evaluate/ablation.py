"""LoRA rank ablation (paper Table 3): train LoRA at several ranks, evaluate each on T2T and S2T.

For each rank r the training config is taken as given and only the method changes:
``method.name=lora``, ``method.options.r=r``, ``method.options.alpha=2r`` (the paper's α = 2r),
``out_dir=OUT/r{r}/train``. The final model of each run is evaluated on every benchmark in both
modes into ``OUT/r{r}/eval/<benchmark>/<mode>``, and ``OUT/table3.md`` / ``.csv`` put the ranks
side by side (rows ``r=8``, ``r=16``, ...).

Resumable at every level, by one rule (:func:`omnishift.reuse.reuse_unit`): a training or an
evaluation folder is reused or resumed only when the content fingerprint of what makes it (config,
data rows and audio, starting model; model folder, benchmark items, prompt, answer length) is the one
it recorded; one made from other inputs is refused (or, in the pipeline under ``--redo``, redone).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omnishift.evaluate.qa import BenchmarkSelection, EvalSettings, build_eval_items, evaluate, item_key
from omnishift.evaluate.table import MODES, accuracy_csv, accuracy_table, benchmark_key
from omnishift.paths import atomic_write_text, ensure_writable_dir
from omnishift.tables import Table, to_markdown

log = logging.getLogger(__name__)

#: The method whose rank Table 3 varies (a name in :data:`omnishift.train.methods.METHODS`).
ABLATED_METHOD = "lora"


def ablation_base(methods: dict) -> str:
    """Which of a study's methods (name -> its training config) the ablation starts from: the
    ablated method's own config when the study trains it (same options), else the first."""
    return ABLATED_METHOD if ABLATED_METHOD in methods else next(iter(methods))


def base_overrides(method_name: str) -> list[str]:
    """Overrides that make another method's config the ablated method's: its options do not apply."""
    return [] if method_name == ABLATED_METHOD else ["method.options={}"]


def rank_overrides(r: int, out: str | Path) -> list[str]:
    """Config overrides of rank ``r``: LoRA with α = 2r, trained into ``out/r{r}/train``."""
    if r <= 0:
        raise ValueError(f"LoRA rank must be a positive integer, got {r}")
    return [f"method.name={ABLATED_METHOD}", f"method.options.r={r}", f"method.options.alpha={2 * r}",
            f"out_dir={Path(out) / f'r{r}' / 'train'}"]


def ablate_rank(config: str | Path, ranks: list[int], benchmarks: list[str], out: str | Path, *,
                overrides: list[str] = (), modes=("t2t", "s2t"), selection: BenchmarkSelection | None = None,
                settings: EvalSettings | None = None, reuse=None) -> tuple[Path, Path]:
    """Train and evaluate LoRA at each rank; write the Table-3-shaped comparison.

    Args:
        config: training YAML (data, optimiser, loop, ...; its method section is overridden).
        ranks: LoRA ranks, e.g. ``[8, 16, 24]``.
        benchmarks: benchmark specs (``llama_questions``, ``web_questions``, a manifest).
        out: ablation folder.
        overrides: further ``section.key=value`` overrides applied before the rank's own.
        modes: evaluation modes.
        selection: which benchmark items (default: all).
        settings: evaluation settings (:func:`evaluate`).
        reuse: ``reuse(folder, inputs, what, complete) -> bool`` deciding each unit (default:
            :func:`omnishift.reuse.reuse_unit` refusing a unit made from other inputs).

    Returns:
        ``(table3.md, table3.csv)`` paths under ``out``.
    """
    from omnishift.fingerprint import fingerprint
    from omnishift.models.identity import folder_fingerprint
    from omnishift.models.speech_llm import SpeechLLM
    from omnishift.train.config import load_config
    from omnishift.train.trainer import train, training_inputs

    out = ensure_writable_dir(out, "--out")
    if len(set(ranks)) != len(ranks) or not ranks:
        raise ValueError(f"ranks must be distinct and non-empty, got {ranks}")
    reuse = reuse or _refuse_other_inputs
    # Load (and synthesize) every benchmark before hours of training, so a bad spec fails first.
    selection, settings = selection or BenchmarkSelection(), settings or EvalSettings()
    examples = {b: selection.load(b, modes) for b in benchmarks}
    for r in ranks:
        cfg = load_config(config, list(overrides) + rank_overrides(r, out))
        if not reuse(Path(cfg.out_dir), training_inputs(cfg), f"LoRA r={r} training",
                     lambda d: (d / "final").is_dir()):
            log.info("rank %d: training into %s", r, cfg.out_dir)
            train(cfg, resume=True)
        final, model = Path(cfg.out_dir) / "final", None
        for b, exs in examples.items():
            for mode in modes:
                items = build_eval_items(exs, mode, prompt=settings.prompt)
                items_dir = out / f"r{r}" / "eval" / Path(b).stem / mode
                inputs = {"model": folder_fingerprint(final), "items": fingerprint([item_key(it) for it in items]),
                          "mode": mode, "prompt": settings.prompt, "max_new_tokens": settings.max_new_tokens}
                if not reuse(items_dir, inputs, f"evaluation of LoRA r={r} on {b} {mode}",
                             lambda d: (d / "summary.json").is_file()):
                    model = model or SpeechLLM.from_pretrained(final)
                    evaluate(model, items, items_dir, settings, label=f"lora r={r} {mode}",
                             meta={"model": str(final), "benchmark": b, "mode": mode,
                                   "prompt": settings.prompt, **selection.meta(), "lora_r": r})
        del model
    t, text = rank_table(out)
    return atomic_write_text(out / "table3.md", to_markdown(t)), atomic_write_text(out / "table3.csv", text)


def _refuse_other_inputs(folder: Path, inputs: dict, what: str, complete) -> bool:
    from omnishift.reuse import reuse_unit

    return reuse_unit(folder, inputs, what=what, redo=False, complete=complete,
                      fix="ablate into a new --out folder (or delete this one)")


def rank_table(out: str | Path) -> tuple[Table, str]:
    """Table 3 from the rank ablation's summaries under ``out`` (``r*/eval/*/*/summary.json``), keyed
    by what each recorded (``lora_r``, ``benchmark``, ``mode``), never by folder names. The rank
    ablation and the report both build Table 3 here.

    Returns:
        ``(table, csv text of its numbers)``; an empty table when nothing is evaluated yet.
    """
    cells, ranks, cols = {}, set(), []
    for f in sorted(Path(out).glob("r*/eval/*/*/summary.json")):
        s = json.loads(f.read_text(encoding="utf-8"))
        if "accuracy" not in s:
            continue
        if "lora_r" not in s:
            raise ValueError(f"{f}: no lora_r recorded; re-run `omnishift eval ablate-rank` into the same folder")
        col = (benchmark_key(s["benchmark"]), s["mode"])
        cells[(f"r={s['lora_r']}", *col)] = s
        ranks.add(int(s["lora_r"]))
        cols += [col] if col not in cols else []
    rows = [f"r={r}" for r in sorted(ranks)]
    cols = [(b, m) for b in dict.fromkeys(b for b, _ in cols) for m in MODES if (b, m) in cols]
    t = accuracy_table("table3_lora_rank", "Table 3. Accuracy by LoRA rank (α = 2r)", cells, rows, [],
                       title="LoRA rank (α = 2r)", cols=cols)
    return t, accuracy_csv(cells, rows, cols, title="lora_rank")
