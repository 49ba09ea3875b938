"""``omnishift train`` under ``accelerate launch`` (2 CPU processes, gloo) = the same run on 1 process.

The global batch is defined by the config alone (each micro-batch is split over the processes),
and the response-token count is all-reduced, so 2 processes must follow the single-process
trajectory up to float summation order. The data is chosen so a step's last micro-batch holds one
item: rank 1 then has an empty shard and must still join the all-reduce.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from tiny_models import tone

from omnishift.models.speech_llm import SpeechLLM
from omnishift.train.config import load_config
from omnishift.train.distributed import shard
from omnishift.train.trainer import train

REPO = Path(__file__).resolve().parents[2]
DDP_CPU2 = REPO / "configs" / "accelerate" / "ddp_cpu2.yaml"


def test_shard_splits_contiguously_and_covers_everything():
    for n in range(9):
        for world in (1, 2, 3):
            parts = [shard(list(range(n)), r, world) for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard([7], 1, 2) == []  # a one-item micro-batch leaves rank 1 empty


def _manifest(root: Path, n: int) -> Path:
    answers = ["yes", "no idea", "paris", "eight legs", "blue", "forty two"]
    (root / "wavs").mkdir(parents=True)
    rows = []
    for i in range(n):
        sf.write(root / "wavs" / f"q{i}.wav", tone(0.3 + 0.1 * i, freq=200 + 40 * i, seed=i), 16000, subtype="PCM_16")
        rows.append({"id": f"q{i}", "text": f"question {i}", "audio": f"wavs/q{i}.wav", "response": answers[i]})
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config_file(tmp_path: Path, tiny_model_config, method: str, options: dict) -> Path:
    doc = {
        "model": {**tiny_model_config.__dict__},
        "data": {"source": str(_manifest(tmp_path / "data", 5)), "modality": "speech"},
        "method": {"name": method, "options": options},
        "optim": {"lr": 1e-3, "adaptor_lr": 1e-3, "warmup_ratio": 0.0, "weight_decay": 0.01},
        # 5 items, batch 2, accum 2: steps of (2 + 2) and (1) items; the 1-item batch leaves rank 1 empty
        "loop": {"epochs": 1, "max_steps": 4, "batch_size": 2, "grad_accum": 2, "seed": 0, "progress": False,
                 "device": "cpu"},
        "checkpoint": {"save_every": 2, "keep_last": 1},
        "out_dir": str(tmp_path / "unused"),
    }
    path = tmp_path / "run.yaml"
    path.write_text("# omnishift train run.yaml\n" + yaml.safe_dump(doc))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(out_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (out_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.distributed
@pytest.mark.parametrize("method,options", [
    ("full", {}),
    ("lora", {"r": 4, "dropout": 0.0}),  # no dropout: per-rank masks cannot match one process's masks
])
def test_two_processes_match_one(tmp_path, tiny_model_config, method, options):
    cfg_file = _config_file(tmp_path, tiny_model_config, method, options)
    one = train(load_config(cfg_file, [f"out_dir={tmp_path / 'one'}"]))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CPU2),
           "--main_process_port", str(_free_port()), "-m", "omnishift", "train", str(cfg_file), f"out_dir={tmp_path / 'two'}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    two = tmp_path / "two" / "final"

    log1, log2 = _log(one.parent), _log(two.parent)
    assert [r["step"] for r in log2] == [1, 2, 3, 4]  # written once, by the main process only
    assert [r["target_tokens"] for r in log2] == [r["target_tokens"] for r in log1]  # global count
    assert [r["tokens"] for r in log2] == [r["tokens"] for r in log1]
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(log1, log2))
    print(f"{method}: max |loss(1 proc) - loss(2 procs)| = {loss_diff:.3g}")
    assert loss_diff < 1e-5
    for a, b in zip(log1, log2):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["lr"] == a["lr"]  # one scheduler step per optimizer step, whatever the world size
    assert json.loads((two.parent / "summary.json").read_text())["processes"] == 2
    state = json.loads((two.parent / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert len(state["rng_ranks"]) == 2

    w1, w2 = SpeechLLM.from_pretrained(one).state_dict(), SpeechLLM.from_pretrained(two).state_dict()
    assert w1.keys() == w2.keys()
    weight_diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"{method}: max |weight difference| = {weight_diff:.3g}")
    assert weight_diff < 1e-5
