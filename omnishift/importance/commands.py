"""``omnishift importance ...``: compute, validate, deactivate, cluster, compare, plot, lr, change.

Data for a pass comes from ``--data`` (any source spec understood by
:func:`omnishift.data.sources.load_source`, e.g. ``instructions:alpaca_gpt4_llamafactory_demo1k``
or a manifest path). ``--modality text`` puts the instruction text in the user turn;
``--modality speech`` puts its synthesized audio there (synthesized on demand with eSpeak NG into
``--audio-dir``, reused across runs), with the LLaMA-Omni instruction after it. The response
tokens are the same in both cases, so the two scores are comparable.
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.schema import parse_labelled, positive_int


def register(commands) -> None:
    isub = commands.group("importance", help="parameter-importance analysis (paper Sec. 2)")

    c = isub.add_parser("compute", help="Taylor importance |dL/dθ·θ| of every LLM parameter")
    c.add_argument("--model", help="speech-LLM folder (default: base models)")
    c.add_argument("--data", required=True, help="source spec, e.g. instructions:alpaca_gpt4_llamafactory_demo1k")
    c.add_argument("--modality", choices=["text", "speech"], default="text")
    c.add_argument("--mode", choices=["dataset", "batch"], default="dataset")
    c.add_argument("--fraction", type=float, default=1 / 30, help="share of the data used (paper: 1/30)")
    c.add_argument("--limit", type=positive_int, help="read at most this many examples first")
    c.add_argument("--batch-size", type=positive_int, default=4)
    c.add_argument("--max-response-tokens", type=positive_int, default=128)
    c.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--audio-dir", help="where synthesized audio goes (speech modality)")
    c.add_argument("--validate", type=int, default=0, metavar="N",
                   help="also ablate N random single parameters exactly and report Spearman vs Taylor")
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(func=cmd_compute)

    d = isub.add_parser("deactivate", help="Table 1: PPL after zeroing top/bottom/random k%%")
    d.add_argument("scores")
    d.add_argument("--model")
    d.add_argument("--text-data", required=True)
    d.add_argument("--speech-data", help="source spec for the speech-input set (synthesized if needed)")
    d.add_argument("--audio-dir")
    d.add_argument("--limit", type=positive_int, default=64)
    d.add_argument("--fraction", type=float, default=0.03)
    d.add_argument("--per-matrix", action="store_true")
    d.add_argument("--scope", choices=["layers", "all"], default="layers",
                   help="decoder-layer matrices (default) or every scored tensor incl. embeddings and norms")
    d.add_argument("--max-response-tokens", type=positive_int, default=128)
    d.add_argument("--out", required=True)
    d.set_defaults(func=cmd_deactivate)

    k = isub.add_parser("compare", help="distribution shift between two score folders")
    k.add_argument("a")
    k.add_argument("b")
    k.set_defaults(func=cmd_compare)

    pl = isub.add_parser("plot-layers", help="Fig. 2-3: layer-wise distributions of several score folders")
    pl.add_argument("runs", nargs="+", help="LABEL=DIR")
    pl.add_argument("--out", required=True)
    pl.add_argument("--title", default="", help="figure title (default: 'Layer-wise textual importance')")
    pl.set_defaults(func=cmd_plot_layers)

    cl = isub.add_parser("cluster", help="Fig. 1: rank clustering of the top-5%% region (text vs speech side by side)")
    cl.add_argument("runs", nargs="+", help="LABEL=SCORE_DIR, e.g. text=runs/imp/text speech=runs/imp/speech")
    cl.add_argument("--layer", type=int, help="decoder layer (default: the middle one)")
    cl.add_argument("--fraction", type=float, default=0.05)
    cl.add_argument("--out", required=True, help="PNG path; scores go beside it as .json")
    cl.set_defaults(func=cmd_cluster)

    ch = isub.add_parser("change", help="Fig. 4: |W_ft - W_base| heatmaps of fine-tuned speech LLMs")
    ch.add_argument("runs", nargs="+", help="LABEL=SPEECH_LLM_DIR (full weights or PEFT adapter)")
    ch.add_argument("--base", help="base LLM (default: the one named in each folder's config)")
    ch.add_argument("--layer", type=int)
    ch.add_argument("--out", required=True)
    ch.set_defaults(func=cmd_change)

    lr = isub.add_parser("lr", help="eq. 3 layer-wise LR coefficients from TEXT scores")
    lr.add_argument("scores")
    lr.add_argument("--lam", type=float, default=0.4)
    lr.add_argument("--out", required=True)
    lr.set_defaults(func=cmd_lr)


def cmd_compute(args) -> int:
    from omnishift.data.items import build_items
    from omnishift.models.speech_llm import load_speech_llm
    from omnishift.importance.estimator import ImportanceConfig, compute_importance
    from omnishift.paths import ensure_writable_dir

    ensure_writable_dir(args.out)  # before the pass, not when it saves
    model = load_speech_llm(args.model)
    items, info = build_items(args.data, args.modality, limit=args.limit, audio_dir=args.audio_dir,
                              max_response_tokens=args.max_response_tokens, tokenizer=model.tokenizer)
    cfg = ImportanceConfig(mode=args.mode, modality=args.modality, fraction=args.fraction, batch_size=args.batch_size,
                           seed=args.seed, dtype=args.dtype)
    meta = {"model": args.model or f"{model.config.llm} + {model.config.encoder}", "data": info}
    out = compute_importance(model, items, cfg, args.out, extra_meta=meta)
    summary = json.loads((Path(out) / "meta.json").read_text())
    if args.validate:
        from omnishift.importance.validate import validate_taylor
        from omnishift.paths import atomic_write_text

        res = validate_taylor(model, items[: args.batch_size], n=args.validate, seed=args.seed)
        atomic_write_text(Path(out) / "validation.json", json.dumps(res, indent=2) + "\n")
        summary["validation_spearman"] = res["spearman"]
    print(json.dumps({k: summary[k] for k in ("mode", "modality", "items", "tokens_seen", "seconds")
                      if k in summary} | {"out": str(out)} | ({"spearman": summary["validation_spearman"]} if args.validate else {})))
    return 0


def cmd_deactivate(args) -> int:
    from omnishift.data.items import build_items
    from omnishift.importance.deactivate import deactivation_table, write_table
    from omnishift.models.speech_llm import load_speech_llm
    from omnishift.paths import ensure_writable_dir

    ensure_writable_dir(args.out)
    model = load_speech_llm(args.model)
    sets = {"text": build_items(args.text_data, "text", limit=args.limit, max_response_tokens=args.max_response_tokens,
                                     tokenizer=model.tokenizer)[0]}
    if args.speech_data:
        sets["speech"] = build_items(args.speech_data, "speech", limit=args.limit, audio_dir=args.audio_dir,
                                     max_response_tokens=args.max_response_tokens, tokenizer=model.tokenizer)[0]
    rows = deactivation_table(model, args.scores, sets, fraction=args.fraction, per_matrix=args.per_matrix,
                              scope=args.scope)
    md, _ = write_table(rows, args.out, args.fraction, label=args.model or model.config.llm)
    print(md.read_text())
    return 0


def cmd_compare(args) -> int:
    from omnishift.importance.shift import compare_score_dirs

    print(json.dumps(compare_score_dirs(args.a, args.b), indent=2))
    return 0


def cmd_plot_layers(args) -> int:
    from omnishift.importance.shift import plot_layer_distributions

    runs = parse_labelled(args.runs, "SCORE_DIR")
    print(plot_layer_distributions(runs, args.out, title=args.title))
    return 0


def cmd_lr(args) -> int:
    from omnishift.importance.shift import write_layer_lr

    print(json.dumps(write_layer_lr(args.scores, args.out, args.lam), indent=2))
    return 0


def cmd_cluster(args) -> int:
    from omnishift.importance.clustering import plot_rank_clustering
    from omnishift.paths import atomic_write_text

    runs = parse_labelled(args.runs, "SCORE_DIR")
    png, scores = plot_rank_clustering(runs, args.out, layer=args.layer, fraction=args.fraction)
    summary = {label: {name: round(v["score"], 3) for name, v in per.items()} for label, per in scores.items()}
    atomic_write_text(Path(args.out).with_suffix(".json"), json.dumps(scores, indent=2) + "\n")
    print(json.dumps({"figure": str(png), "clustering_score": summary}, indent=2))
    return 0


def cmd_change(args) -> int:
    """Deltas against the base LLM: full checkpoints by subtraction, PEFT adapters as scale·B·A."""
    from omnishift.importance.change import change_summary, lora_deltas, plot_change_heatmaps, weight_deltas
    from omnishift.importance.clustering import select_matrices
    from omnishift.models.defaults import load_llm
    from omnishift.paths import atomic_write_text

    deltas, base_cache = {}, {}
    for label, folder in parse_labelled(args.runs, "SPEECH_LLM_DIR").items():
        meta = json.loads((Path(folder) / "omnishift_config.json").read_text())
        if meta["llm_format"] == "peft":
            d = lora_deltas(Path(folder) / "llm_adapter")
            deltas[label] = {n: d[n] for n in select_matrices(list(d), args.layer)}
            continue
        base_name = args.base or meta["llm"]
        if base_name not in base_cache:
            base_cache[base_name] = load_llm(base_name)[0].state_dict()
        tuned = load_llm(Path(folder) / "llm")[0].state_dict()
        names = select_matrices(list(tuned), args.layer)
        deltas[label] = weight_deltas(base_cache[base_name], tuned, names)
    png = plot_change_heatmaps(deltas, args.out)
    atomic_write_text(Path(png).with_suffix(".json"), json.dumps(change_summary(deltas), indent=2) + "\n")
    print(png)
    return 0
