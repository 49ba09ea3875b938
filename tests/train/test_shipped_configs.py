"""Every shipped YAML loads, says how to run it on its first line, and (accelerate) is valid for accelerate.

FSDP and DeepSpeed cannot run on this CPU machine; what is checkable offline is checked: the
files parse as accelerate cluster configs, every nested key is an ``accelerate launch`` option,
the launcher's own validation accepts them, and the FSDP plugin builds from the environment the
launcher would set.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from unittest import mock

import pytest

from omnishift.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
ALL_CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
# accelerate launch configs and `omnishift run` experiment files are not training configs
TRAIN_CONFIGS = [p for p in ALL_CONFIGS if not {"accelerate", "experiments"} & set(p.relative_to(REPO).parts)]
EXPERIMENT_CONFIGS = sorted((REPO / "configs" / "experiments").glob("*.yaml"))
ACCEL_CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def _command(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), f"{path}: first line must be a comment with the command that runs it"
    return shlex.split(first[2:])


def _launched_training_config(words: list[str]) -> tuple[Path, Path]:
    """``accelerate launch --config_file A -m omnishift train B ...`` -> (A, B)."""
    assert words[:3] == ["accelerate", "launch", "--config_file"], words
    assert words[4:7] == ["-m", "omnishift", "train"], words
    return REPO / words[3], REPO / words[7]


def test_all_configs_found():
    names = {str(p.relative_to(REPO / "configs")) for p in TRAIN_CONFIGS + ACCEL_CONFIGS}
    assert {f"paper/{m}/{k}.yaml" for m in ("llama3.2-1b", "llama3.1-8b") for k in ("full", "layer_lr", "lora")} <= names
    assert {f"accelerate/{n}.yaml" for n in ("ddp_cpu2", "ddp_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3")} <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_starts_with_the_command_that_runs_it(path):
    words = _command(path)
    assert words[0] in ("omnishift", "accelerate") and str(path.relative_to(REPO)) in words, words


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_training_config_loads_and_names_its_command(path):
    cfg = load_config(path)  # rejects unknown keys
    words = _command(path)
    rel = str(path.relative_to(REPO))
    if words[0] == "accelerate":
        accel, train_cfg = _launched_training_config(words)
        assert accel.is_file() and train_cfg == path
    else:
        assert words[:3] == ["omnishift", "train", rel], words
    assert cfg.method.name == path.stem


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_experiment_config_loads_and_names_its_command(path, monkeypatch):
    from omnishift.pipeline.config import load_experiment

    monkeypatch.chdir(REPO)  # their training configs are named relative to the repository
    cfg = load_experiment(path)  # rejects unknown keys, unknown methods and missing training configs
    assert _command(path)[:3] == ["omnishift", "run", str(path.relative_to(REPO))]
    assert cfg.name == path.stem


@pytest.mark.parametrize("size,llm,r", [("llama3.2-1b", "meta-llama/Llama-3.2-1B-Instruct", 8),
                                        ("llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 16)])
def test_paper_configs_follow_the_paper(size, llm, r):
    cfgs = {k: load_config(REPO / "configs" / "paper" / size / f"{k}.yaml") for k in ("full", "layer_lr", "lora")}
    for name, cfg in cfgs.items():
        m = cfg.model
        assert (m.llm, m.encoder, m.frame_policy, m.k, m.adaptor_hidden) == (llm, "openai/whisper-large-v3", "pad30", 5, 2048)
        assert cfg.loop.batch_size * cfg.loop.grad_accum == 32 and cfg.loop.epochs == 3
        assert (cfg.optim.lr, cfg.optim.warmup_ratio) == (2e-5, 0.03) and cfg.loop.device == "auto"
        assert cfg.out_dir == f"runs/paper/{size}/{name}"
    assert cfgs["lora"].method.options["r"] == r and cfgs["lora"].method.options["alpha"] == 2 * r
    # every setting except the method is shared, so comparisons differ only in the method (paper Sec. 3.2)
    strip = [{k: v for k, v in c.to_dict().items() if k not in ("method", "out_dir")} for c in cfgs.values()]
    assert strip[0] == strip[1] == strip[2]


def _launch_args(path: Path):
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "omnishift", "train", "x.yaml"])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize("path", ACCEL_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_is_valid(path):
    import yaml
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    accel, train_cfg = _launched_training_config(_command(path))
    assert accel == path and train_cfg.is_file()
    ClusterConfig.from_yaml_file(str(path))  # unknown top-level keys raise
    options = {a.dest for a in launch_command_parser()._actions}
    for section, values in yaml.safe_load(path.read_text()).items():
        if isinstance(values, dict) and section in ("fsdp_config", "deepspeed_config"):
            for key in values:  # accelerate launch copies them onto its args (fsdp_ prefix added)
                arg = key if section != "fsdp_config" or key.startswith("fsdp") else f"fsdp_{key}"
                assert arg in options, f"{path.name}: {section}.{key} is not an accelerate launch option"
    args = _launch_args(path)
    assert args.num_processes >= 2
    if path.name.startswith("deepspeed"):
        assert args.use_deepspeed and int(args.zero_stage) == int(path.stem[-1])
        assert int(args.gradient_accumulation_steps) == 1  # the trainer places accumulation boundaries
    elif path.name == "fsdp.yaml":
        assert args.use_fsdp


def test_fsdp_plugin_builds_from_the_launch_environment():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    env = prepare_multi_gpu_env(_launch_args(REPO / "configs" / "accelerate" / "fsdp.yaml"))
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
