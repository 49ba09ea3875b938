"""The one-file-plus-one-line recipes of docs/architecture.md, each done with a dummy."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import pytest
import torch

from omnishift.runs import DONE


def _marker(run_dir, stage):
    (run_dir / stage).mkdir(parents=True, exist_ok=True)
    (run_dir / stage / DONE).write_text(json.dumps({"stage": stage}))


def test_a_training_method_with_a_pipeline_input_is_one_line(tmp_path, monkeypatch):
    from omnishift.pipeline.config import experiment_from_dict
    from omnishift.pipeline.stages import Context, train_overrides
    from omnishift.report.names import display
    from omnishift.train.methods import METHODS, Method
    from omnishift.train.param_groups import setup_full

    @dataclass
    class Options:
        scores: str = ""

    monkeypatch.setitem(METHODS, "my_method", Method(lambda m, o: setup_full(m, o), Options, "My method",
                                                     inputs={"scores": "text_scores"}))
    run = tmp_path / "run"
    for stage in ("data", "importance"):
        _marker(run, stage)
    (run / "importance" / "base" / "text").mkdir(parents=True)
    (run / "importance" / "base" / "text" / "modules.csv").write_text("layer,module,score\n")
    cfg = experiment_from_dict({"name": "x", "train": {"methods": {"my_method": {}}}})
    overrides = train_overrides(Context(cfg, run, progress=None), "my_method", [])
    assert f'method.options.scores="{run / "importance" / "base" / "text"}"' in overrides  # filled from its record
    assert display("my_method") == "My method"


def test_an_alignment_objective_is_one_line(tmp_path, monkeypatch, tiny_tokenizer):
    from tiny_models import make_tiny_speech_llm

    from omnishift.align import objectives
    from omnishift.align.config import load_align_config
    from omnishift.align.dataset import write_alignment_set
    from omnishift.align.trainer import align
    from omnishift.models.feature_cache import encoder_identity

    @dataclass
    class Options:
        target: float = 0.0

    def loss(model, items, options):  # pull the adaptor outputs' mean to a target
        emb, _ = objectives.speech_outputs(model, items)
        return (emb.mean() - options.target).pow(2) * len(items), len(items)

    monkeypatch.setitem(objectives.OBJECTIVES, "my_loss", objectives.Objective(loss, Options))
    m = make_tiny_speech_llm(tiny_tokenizer, adaptor_norm=True, ctc_head=True, frame_policy="clip")
    fp = m.processor.frame_policy
    states = [torch.randn(20, m.encoder.config.d_model) for _ in range(6)]
    set_dir = write_alignment_set(tmp_path / "set", [{"id": f"c{i}", "text": "hi"} for i in range(6)], states,
                                  encoder="tiny", encoder_identity=encoder_identity(m.encoder),
                                  policy={"policy": fp.policy, "k": fp.k, "margin_s": fp.margin_s,
                                          "max_frames": fp.max_frames})
    cfg = load_align_config(None, [f"data.set={set_dir}", "data.heldout=1", f"out_dir={tmp_path / 'run'}",
                                   "objectives=[{name: my_loss, batch_size: 2, options: {target: 0.5}}]",
                                   "loop.max_steps=3", "loop.eval_every=0", "loop.progress=false",
                                   "checkpoint.save_every=0"])
    align(cfg, model=m)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log][-1] == 3 and all("loss_my_loss" in r for r in log)


def test_a_pipeline_stage_is_one_line(tmp_path, monkeypatch):
    from omnishift.pipeline import stages
    from omnishift.pipeline.config import experiment_from_dict
    from omnishift.pipeline.runner import run_experiment

    def stage_hello(ctx, out):
        (out / "hello.txt").write_text("hi")
        return {"said": "hi"}

    monkeypatch.setitem(stages.STAGES, "hello", stages.Stage(stage_hello, False, "a greeting"))
    cfg = experiment_from_dict({"name": "x", "out_root": str(tmp_path), "stages": ["hello"]})
    run_experiment(cfg, stream=None)
    marker = json.loads((tmp_path / "x" / "hello" / DONE).read_text())
    assert marker["said"] == "hi" and marker["produces"] == "a greeting"
    assert json.loads((tmp_path / "x" / "stages.json").read_text()) == {"hello": "a greeting"}


def test_a_cli_command_module_is_one_line(monkeypatch, capsys):
    from omnishift import cli

    mod = types.ModuleType("omnishift_dummy_commands")

    def register(sub):
        s = sub.add_parser("hello", help="say hello")
        s.add_argument("--name", default="world")
        s.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)

    mod.register = register
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, mod.__name__])
    assert cli.main(["hello", "--name", "omnishift"]) == 0
    assert capsys.readouterr().out == "hello omnishift\n"


def test_a_synthesizer_is_one_line(monkeypatch):
    import numpy as np

    from omnishift.data import voices
    from omnishift.data.augment import AugmentConfig

    eng = voices.Engine(lambda: ["tone:a"], lambda rng, vs, aug: {"voice": vs[0], "rate": 1, "pitch": 1},
                        lambda text, plan: np.zeros(1600, np.float32))
    monkeypatch.setitem(voices.ENGINES, "tone", eng)
    aug = AugmentConfig(engines=(("tone", 1.0),))
    plan, _ = voices.clip_plan(0, 0, voices.engine_voices(aug), aug)
    assert plan["voice"] == "tone:a" and voices.engine_of(plan["voice"]) == "tone"
    assert len(voices.ENGINES[voices.engine_of(plan["voice"])].speak("x", plan)) == 1600


@pytest.mark.parametrize("doc", ["docs/architecture.md"])
def test_the_recipes_doc_names_every_registry(doc):
    from pathlib import Path

    text = (Path(__file__).parents[1] / doc).read_text()
    for table in ("METHODS", "OBJECTIVES", "ENGINES", "STAGES", "RECIPES", "COMMAND_MODULES"):
        assert table in text
