"""End to end on tiny random models: every stage, an interrupted training resumed, the report."""

from __future__ import annotations

import json
import re

import pytest
from tiny_models import save_tiny_parts

from omnishift.claims import release, try_claim
from omnishift.pipeline.config import experiment_from_dict
from omnishift.pipeline.runner import read_marker, run_experiment
from omnishift.train.config import ConfigError

TRAIN_OVERRIDES = ["loop.max_steps=2", "loop.batch_size=4", "loop.grad_accum=1", "loop.progress=false",
                   "loop.device=cpu", "checkpoint.save_every=1", "checkpoint.keep_last=1", "data.max_response_tokens=8",
                   "optim.lr=1e-3", "optim.adaptor_lr=1e-3", "optim.warmup_ratio=0.0"]


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory, tiny_tokenizer):
    return save_tiny_parts(tmp_path_factory.mktemp("parts"), tiny_tokenizer, seed=3)


def experiment(tmp_path, parts, **changes) -> dict:
    d = {
        "name": "tiny",
        "out_root": str(tmp_path / "runs"),
        "model": dict(parts.__dict__),
        "data": {"train": "builtin:demo_data/instructions.jsonl", "train_limit": 8},
        "importance": {"fraction": 0.5, "batch_size": 4, "max_response_tokens": 8},
        "deactivation": {"limit": 4, "max_response_tokens": 8},
        "train": {"overrides": TRAIN_OVERRIDES,
                  "methods": {"full": {}, "lora": {"overrides": ["method.options.r=2"]}, "layer_lr": {}},
                  "drift": {"source": "builtin:demo_data/heldout_instructions.jsonl", "limit": 3, "every": 1,
                            "max_new_tokens": 3, "qa": ["trivia"]}},
        "evaluate": {"benchmarks": {"trivia": {"source": "builtin:demo_data/qa_trivia.jsonl", "limit": 3},
                                    "web": {"source": "builtin:demo_data/qa_web.jsonl", "limit": 3}},
                     "batch_size": 4, "max_new_tokens": 4},
        "ablation": {"ranks": [2], "benchmarks": ["trivia"]},
    }
    for k, v in changes.items():
        d[k] = v
    return d


class Kill(Exception):
    pass


def test_pipeline_end_to_end_with_resume(tmp_path, tiny_parts):
    data = {"train": "builtin:demo_data/instructions.jsonl", "train_limit": 8, "engines": "espeak=1",
            "speaker_seed": 1}
    deact = {"limit": 4, "max_response_tokens": 8, "after_training": ["full"]}
    cfg = experiment_from_dict(experiment(tmp_path, tiny_parts, data=data, deactivation=deact), "test")
    run = cfg.run_dir

    def kill_in_lora(event, stage, detail):
        if event == "step" and stage == "train" and detail["task"].startswith("train lora") and detail["step"] == 1:
            raise Kill("simulated kill after LoRA step 1")

    with pytest.raises(Kill):
        run_experiment(cfg, hook=kill_in_lora, stream=None)
    for stage in ("data", "importance", "deactivation"):
        assert read_marker(run, stage) is not None
    spoken = json.loads(next((run / "data").rglob("train/synth_config.json")).read_text())
    assert spoken["speakers"] == {"engines": "espeak=1", "seed": 1, "effects": True}  # instructions: many speakers
    assert read_marker(run, "train") is None  # interrupted inside the stage
    assert (run / "train" / "full" / "final").is_dir()
    assert (run / "train" / "lora" / "checkpoints").is_dir() and not (run / "train" / "lora" / "final").exists()
    full_mtime = (run / "train" / "full" / "final" / "omnishift_config.json").stat().st_mtime_ns

    started = []
    html = run_experiment(cfg, hook=lambda e, s, d: started.append(s) if e == "stage_start" else None, stream=None)
    assert started == ["train", "importance_after", "deactivation_after", "shift", "change", "evaluate", "ablation",
                       "report"]
    assert (run / "train" / "full" / "final" / "omnishift_config.json").stat().st_mtime_ns == full_mtime
    steps = [json.loads(x)["step"] for x in (run / "train" / "lora" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # resumed from the step-1 checkpoint, not restarted
    assert "importance/layer_lr.json" in (run / "train" / "layer_lr" / "config.yaml").read_text()  # injected

    # a third run does nothing but report that every stage is done
    again = []
    run_experiment(cfg, hook=lambda e, s, d: again.append(s), stream=None)
    assert again == []

    assert html == run / "report.html"
    text = html.read_text()
    md = (run / "report.md").read_text()
    for name in ("Table 1", "Table 2", "Table 3", "Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4", "trade-off",
                 "Training loss", "Forgetting curves"):
        assert name in text and name in md, name
    for row in ("No-FT", "Cascade", "Full-FT", "LoRA", "Layer-LR", "r=2"):
        assert row in md, row
    assert re.search(r"Distinct S2T answers .*Full-FT trivia \d+/3", md)
    assert "The mitigation target" in md and ("target not met" in md or "target met" in md)
    assert not re.findall(r'(?:src|href)="(?!data:|#)', text)  # self-contained
    tables = {p.name for p in (run / "report" / "tables").iterdir()}
    assert {"table1_deactivation.csv", "table2_qa.csv", "table3_lora_rank.csv", "shift_metrics.csv",
            "forgetting.csv", "table1_deactivation_full.csv"} <= tables
    after = json.loads((run / "deactivation_after" / "full" / "rows.json").read_text())
    base = json.loads((run / "deactivation" / "rows.json").read_text())
    assert [r["input"] for r in after["rows"]] == ["text", "speech"] and after["model"] == "Full-FT"
    assert after["rows"][0]["base"] != base["rows"][0]["base"]  # the trained model, not the base one
    figs = {p.name for p in (run / "report" / "figures").iterdir()}
    assert {"fig1_rank_clustering.png", "fig2_layers_full.png", "fig3_layers_methods.png", "fig4_change.png",
            "loss.png", "tradeoff_t2t_s2t.png", "forgetting.png"} <= figs
    lora_curve = sorted(p.name for p in (run / "train" / "lora" / "probes").iterdir())
    assert lora_curve == ["step-00000000.json", "step-00000001.json", "step-00000002.json"]  # across the kill
    first = json.loads((run / "train" / "full" / "probes" / "step-00000000.json").read_text())["sets"]
    assert first["heldout"]["kl"] == pytest.approx(0, abs=1e-6)  # step 0 is the model it started from
    no_ft = json.loads((run / "evaluate" / "no_ft" / "trivia" / "t2t" / "summary.json").read_text())
    assert first["trivia"]["correct"] == pytest.approx(no_ft["accuracy"])  # asked as the evaluate stage asks
    last = json.loads((run / "train" / "full" / "probes" / "step-00000002.json").read_text())["sets"]["trivia"]
    full = json.loads((run / "evaluate" / "full" / "trivia" / "t2t" / "summary.json").read_text())
    assert last["correct"] == pytest.approx(full["accuracy"])  # the last point is the trained model's T2T
    assert full["answers_from"].endswith("step-00000002.json")  # the last point's answers, not generated again
    assert _generated_again(run, cfg, "full") == [json.loads(x)["output"] for x in
                                                  (run / "evaluate" / "full" / "trivia" / "t2t" / "items.jsonl")
                                                  .read_text().splitlines()]
    t2 = (run / "report" / "tables" / "table2_qa.csv").read_text().splitlines()
    assert t2[0] == "Method,trivia T2T,trivia S2T,web T2T,web S2T"
    assert [r.split(",")[0] for r in t2[1:]] == ["No-FT", "Cascade (ASR → LLM)", "Full-FT", "LoRA", "Layer-LR"]
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["stages"] == 12


def _generated_again(run, cfg, row: str) -> list[str]:
    """The T2T answers of ``row``'s final model to the trivia questions, generated afresh as the evaluate stage would."""
    from omnishift.data.manifest import read_manifest
    from omnishift.evaluate.qa import EvalSettings, build_eval_items, evaluate
    from omnishift.pipeline.importance_stages import load_trained

    ev = cfg.evaluate
    items = build_eval_items(read_manifest(run / "data" / "bench" / "trivia.jsonl"), "t2t", prompt=ev.prompt)
    evaluate(load_trained(run / "train" / row / "final"), items, run / "again",
             EvalSettings(prompt=ev.prompt, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens, progress=False))
    return [json.loads(x)["output"] for x in (run / "again" / "items.jsonl").read_text().splitlines()]


def test_stage_needing_missing_outputs_names_it(tmp_path, tiny_parts):
    cfg = experiment_from_dict(experiment(tmp_path, tiny_parts, stages=["evaluate"]), "test")
    with pytest.raises(ValueError, match="stage 'data'"):
        run_experiment(cfg, stream=None)


@pytest.mark.parametrize("change, message", [
    ({"stages": ["data", "trian"]}, "unknown stage 'trian'"),
    ({"train": {"methods": {"mine": {}}}}, "train.methods.mine has no config"),
    ({"train": {"methods": {"full": {"config": "nope/missing.yaml"}}}}, "training config 'nope/missing.yaml' not found"),
    ({"train": {"methods": {"full": {"confg": "x.yaml"}}}}, "unknown key 'train.methods.full.confg'"),
    ({"evaluate": {"baselines": ["no_ft", "oracle"]}}, "'oracle' unknown"),
    ({"importance": {"modalities": ["text", "vision"]}}, "importance.modalities"),
    ({"ablation": {"ranks": [4], "benchmarks": ["trivia"]}}, "not one of evaluate.benchmarks"),
    ({"reprot": {}}, "unknown key 'reprot'"),
    ({"train": {"drift": {"every": 2, "qa": ["trivia"]}}}, "train.drift.qa: 'trivia' is not one of evaluate.benchmarks"),
    ({"train": {"drift": {"qa": ["trivia"]}}, "evaluate": {"benchmarks": {"trivia": "builtin:demo_data/qa_trivia.jsonl"}}},
     "train.drift.every is 0"),
    ({"deactivation": {"after_training": ["fulll"]}}, "'fulll' is not one of train.methods"),
    ({"deactivation": {"after_training": ["full"]}, "importance": {"after_training": False}},
     "set importance.after_training: true"),
])
def test_config_errors(tmp_path, tiny_parts, change, message):
    d = experiment(tmp_path, tiny_parts)
    d.pop("ablation")
    d["evaluate"] = {}
    d.update(change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        experiment_from_dict(d, "test")


def test_redo_unknown_stage(tmp_path, tiny_parts):
    cfg = experiment_from_dict(experiment(tmp_path, tiny_parts), "test")
    with pytest.raises(ValueError, match="unknown stage 'reports'"):
        run_experiment(cfg, redo=["reports"], stream=None)


def test_demo_config_is_packaged_and_valid():
    from omnishift.pipeline.config import builtin_path, load_experiment

    cfg = load_experiment("builtin:demo.yaml", ["out_root=/tmp/x"])
    assert cfg.run_dir.as_posix() == "/tmp/x/demo"
    assert set(cfg.train.methods) == {"full", "lora"}
    for b in cfg.evaluate.benchmarks.values():
        assert builtin_path(b.source.split(":", 1)[1]).is_file()
    with pytest.raises(FileNotFoundError, match="shipped files"):
        builtin_path("nope.yaml")


def test_cli_run_reports_config_errors(tmp_path, capsys):
    from omnishift.cli import main

    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "experiment config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [data, evaluation]\n")
    assert main(["run", str(bad)]) == 2
    assert "unknown stage 'evaluation'" in capsys.readouterr().err
    assert main(["run", str(bad), "stages=[data]", "train.methods={mine: {}}"]) == 2
    assert "train.methods.mine has no config" in capsys.readouterr().err


def test_sharded_train_and_evaluate_then_plain_run_finishes(tmp_path, tiny_parts):
    """Two processes' shares of train and evaluate (run in turn here) + the plain run = the whole stage."""
    d = experiment(tmp_path, tiny_parts, stages=["data", "importance", "train", "importance_after", "evaluate"])
    d["train"]["methods"] = {"full": {}, "frozen": {}}
    d["evaluate"]["feature_cache"] = str(tmp_path / "features")
    cfg = experiment_from_dict(d, "test")
    run = cfg.run_dir
    run_experiment(cfg, stream=None, stage="data")
    assert read_marker(run, "data") is not None and read_marker(run, "train") is None
    run_experiment(cfg, stream=None, stage="importance")

    # evaluate before anything is trained: the baselines of shard 0 run, trained rows are skipped and listed
    run_experiment(cfg, stream=None, stage="evaluate", shard=(0, 2))
    done = sorted(str(p.parent.relative_to(run / "evaluate")) for p in (run / "evaluate").rglob("summary.json"))
    # units in order: no_ft x (trivia, web) t2t, cascade x (trivia, web) s2t, then full/lora x bench x mode
    assert done == ["cascade/trivia/s2t", "no_ft/trivia/t2t"]
    run_experiment(cfg, stream=None, stage="train", shard=(0, 2))
    run_experiment(cfg, stream=None, stage="importance_after", shard=(0, 2))  # full: trained
    run_experiment(cfg, stream=None, stage="importance_after", shard=(1, 2))  # frozen: not yet, skipped
    assert [p.parent.name for p in (run / "importance_after").glob("*/modules.csv")] == ["full"]
    run_experiment(cfg, stream=None, stage="train", shard=(1, 2))
    assert (run / "train" / "full" / "final").is_dir() and (run / "train" / "frozen" / "final").is_dir()
    assert read_marker(run, "train") is None and not (run / "train" / "loss.png").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in (run / "evaluate").rglob("items.jsonl")}
    busy = run / "evaluate" / "no_ft" / "web" / "t2t"  # a unit of shard 1 that another live process holds
    assert try_claim(busy)
    run_experiment(cfg, stream=None, stage="evaluate", shard=(1, 2))
    assert not (busy / "summary.json").exists() and (run / "evaluate" / "cascade" / "web" / "s2t" / "summary.json").is_file()
    release(busy)

    started = []
    run_experiment(cfg, hook=lambda e, s, x: started.append(s) if e == "stage_start" else None, stream=None)
    assert started == ["train", "importance_after", "evaluate"]
    assert sorted(p.parent.name for p in (run / "importance_after").glob("*/modules.csv")) == ["frozen", "full"]
    assert (run / "train" / "loss.png").is_file() and read_marker(run, "evaluate") is not None
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # shard 0's answers were reused, not redone
    n = len(list((run / "evaluate").rglob("summary.json")))
    assert n == 2 * 1 + 2 * 1 + 2 * 2 * 2  # no_ft t2t + cascade s2t + 2 methods x (t2t, s2t), per benchmark
    assert list(tmp_path.joinpath("features").rglob("*.safetensors"))  # S2T rows went through the cache

    # frozen (adaptor only) keeps the base LLM: its T2T units are No-FT's, and generating them agrees
    from omnishift.data.manifest import read_manifest
    from omnishift.evaluate.qa import EvalSettings, build_eval_items, evaluate
    from omnishift.pipeline.stages import load_trained

    outputs = lambda d: [json.loads(x)["output"] for x in (d / "items.jsonl").read_text().splitlines()]  # noqa: E731
    for bench in ("trivia", "web"):
        s = json.loads((run / "evaluate" / "frozen" / bench / "t2t" / "summary.json").read_text())
        assert s["copied_from"] == "no_ft" and s["row"] == "frozen"
        assert "copied_from" not in json.loads((run / "evaluate" / "full" / bench / "t2t" / "summary.json").read_text())
    items = build_eval_items(read_manifest(run / "data" / "bench" / "trivia.jsonl"), "t2t")
    evaluate(load_trained(run / "train" / "frozen" / "final"), items, tmp_path / "frozen_t2t",
             EvalSettings(batch_size=4, max_new_tokens=4, progress=False))
    assert outputs(tmp_path / "frozen_t2t") == outputs(run / "evaluate" / "no_ft" / "trivia" / "t2t")


def test_shard_errors(tmp_path, tiny_parts):
    from omnishift.pipeline.runner import parse_shard

    cfg = experiment_from_dict(experiment(tmp_path, tiny_parts), "test")
    with pytest.raises(ValueError, match="--shard needs --stage"):
        run_experiment(cfg, stream=None, shard=(0, 2))
    with pytest.raises(ValueError, match="--shard needs --stage"):
        run_experiment(cfg, stream=None, stage="data", shard=(0, 2))
    with pytest.raises(ValueError, match="not a stage of this experiment"):
        run_experiment(cfg, stream=None, stage="trainn")
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def tiny_recipe(tmp_path, **change) -> str:
    """The demo's recipe at test scale: 12 clips, 3 steps."""
    import yaml

    from omnishift.paths import builtin_file

    d = yaml.safe_load(builtin_file("demo_recipe.yaml").read_text())
    d["sets"][0]["n"], d["workers"] = 12, 1
    d["phases"][0].update(data={"heldout": 2}, loop={"max_steps": 3, "log_every": 1, "eval_every": 0},
                          objectives=[{"name": "ctc", "batch_size": 4}])
    d.update(change)
    f = tmp_path / "recipe.yaml"
    f.write_text(yaml.safe_dump(d))
    return str(f)


def test_align_stage_feeds_training_and_adds_the_aligned_row(tmp_path, tiny_tokenizer):
    """align before train: methods start from the aligned adaptor, and the aligned adaptor with the
    frozen LLM is a Table-2 row of its own (its T2T copied from No-FT after the weight check)."""
    parts = save_tiny_parts(tmp_path / "parts", tiny_tokenizer, seed=3, adaptor_norm=True, ctc_head=True,
                            frame_policy="clip", k=1)  # byte-level tiny tokenizer: one CTC label per character
    d = experiment(tmp_path, parts, stages=["data", "align", "train", "evaluate"])
    d["align"] = {"recipe": tiny_recipe(tmp_path), "workers": 1}
    d["train"] = {"overrides": TRAIN_OVERRIDES, "methods": {"frozen": {}}}
    d["evaluate"]["benchmarks"] = {"trivia": {"source": "builtin:demo_data/qa_trivia.jsonl", "limit": 2}}
    d["evaluate"]["baselines"] = ["no_ft"]
    d["evaluate"]["listening"] = 3
    cfg = experiment_from_dict(d, "test")
    run_experiment(cfg, stream=None)
    run = cfg.run_dir
    final = run / "align" / "final"
    assert json.loads((final / "omnishift_config.json").read_text())["llm_format"] == "base"
    assert json.loads((run / "align" / "sets" / "demo" / "summary.json").read_text())["clips"] >= 10
    assert str(final) in (run / "train" / "frozen" / "config.yaml").read_text()  # Stage 1 starts from it
    t2t = json.loads((run / "evaluate" / "aligned" / "trivia" / "t2t" / "summary.json").read_text())
    assert t2t["copied_from"] == "no_ft"
    assert (run / "evaluate" / "aligned" / "trivia" / "s2t" / "summary.json").is_file()
    heard = json.loads((run / "evaluate" / "aligned" / "trivia" / "ctc" / "summary.json").read_text())
    assert heard["n"] == 2 and 0 <= heard["wer"]
    from omnishift.report.build import build_report

    md = build_report(run).with_suffix(".md").read_text()
    assert "What the adaptor hears" in md and "Aligned adaptor, frozen LLM" in md and "Adaptor alignment" in md
    assert "Recipe " in md and "phase ctc: 3 steps" in md
    assert "Scale: the adaptor was aligned for 3 steps on 12 synthetic clips." in md and "Stage 1: Frozen" in md
    s2t = json.loads((run / "evaluate" / "aligned" / "trivia" / "s2t" / "summary.json").read_text())["accuracy"]
    assert (s2t < 0.05) == ("The recipe that makes it listen: `omnishift align cpu_listen`" in md)
    listen = json.loads((run / "evaluate" / "aligned" / "listening" / "summary.json").read_text())
    assert listen["n"] == 3 and listen["gain_nats"] == pytest.approx(
        __import__("math").log(listen["ppl_speech_mismatched"] / listen["ppl_speech"]))
    assert "Does the model listen?" in md


def test_the_align_stage_shares_a_recipe_folder_and_reads_its_adaptor_its_own_way(tmp_path, tiny_tokenizer):
    """``align.out_dir``: the parts that ``omnishift align`` made are reused, not trained again, and
    ``align.reading`` assembles the study's model in the run without touching that folder's own final."""
    import dataclasses

    from omnishift.align.recipe import load_recipe, run_recipe

    parts = save_tiny_parts(tmp_path / "parts", tiny_tokenizer, seed=3, adaptor_norm=True, ctc_head=True,
                            frame_policy="clip", k=1)
    d = experiment(tmp_path, parts, stages=["data", "align"])
    shared = tmp_path / "shared_align"
    recipe = tiny_recipe(tmp_path, speech_input="ctc_top1")
    model = experiment_from_dict(d, "test").model
    run_recipe(*load_recipe(recipe, [f"out_dir={shared}", f"model={json.dumps(dataclasses.asdict(model))}"]),
               progress=False)  # what `omnishift align RECIPE` leaves behind
    phase_log = next(shared.glob("phases/*/log.jsonl"))
    before = phase_log.stat().st_mtime_ns
    d["align"] = {"recipe": recipe, "workers": 1, "out_dir": str(shared),
                  "reading": {"speech_input": "ctc_soft", "ctc_decoding": None}}
    cfg = experiment_from_dict(d, "test")
    run_experiment(cfg, stream=None)
    assert phase_log.stat().st_mtime_ns == before  # reused by its inputs, not trained again
    study = json.loads((cfg.run_dir / "align" / "final" / "omnishift_config.json").read_text())
    own = json.loads((shared / "final" / "omnishift_config.json").read_text())
    assert (study["speech_input"], own["speech_input"]) == ("ctc_soft", "ctc_top1")
    assert json.loads((cfg.run_dir / "align" / "recipe.json").read_text())["speech_input"] == "ctc_soft"
    d["align"]["reading"] = {"speech_inputs": "ctc_soft"}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['speech_inputs'\]"):
        run_experiment(experiment_from_dict(d, "test"), stream=None, redo=["align"])


def test_align_needs_a_ctc_head_and_a_known_recipe(tmp_path, tiny_parts):
    d = experiment(tmp_path, tiny_parts)
    d["align"] = {"recipe": "builtin:demo_recipe.yaml"}
    with pytest.raises(ConfigError, match="ctc_head"):
        experiment_from_dict(d, "test")
    d["align"] = {"recipe": "cpu_hearing"}
    with pytest.raises(ConfigError, match=r"'cpu_hearing' is neither a shipped recipe \(\['cpu_listen'\]\)"):
        experiment_from_dict(d, "test")


def test_recipe_with_token_input_then_an_edited_recipe(tmp_path, tiny_tokenizer):
    """A recipe whose model reads its CTC path as token rows by beam search: Stage 1 trains the LLM only,
    the front end stays the aligned one (same transcripts for every row), decodings are cached once.
    Then the recipe YAML is edited: the finished run is stale, named before anything runs."""
    from safetensors.torch import load_file

    arch = dict(adaptor_norm=True, ctc_head=True, frame_policy="clip", k=1)
    parts = save_tiny_parts(tmp_path / "parts", tiny_tokenizer, seed=3, **arch)
    recipe = tiny_recipe(tmp_path, speech_input="ctc_top1", decoding={"beam": 2, "lm_weight": 0.5})
    cache = tmp_path / "fc"
    d = experiment(tmp_path, parts, stages=["data", "align", "train", "evaluate"])
    d["align"] = {"recipe": recipe, "workers": 1}
    d["train"] = {"overrides": TRAIN_OVERRIDES + [f"data.feature_cache={cache}"], "methods": {"full": {}}}
    d["evaluate"].update(benchmarks={"trivia": {"source": "builtin:demo_data/qa_trivia.jsonl", "limit": 2}},
                         baselines=["no_ft"], listening=2, feature_cache=str(cache))
    cfg = experiment_from_dict(d, "test")
    run_experiment(cfg, stream=None, stage="data")
    run_experiment(cfg, stream=None, stage="align")
    run = cfg.run_dir
    decoded = read_marker(run, "align")["decoded"]
    entries = set(cache.glob("ctc_tokens/*/*.json"))
    assert decoded["decoded"] == len(entries) >= 8 + 2  # training and benchmark clips (+ held-out ones, raw)
    run_experiment(cfg, stream=None)
    assert set(cache.glob("ctc_tokens/*/*.json")) == entries  # training, evaluation, listening: all hits
    final = run / "align" / "final"
    trained = load_file(run / "train" / "full" / "final" / "adaptor.safetensors")
    for k, v in load_file(final / "adaptor.safetensors").items():
        assert trained[k].equal(v), k  # no gradient reaches the adaptor through token rows
    heard = {row: (run / "evaluate" / row / "trivia" / "ctc" / "items.jsonl").read_text() for row in ("aligned", "full")}
    assert heard["aligned"] == heard["full"]
    from omnishift.report.build import build_report

    md = build_report(run).with_suffix(".md").read_text()
    assert "reads speech as ctc_top1" in md
    import yaml

    r = yaml.safe_load(open(recipe))
    r["phases"][0]["optim"]["lr"] = 5e-3
    open(recipe, "w").write(yaml.safe_dump(r))
    with pytest.raises(ValueError, match=r"stages \['align'\].*\['align.recipe'\].*--redo align"):
        run_experiment(experiment_from_dict(d, "test"), stream=None)
    with pytest.raises(ValueError, match=r"stages \['train', 'evaluate'\].*it reads stage align, which runs again"):
        run_experiment(experiment_from_dict(d, "test"), stream=None, redo=["align"])
    before = load_file(final / "adaptor.safetensors")
    run_experiment(experiment_from_dict(d, "test"), stream=None, redo=["align", "train", "evaluate"])
    after = load_file(final / "adaptor.safetensors")
    assert any(not before[k].equal(after[k]) for k in before)  # realigned with the new learning rate
    run_experiment(experiment_from_dict(d, "test"), stream=None)  # current again: nothing refused
