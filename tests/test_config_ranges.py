"""Config values out of range are refused at load, naming the key (issue 12: a negative LR trained
in the wrong direction, epochs 0 saved an untrained model, eval --limit 0 evaluated everything)."""

from __future__ import annotations

import pytest

from omnishift.cli import main
from omnishift.schema import ConfigError
from omnishift.train.config import load_config


@pytest.mark.parametrize("override,key", [
    ("optim.lr=-1e-4", "optim.lr"), ("optim.lr=0", "optim.lr"), ("optim.adaptor_lr=-1", "optim.adaptor_lr"),
    ("loop.batch_size=0", "loop.batch_size"), ("loop.grad_accum=0", "loop.grad_accum"),
    ("loop.max_steps=0", "loop.max_steps"), ("loop.epochs=0", "loop.epochs"), ("data.limit=0", "data.limit"),
    ("optim.warmup_ratio=1.5", "optim.warmup_ratio"), ("data.modality=video", "data.modality"),
])
def test_train_config_ranges(override, key):
    with pytest.raises(ConfigError, match=f"'{key}' = "):
        load_config(None, [override])


def test_epochs_zero_is_fine_when_max_steps_decides():
    assert load_config(None, ["loop.epochs=0", "loop.max_steps=5"]).loop.max_steps == 5


def test_align_config_ranges():
    from omnishift.align.config import load_align_config

    with pytest.raises(ConfigError, match="'optim.lr' = -0.1 must be > 0"):
        load_align_config(None, ["optim.lr=-0.1"])
    with pytest.raises(ConfigError, match="'data.limit' = 0"):
        load_align_config(None, ["data.limit=0"])


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "a\\\\b"])
def test_experiment_name_stays_inside_out_root(name):
    from omnishift.pipeline.config import experiment_from_dict

    with pytest.raises(ConfigError, match="plain folder name"):
        experiment_from_dict({"name": name})


@pytest.mark.parametrize("flag", ["--limit", "--subset", "--batch-size", "--max-new-tokens"])
def test_count_flags_refuse_zero(flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "base", "--benchmark", "llama_questions", "--out", "x", flag, "0"])
    assert e.value.code == 2 and f"argument {flag}: must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("section, key, value, want", [
    ("data", "train_limit", 0, "'data.train_limit' = 0 must be null or >= 1"),
    ("data", "train_limit", -3, "'data.train_limit' = -3 must be null or >= 1"),
    ("data", "train_limit", 2.5, "'data.train_limit' = 2.5 does not fit"),
    ("evaluate", "max_new_tokens", 0, "'evaluate.max_new_tokens' = 0 must be >= 1"),
    ("evaluate", "prompt", "plane", "evaluate.prompt: 'plane' unknown"),
])
def test_run_refuses_counts_out_of_range_as_eval_does(section, key, value, want):
    """``limit: 0`` once meant "all" inside ``omnishift run`` while ``eval --limit 0`` was refused."""
    from omnishift.pipeline.config import experiment_from_dict

    with pytest.raises(ConfigError, match=__import__("re").escape(want)):
        experiment_from_dict({"name": "x", section: {key: value}})


@pytest.mark.parametrize("value", [0, -1])
def test_a_benchmark_limit_of_zero_or_less_is_refused(value):
    from omnishift.pipeline.config import experiment_from_dict

    with pytest.raises(ConfigError, match=f"'limit' = {value} must be null or >= 1"):
        experiment_from_dict({"name": "x", "evaluate": {"benchmarks": {"b": {"source": "llama_questions",
                                                                            "limit": value}}}})


def test_load_source_refuses_a_zero_limit(tmp_path):
    from omnishift.data.sources import load_source

    f = tmp_path / "m.jsonl"
    f.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n')
    assert len(load_source(str(f), limit=1)) == 1 and len(load_source(str(f))) == 2
    with pytest.raises(ValueError, match="limit 0 must be a whole number >= 1"):
        load_source(str(f), limit=0)
