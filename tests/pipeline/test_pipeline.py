"""End to end on tiny random models: every stage, an interrupted training resumed, the report."""

from __future__ import annotations

import json
import re

import pytest
from tiny_models import save_tiny_parts

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
                  "methods": {"full": {}, "lora": {"overrides": ["method.options.r=2"]}, "layer_lr": {}}},
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
    cfg = experiment_from_dict(experiment(tmp_path, tiny_parts), "test")
    run = cfg.run_dir

    def kill_in_lora(event, stage, detail):
        if event == "step" and stage == "train" and detail["task"].startswith("train lora") and detail["step"] == 1:
            raise Kill("simulated kill after LoRA step 1")

    with pytest.raises(Kill):
        run_experiment(cfg, hook=kill_in_lora, stream=None)
    for stage in ("data", "importance", "deactivation"):
        assert read_marker(run, stage) is not None
    assert read_marker(run, "train") is None  # interrupted inside the stage
    assert (run / "train" / "full" / "final").is_dir()
    assert (run / "train" / "lora" / "checkpoints").is_dir() and not (run / "train" / "lora" / "final").exists()
    full_mtime = (run / "train" / "full" / "final" / "omnishift_config.json").stat().st_mtime_ns

    started = []
    html = run_experiment(cfg, hook=lambda e, s, d: started.append(s) if e == "stage_start" else None, stream=None)
    assert started == ["train", "importance_after", "shift", "change", "evaluate", "ablation", "report"]
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
                 "Training loss"):
        assert name in text and name in md, name
    for row in ("No-FT", "Cascade", "Full-FT", "LoRA", "Layer-LR", "r=2"):
        assert row in md, row
    assert not re.findall(r'(?:src|href)="(?!data:|#)', text)  # self-contained
    tables = {p.name for p in (run / "report" / "tables").iterdir()}
    assert {"table1_deactivation.csv", "table2_qa.csv", "table3_lora_rank.csv", "shift_metrics.csv"} <= tables
    figs = {p.name for p in (run / "report" / "figures").iterdir()}
    assert {"fig1_rank_clustering.png", "fig2_layers_full.png", "fig3_layers_methods.png", "fig4_change.png",
            "loss.png", "tradeoff_t2t_s2t.png"} <= figs
    t2 = (run / "report" / "tables" / "table2_qa.csv").read_text().splitlines()
    assert t2[0] == "Method,trivia T2T,trivia S2T,web T2T,web S2T"
    assert [r.split(",")[0] for r in t2[1:]] == ["No-FT", "Cascade (ASR → LLM)", "Full-FT", "LoRA", "Layer-LR"]
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["stages"] == 10


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
