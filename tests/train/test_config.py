"""Training configs: YAML -> typed sections, overrides, and loud rejection of unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnishift.models.speech_llm import SpeechLLMConfig
from omnishift.train.config import ConfigError, TrainConfig, dump_config, load_config
from omnishift.train.methods import METHODS, LoraOptions, parse_options

DEFAULTS = Path(__file__).resolve().parents[2] / "configs" / "default"


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", sorted(METHODS))  # every registered method ships a default config
def test_default_configs_load(name):
    path = DEFAULTS / f"{name}.yaml"
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and f"omnishift train configs/default/{name}.yaml" in first
    cfg = load_config(path)
    assert cfg.method.name == name
    assert cfg.model.llm == "smollm2-135m-instruct" and cfg.model.encoder == "whisper-tiny.en"
    assert cfg.model.frame_policy == "trim"
    parse_options(cfg.method.name, cfg.method.options)


def test_types_and_yaml_float_quirk(tmp_path):
    # PyYAML reads 2e-5 (no dot) as a string; float fields must still get a float
    cfg = load_config(_write(tmp_path, "optim:\n  lr: 2e-5\nloop:\n  max_steps: 7\n"))
    assert cfg.optim.lr == 2e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.loop.max_steps == 7 and cfg.optim.adaptor_lr == 1e-4
    assert isinstance(cfg.model, SpeechLLMConfig)


def test_overrides_parse(tmp_path):
    path = _write(tmp_path, "method:\n  name: full\n")
    cfg = load_config(path, ["optim.lr=1e-5", "loop.max_steps=10", "loop.progress=false", "method.name=lora",
                             "method.options.r=16", "method.options.target_modules=[q_proj, v_proj]",
                             "model.k=3", "checkpoint.keep_last=0", "data.limit=null"])
    assert cfg.optim.lr == 1e-5 and cfg.loop.max_steps == 10 and cfg.loop.progress is False
    assert cfg.method.name == "lora" and cfg.model.k == 3 and cfg.checkpoint.keep_last == 0 and cfg.data.limit is None
    opts = parse_options(cfg.method.name, cfg.method.options)
    assert isinstance(opts, LoraOptions) and opts.r == 16 and opts.target_modules == ["q_proj", "v_proj"]
    assert load_config(path, ["model=/some/saved/speech_llm"]).model == "/some/saved/speech_llm"


@pytest.mark.parametrize("text,key", [
    ("optim:\n  learning_rate: 1.0e-5\n", "optim.learning_rate"),
    ("lopo:\n  epochs: 1\n", "lopo"),
    ("model:\n  llm_name: x\n", "model.llm_name"),
    ("method:\n  name: lora\n  options:\n    rank: 8\n", "method.options.rank"),
])
def test_unknown_keys_rejected(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"'{key}'" in msg and str(path) in msg and "valid keys" in msg


def test_unknown_key_from_override_and_bad_values(tmp_path):
    path = _write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"'loop\.stepz'.*valid keys.*max_steps"):
        load_config(path, ["loop.stepz=3"])
    with pytest.raises(ConfigError, match=r"'loop\.batch_size' = 'abc' is not a int"):
        load_config(path, ["loop.batch_size=abc"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["loop.batch_size"])
    with pytest.raises(ConfigError, match=r"unknown method\.name 'qlora'.*" + "full"):
        load_config(path, ["method.name=qlora"])
    with pytest.raises(ConfigError, match=r"needs key\(s\) \['coefficients'\]"):
        load_config(path, ["method.name=layer_lr"])


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["method.name=lora", "method.options.r=4", "optim.lr=3e-5", "out_dir=x"])
    assert load_config(_write(tmp_path, dump_config(cfg))) == cfg
    assert isinstance(TrainConfig().model, SpeechLLMConfig)


def test_registry_is_one_table(monkeypatch):
    from dataclasses import dataclass

    from omnishift.train.methods import Method, setup_frozen

    assert set(METHODS) == {"full", "layer_lr", "lora", "frozen", "region_freeze", "text_control"}

    @dataclass
    class Opts:
        strength: float = 1.0

    # one line in the table makes a new method and its options known to the config loader
    monkeypatch.setitem(METHODS, "my_method", Method(setup_frozen, Opts))
    cfg = load_config(None, ["method.name=my_method", "method.options.strength=2"])
    assert parse_options(cfg.method.name, cfg.method.options) == Opts(2.0)
    with pytest.raises(ConfigError, match=r"'method.options.strenght'.*\['strength'\]"):
        load_config(None, ["method.name=my_method", "method.options.strenght=2"])
