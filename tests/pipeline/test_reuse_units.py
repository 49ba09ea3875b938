"""Through ``omnishift run``: nothing on disk is kept unless the current model, data and settings made it.

Each case was a stale-answer bug: a retrained model kept its old answers, an edited benchmark its
old verdicts, a new prompt or answer cap the old summaries, because a unit counted as finished
when its summary had the expected number of items.
"""

from __future__ import annotations

import json

import pytest
from tiny_models import save_tiny_parts

from omnishift.evaluate.qa import EvalSettings, build_eval_items, evaluate
from omnishift.models.identity import folder_fingerprint
from omnishift.pipeline.config import experiment_from_dict
from omnishift.pipeline.runner import run_experiment
from omnishift.reuse import StaleUnitError

TRAIN = ["loop.max_steps=2", "loop.batch_size=4", "loop.grad_accum=1", "loop.progress=false", "loop.device=cpu",
         "checkpoint.save_every=1", "checkpoint.keep_last=1", "data.max_response_tokens=8", "optim.lr=1e-3",
         "optim.adaptor_lr=1e-3", "optim.warmup_ratio=0.0"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_tokenizer):
    return save_tiny_parts(tmp_path_factory.mktemp("parts"), tiny_tokenizer, seed=5)


@pytest.fixture()
def bench(tmp_path):
    """A three-question benchmark manifest the test may edit (text only: the data stage speaks it)."""
    rows = [{"id": "q1", "text": "What is the capital of France?", "answers": ["Paris"]},
            {"id": "q2", "text": "How many legs does a spider have?", "answers": ["eight"]},
            {"id": "q3", "text": "What is the chemical symbol for gold?", "answers": ["Au"]}]
    f = tmp_path / "bench.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _exp(tmp_path, parts, bench, *, adaptor_lr=1e-3, **evaluate):
    return experiment_from_dict({
        "name": "reuse", "out_root": str(tmp_path / "runs"), "model": dict(parts.__dict__),
        "stages": ["data", "train", "evaluate", "report"],
        "data": {"train": "builtin:demo_data/instructions.jsonl", "train_limit": 8},
        "train": {"overrides": TRAIN, "methods": {"frozen": {"overrides": [f"optim.adaptor_lr={adaptor_lr}"]}}},
        "evaluate": {"benchmarks": {"quiz": {"source": str(bench)}}, "baselines": ["no_ft"], "batch_size": 4,
                     "max_new_tokens": 4, **evaluate}}, "test")


def _outputs(folder):
    return [json.loads(x)["output"] for x in (folder / "items.jsonl").read_text().splitlines()]


def _fresh(model_dir, run, mode, tmp, prompt="instruction", max_new_tokens=4):
    """What the model answers now, evaluated from scratch outside the run."""
    from omnishift.data.manifest import read_manifest
    from omnishift.pipeline.stages import load_trained

    items = build_eval_items(read_manifest(run / "data" / "bench" / "quiz.jsonl"), mode, prompt=prompt)
    evaluate(load_trained(model_dir), items, tmp, EvalSettings(batch_size=4, max_new_tokens=max_new_tokens,
                                                               progress=False, prompt=prompt))
    return _outputs(tmp)


def _started(cfg, **kw):
    seen = []
    run_experiment(cfg, hook=lambda e, s, d: seen.append(s) if e == "stage_start" else None, stream=None, **kw)
    return seen


def test_a_retrained_model_is_evaluated_again(tmp_path, parts, bench):
    cfg = _exp(tmp_path, parts, bench)
    run_experiment(cfg, stream=None)
    run, final = cfg.run_dir, cfg.run_dir / "train" / "frozen" / "final"
    old = folder_fingerprint(final)
    s2t = run / "evaluate" / "frozen" / "quiz" / "s2t"
    assert json.loads((s2t / "UNIT.json").read_text())["inputs"]["model"] == old
    changed = _exp(tmp_path, parts, bench, adaptor_lr=5e-2)
    with pytest.raises(ValueError, match=r"stages \['train', 'evaluate'\].*config keys it reads changed"):
        run_experiment(changed, stream=None)  # refused before anything runs
    assert folder_fingerprint(final) == old
    assert _started(changed, redo=["train", "evaluate"]) == ["train", "evaluate", "report"]
    new = folder_fingerprint(final)
    assert new != old
    assert json.loads((s2t / "UNIT.json").read_text())["inputs"]["model"] == new
    assert _outputs(s2t) == _fresh(final, run, "s2t", tmp_path / "fresh")
    assert _started(changed) == []  # current: nothing runs


def test_redo_of_one_stage_names_the_stages_that_read_it(tmp_path, parts, bench):
    cfg = _exp(tmp_path, parts, bench)
    run_experiment(cfg, stream=None)
    before = folder_fingerprint(cfg.run_dir / "train" / "frozen" / "final")
    with pytest.raises(ValueError, match=r"stages \['evaluate'\].*it reads stage train, which runs again.*"
                                         r"--redo evaluate"):
        run_experiment(cfg, stream=None, redo=["train"])
    assert folder_fingerprint(cfg.run_dir / "train" / "frozen" / "final") == before
    assert _started(cfg, redo=["train", "evaluate"]) == ["train", "evaluate", "report"]


def test_an_edited_benchmark_is_refused_then_answered_anew(tmp_path, parts, bench):
    cfg = _exp(tmp_path, parts, bench, modes=["t2t"])
    run_experiment(cfg, stream=None)
    lines = bench.read_text().splitlines()
    lines[0] = json.dumps({"id": "q1", "text": "What is the capital of Japan?", "answers": ["Tokyo"]})
    bench.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"stages \['data'\].*\['evaluate.benchmarks.quiz'\].*--redo data"):
        run_experiment(cfg, stream=None)
    with pytest.raises(ValueError, match=r"stages \['train', 'evaluate'\].*it reads stage data, which runs again"):
        run_experiment(cfg, stream=None, redo=["data"])
    run_experiment(cfg, stream=None, redo=["data", "train", "evaluate"])
    for row in ("no_ft", "frozen"):
        first = json.loads((cfg.run_dir / "evaluate" / row / "quiz" / "t2t" / "items.jsonl").read_text().splitlines()[0])
        assert first["question"] == "What is the capital of Japan?" and first["references"] == ["Tokyo"], row


@pytest.mark.parametrize("change, field, value", [({"prompt": "plain"}, "prompt", "plain"),
                                                  ({"max_new_tokens": 2}, "max_new_tokens", 2)])
def test_redo_evaluate_after_a_prompt_or_length_change_answers_again(tmp_path, parts, bench, change, field, value):
    run_experiment(_exp(tmp_path, parts, bench, modes=["t2t"]), stream=None)
    cfg = _exp(tmp_path, parts, bench, modes=["t2t"], **change)
    with pytest.raises(ValueError, match=r"stages \['evaluate'\]"):
        run_experiment(cfg, stream=None)
    assert _started(cfg, redo=["evaluate"]) == ["evaluate", "report"]
    unit = cfg.run_dir / "evaluate" / "no_ft" / "quiz" / "t2t"
    assert json.loads((unit / "summary.json").read_text())[field] == value
    fresh = _fresh(cfg.run_dir / "train" / "frozen" / "final", cfg.run_dir, "t2t", tmp_path / "fresh",
                   prompt=cfg.evaluate.prompt, max_new_tokens=cfg.evaluate.max_new_tokens)
    assert _outputs(unit) == fresh
    assert _started(cfg) == []  # the marker took the new fingerprint only after every unit was redone


def test_an_unfinished_stage_refuses_units_made_from_other_inputs(tmp_path, parts, bench):
    run_experiment(_exp(tmp_path, parts, bench, modes=["t2t"]), stream=None)
    cfg = _exp(tmp_path, parts, bench, modes=["t2t"], prompt="plain")
    (cfg.run_dir / "evaluate" / "DONE").unlink()  # as if the stage had been cut short
    with pytest.raises(StaleUnitError, match=r"evaluation no_ft quiz t2t was made from other inputs \(changed: "
                                             r"\['prompt'\]\); rerun with --redo evaluate"):
        run_experiment(cfg, stream=None)
