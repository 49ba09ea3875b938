"""Every shipped paper config runs: two optimizer steps under ``accelerate launch`` on 2 CPU
processes, with its model ids swapped for tiny random models of the same families (a Llama, and a
Whisper encoder with large-v3's 128 mel bins), so the first GPU user does not meet a config error
after an hour of data loading (issue 14, part 3).

Everything else in the config is kept as shipped: method and options (LoRA targets, Layer-LR
coefficients file layout), frame policy ``pad30``, k, optimizer, schedule, checkpoint layout; only
the batch, the step count, the device and the paths shrink to fit two CPU processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from tiny_models import make_tiny_encoder, make_tiny_llm, make_tiny_tokenizer, tone

REPO = Path(__file__).resolve().parents[2]
PAPER = sorted((REPO / "configs" / "paper").rglob("*.yaml"))
DDP_CPU2 = REPO / "configs" / "accelerate" / "ddp_cpu2.yaml"


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """Tiny Llama + 128-mel Whisper encoder folders, a spoken manifest and Layer-LR coefficients."""
    root = tmp_path_factory.mktemp("paper_tiny")
    tok = make_tiny_tokenizer()
    make_tiny_llm(len(tok)).save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    enc, fe = make_tiny_encoder(n_mels=128)
    enc.save_pretrained(root / "encoder")
    fe.save_pretrained(root / "encoder")
    (root / "wavs").mkdir()
    rows = []
    for i in range(4):
        sf.write(root / "wavs" / f"q{i}.wav", tone(0.4 + 0.1 * i, freq=220 + 30 * i, seed=i), 16000, subtype="PCM_16")
        rows.append({"id": f"q{i}", "text": f"question {i}", "audio": f"wavs/q{i}.wav", "response": f"answer {i}"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "layer_lr.json").write_text(json.dumps({"coefficients": {"0": 1.0, "1": 0.5}}))
    return root


@pytest.mark.distributed
@pytest.mark.parametrize("path", PAPER, ids=lambda p: str(p.relative_to(REPO / "configs" / "paper")))
def test_paper_config_runs_two_steps_on_two_processes(path, tiny_world, tmp_path):
    doc = yaml.safe_load(path.read_text())
    assert doc["model"]["encoder"] == "openai/whisper-large-v3" and "meta-llama" in doc["model"]["llm"]
    doc["model"].update(llm=str(tiny_world / "llm"), encoder=str(tiny_world / "encoder"), adaptor_hidden=24)
    doc["data"].update(source=str(tiny_world / "manifest.jsonl"), audio_dir=str(tmp_path / "wavs"))
    if "coefficients" in doc["method"]["options"]:
        doc["method"]["options"]["coefficients"] = str(tiny_world / "layer_lr.json")
    doc["loop"].update(max_steps=2, batch_size=2, grad_accum=1, device="cpu", progress=False)
    doc["checkpoint"] = {"save_every": 2, "keep_last": 1}
    doc["out_dir"] = str(tmp_path / "run")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"# omnishift train {cfg}\n" + yaml.safe_dump(doc))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CPU2), "--main_process_port",
           str(port), "-m", "omnishift", "train", str(cfg)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    run = tmp_path / "run"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 and r["loss"] == r["loss"] for r in log)
    ckpt = run / "checkpoints" / "step-00000002"
    assert {"trainable.safetensors", "optimizer.pt", "state.json"} <= {p.name for p in ckpt.iterdir()}
    assert len(json.loads((ckpt / "state.json").read_text())["rng_ranks"]) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    meta = json.loads((run / "final" / "omnishift_config.json").read_text())
    assert meta["frame_policy"] == "pad30" and meta["k"] == doc["model"]["k"]
    assert meta["llm_format"] == ("peft" if doc["method"]["name"] == "lora" else "full")
