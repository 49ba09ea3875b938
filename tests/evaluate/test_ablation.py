"""LoRA rank ablation end to end on tiny random models: train, evaluate both modes, Table 3, resume."""

from __future__ import annotations

import json

import pytest
import yaml
from tiny_models import save_tiny_parts, tone

from omnishift.cli import main
from omnishift.data.manifest import Example, write_manifest
from omnishift.data.synth import write_wav


@pytest.fixture()
def setup(tmp_path, tiny_tokenizer):
    cfg = save_tiny_parts(tmp_path / "parts", tiny_tokenizer)
    wav = lambda name, i: str(write_wav(tmp_path / "wav" / f"{name}.wav", tone(0.3 + 0.1 * i, seed=i)))  # noqa: E731
    train_m = write_manifest(tmp_path / "train.jsonl", [
        Example(id=f"t{i}", text=f"question {i}", audio=wav(f"t{i}", i), response=r)
        for i, r in enumerate(["yes", "paris", "blue", "eight"])])
    qa = write_manifest(tmp_path / "qa.jsonl", [
        Example(id=f"q{i}", text=q, audio=wav(f"q{i}", i), answers=[a])
        for i, (q, a) in enumerate([("Capital of France?", "Paris"), ("Two plus two?", "4"), ("Sky colour?", "blue")])])
    config = {"model": {"llm": cfg.llm, "encoder": cfg.encoder, "adaptor_hidden": 24},
              "data": {"source": str(train_m), "modality": "speech"},
              "method": {"name": "full"}, "optim": {"lr": 1e-3, "warmup_ratio": 0.0},
              "loop": {"max_steps": 2, "batch_size": 2, "grad_accum": 1, "progress": False, "device": "cpu"},
              "checkpoint": {"save_every": 0}, "out_dir": str(tmp_path / "ignored")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    return tmp_path, qa


def test_ablate_rank_end_to_end_and_resume(setup, monkeypatch, capsys):
    root, qa = setup
    out = root / "abl"
    argv = ["ablate-rank", str(root / "cfg.yaml"), "optim.lr=2e-3", "--ranks", "2", "4", "--benchmark", str(qa),
            "--max-new-tokens", "3", "--out", str(out)]
    assert main(argv) == 0
    for r in (2, 4):
        adapter = json.loads((out / f"r{r}" / "train" / "final" / "llm_adapter" / "adapter_config.json").read_text())
        assert (adapter["r"], adapter["lora_alpha"]) == (r, 2 * r)
        saved = yaml.safe_load((out / f"r{r}" / "train" / "config.yaml").read_text())
        assert saved["optim"]["lr"] == 2e-3 and saved["method"]["name"] == "lora"  # user override kept
        for mode in ("t2t", "s2t"):
            s = json.loads((out / f"r{r}" / "eval" / "qa" / mode / "summary.json").read_text())
            assert (s["n"], s["mode"], s["lora_r"]) == (3, mode, r)
    lines = (out / "table3.md").read_text().splitlines()[2:]  # after the caption
    assert lines[0] == "| LoRA rank (α = 2r) | qa T2T | qa S2T |"
    assert [ln.split(" | ")[0] for ln in lines[2:4]] == ["| r=2", "| r=4"]
    assert len((out / "table3.csv").read_text().splitlines()) == 1 + 4

    # Resume: everything is done, so neither training nor model loading may happen again.
    import omnishift.models.speech_llm as sl
    import omnishift.train.trainer as tr

    def boom(*a, **k):
        raise AssertionError("redone")

    monkeypatch.setattr(tr, "train", boom)
    monkeypatch.setattr(sl.SpeechLLM, "from_pretrained", boom)
    before = (out / "table3.md").read_text()
    assert main(argv) == 0 and (out / "table3.md").read_text() == before


def test_ablate_rank_rejects_bad_ranks(setup):
    from omnishift.evaluate.ablation import ablate_rank

    root, qa = setup
    with pytest.raises(ValueError, match="distinct"):
        ablate_rank(root / "cfg.yaml", [8, 8], [str(qa)], root / "o")
    with pytest.raises(ValueError, match="positive"):
        ablate_rank(root / "cfg.yaml", [0], [str(qa)], root / "o")
