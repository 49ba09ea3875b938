"""The training loop: exact kill-and-resume, NaN stops, accumulation, checkpoints, final folder."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch

from omnishift.models.speech_llm import SpeechLLM
from omnishift.train.checkpoint import checkpoint_dirs
from omnishift.train.trainer import build_model, limit_response_tokens, train


class Killed(Exception):
    pass


def _kill_at(step: int):
    def hook(record):
        if record["step"] == step:
            raise Killed(f"simulated kill after step {step}")
    return hook


def _log(out_dir) -> list[dict]:
    return [json.loads(x) for x in (out_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method,accum", [("full", 2), ("lora", 1)])
def test_kill_and_resume_is_bitwise_identical(make_config, speech_items, method, accum):
    # 6 items, batch 2: accum 2 -> steps of 2 + 1 micro-batches, the checkpoint at step 2 ends epoch 0;
    # accum 1 -> 3 steps per epoch, the checkpoint sits mid-epoch. Both runs go on into epoch 1.
    sections = dict(loop={"max_steps": 4, "grad_accum": accum}, checkpoint={"save_every": 2, "keep_last": 1})
    ref_cfg = make_config(method, out="ref", **sections)
    ref = train(ref_cfg, items=speech_items)

    cfg = make_config(method, out="killed", **sections)
    with pytest.raises(Killed):
        train(cfg, items=speech_items, on_step=_kill_at(3))
    run = cfg.out_dir
    assert [s for s, _ in checkpoint_dirs(f"{run}/checkpoints")] == [2]
    assert not (ref.parent.parent / "killed" / "final").exists()
    opt_state = torch.load(f"{run}/checkpoints/step-00000002/optimizer.pt", weights_only=True)
    assert opt_state["state"] and {g["name"] for g in opt_state["param_groups"]} >= {"adaptor"}

    with pytest.raises(ValueError, match=r"made from other inputs \(changed: \['data'\]\); train into a new out_dir"):
        train(cfg, items=speech_items[:5], resume=True)
    with open(f"{run}/log.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # killed mid-write: a torn last line is dropped, not a traceback
    out = train(cfg, items=speech_items, resume=True)
    a, b = SpeechLLM.from_pretrained(ref).state_dict(), SpeechLLM.from_pretrained(out).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ref_log, log = _log(ref.parent), _log(out.parent)
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # the killed run's step 3 was dropped and redone
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
    assert [r["grad_norm"] for r in log] == [r["grad_norm"] for r in ref_log]
    assert train(cfg, items=speech_items, resume=True) == out  # finished run: nothing to do


def test_nan_loss_stops_with_step_and_items(make_config, speech_items):
    cfg = make_config("full")
    model = build_model(cfg)
    with torch.no_grad():
        model.adaptor.linear2.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 1 .*batch items: \['q\d', 'q\d'\]"):
        train(cfg, model=model, items=speech_items)


def test_accumulation_matches_one_big_batch(make_config, speech_items):
    # loss is normalised over all response tokens of the step, so 2x2 micro-batches == 1x4
    big = make_config("full", out="big", loop={"batch_size": 4, "grad_accum": 1, "max_steps": 1})
    acc = make_config("full", out="acc", loop={"batch_size": 2, "grad_accum": 2, "max_steps": 1})
    a, b = train(big, items=speech_items[:4]), train(acc, items=speech_items[:4])
    la, lb = _log(a.parent)[0], _log(b.parent)[0]
    assert la["target_tokens"] == lb["target_tokens"]
    assert la["loss"] == pytest.approx(lb["loss"], rel=1e-5)
    assert la["grad_norm"] == pytest.approx(lb["grad_norm"], rel=1e-4)


def test_checkpoint_rotation_and_run_guards(make_config, speech_items):
    cfg = make_config("frozen", loop={"max_steps": 4}, checkpoint={"save_every": 1, "keep_last": 2})
    out = train(cfg, items=speech_items)
    assert [s for s, _ in checkpoint_dirs(out.parent / "checkpoints")] == [3, 4]
    assert json.loads((out.parent / "summary.json").read_text())["steps"] == 4
    with pytest.raises(FileExistsError, match="resume"):
        train(cfg, items=speech_items)
    changed = make_config("frozen", loop={"max_steps": 4, "seed": 1}, checkpoint={"save_every": 1, "keep_last": 2})
    with pytest.raises(ValueError, match=r"changed: \['loop.seed'\]"):
        train(changed, items=speech_items, resume=True)


def test_limit_response_tokens_keeps_first_tokens(tiny_speech_llm, speech_items):
    items = [dict(it, response="a much longer answer " * 3) for it in speech_items[:3]]
    batch = tiny_speech_llm.processor(items)
    cut = limit_response_tokens(batch, 4)
    assert (cut["labels"] != -100).sum(1).tolist() == [4, 4, 4]
    L = cut["labels"].shape[1]
    assert L < batch["labels"].shape[1] and cut["speech_mask"].sum() == batch["speech_mask"].sum()
    kept = cut["labels"] != -100
    assert torch.equal(cut["labels"][kept], batch["labels"][:, :L][kept])
    with torch.no_grad():  # causal: cropping the tail does not change the kept positions' logits
        full = tiny_speech_llm({k: v for k, v in batch.items() if k != "labels"}).logits[:, :L]
        part = tiny_speech_llm({k: v for k, v in cut.items() if k != "labels"}).logits
    assert torch.allclose(full[kept], part[kept], atol=1e-5)


def test_feature_cache_trains_the_same_and_is_reused(make_config, speech_items, tmp_path):
    import json

    from omnishift.train.trainer import train

    plain = train(make_config(out="plain"), items=speech_items)
    cache_dir = str(tmp_path / "feats")
    cached = train(make_config(out="cached", data={"feature_cache": cache_dir}), items=speech_items)
    losses = [[json.loads(x)["loss"] for x in (p.parent / "log.jsonl").read_text().splitlines()] for p in (plain, cached)]
    assert len(losses[0]) == len(losses[1]) == 3
    for a, b in zip(*losses):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a))
    n_files = len(list((tmp_path / "feats").rglob("*.safetensors")))
    assert n_files == len(speech_items)
    train(make_config(out="cached2", data={"feature_cache": cache_dir}), items=speech_items)
    assert len(list((tmp_path / "feats").rglob("*.safetensors"))) == n_files  # all hits, nothing new


def test_corrupt_audio_stops_before_training_and_names_the_item(make_config, tmp_path):
    """A manifest row whose WAV is unreadable fails at data loading, naming the row and the fix."""
    import soundfile as sf
    from tiny_models import tone

    sf.write(tmp_path / "good.wav", tone(0.5), 16000, subtype="PCM_16")
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00not a wav at all")
    rows = [{"id": "ok_1", "text": "hi", "audio": "good.wav", "response": "hello"},
            {"id": "broken_2", "text": "bye", "audio": "bad.wav", "response": "goodbye"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_config("full", data={"source": str(manifest), "modality": "speech", "audio_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="broken_2"):
        train(cfg)
    assert not (tmp_path / "run" / "final").exists()


def test_a_ctc_speech_input_drops_adaptor_groups_by_identity_not_by_name(tiny_tokenizer):
    """Under a CTC speech input the adaptor is frozen and its group dropped whatever it is called;
    a group that mixes adaptor and LLM parameters is refused rather than half-frozen."""
    from omnishift.train.methods import ParamGroup, setup_method
    from omnishift.train.trainer import _without_adaptor
    from tiny_models import make_tiny_speech_llm

    model = make_tiny_speech_llm(tiny_tokenizer)
    groups = setup_method(model, "full", {})
    renamed = [ParamGroup("projector" if g.name == "adaptor" else g.name, g.params) for g in groups]
    kept = _without_adaptor(model, renamed)
    assert [g.name for g in kept] == [g.name for g in groups if g.name != "adaptor"]
    assert not any(p.requires_grad for p in model.adaptor.parameters())

    mixed = [ParamGroup("all", list(model.adaptor.parameters()) + list(model.llm.parameters()))]
    with pytest.raises(ValueError, match="'all' mixes adaptor and LLM"):
        _without_adaptor(model, mixed)


@pytest.mark.parametrize("reading, moves", [("ctc_soft", True), ("ctc_peak", True), ("ctc_top1", False)])
def test_one_stage1_step_through_a_differentiable_reading_moves_every_adaptor_weight(
        make_config, speech_items, tiny_model_config, reading, moves):
    """Stage 1 trains adaptor and LLM together through the continuous path (the paper's kind): one
    full-FT step changes every adaptor weight the reading uses; through token rows none."""
    import dataclasses

    model_cfg = {**dataclasses.asdict(tiny_model_config), "adaptor_norm": True, "ctc_head": True,
                 "frame_policy": "clip", "speech_input": reading}
    cfg = make_config("full", model=model_cfg, optim={"lr": 1e-2, "adaptor_lr": 1e-2, "weight_decay": 0.0},
                      loop={"max_steps": 1, "batch_size": 6})
    model = build_model(cfg)
    with torch.no_grad():  # the blank never wins: every clip has CTC segments to read
        model.adaptor.ctc_blank.zero_()
        model.adaptor.ctc_blank[-1] = -1e4
    before = {k: v.clone() for k, v in model.adaptor.named_parameters()}
    llm_before = model.llm.get_input_embeddings().weight.detach().clone()
    train(cfg, model=model, items=speech_items)
    # the soft and peak readings score tokens, never the blank: its vector is not read
    unused = {"ctc_blank"} | ({"ctc_log_scale"} if reading == "ctc_peak" else set())
    changed = {k for k, v in model.adaptor.named_parameters() if not torch.equal(v, before[k])}
    assert changed == (set(before) - unused if moves else set())
    assert not torch.equal(model.llm.get_input_embeddings().weight, llm_before)  # the LLM trains too


def test_a_probe_draws_a_forgetting_curve_that_starts_at_zero_and_survives_a_resume(make_config, speech_items):
    import copy
    import json

    from omnishift.evaluate.drift import DriftProbe, ProbeSet, greedy_answers

    prompts = ["what is two plus two?", "name a colour", "say hello"]
    cfg = make_config("full", loop={"max_steps": 5})
    model = build_model(cfg)
    base = copy.deepcopy(model)
    answers = greedy_answers(base, prompts, 4)
    refs = [[answers[0]], ["no such answer"], [answers[2]]]
    qa = ProbeSet("qa", prompts, answers, references=refs, max_new_tokens=4)
    probe = DriftProbe(base, [ProbeSet("heldout", prompts, answers, flip=True, max_new_tokens=4), qa], every=2)

    def kill(rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt

    cfg.checkpoint.save_every = 1
    with pytest.raises(KeyboardInterrupt):
        train(cfg, model=model, items=speech_items, on_step=kill, probe=probe)
    folder = Path(cfg.out_dir) / "probes"
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000000.json", "step-00000002.json"]
    stamp = (folder / "step-00000002.json").stat().st_mtime_ns
    train(cfg, model=build_model(cfg), items=speech_items, resume=True, probe=probe)
    curve = [json.loads((folder / f"step-{s:08d}.json").read_text()) for s in (0, 2, 4, 5)]
    assert (folder / "step-00000002.json").stat().st_mtime_ns == stamp  # kept, not measured again
    first, last = curve[0]["sets"], curve[-1]["sets"]
    assert first["heldout"]["kl"] == pytest.approx(0, abs=1e-6) and first["heldout"]["flip"] == 0.0
    from omnishift.evaluate.scoring import is_correct

    right = [float(is_correct(a, r)) for a, r in zip(answers, refs)]  # at step 0 the model answers as the base
    assert first["qa"]["per_item"]["correct"] == right and right[1] == 0.0
    assert last["heldout"]["kl"] > 0 and len(last["heldout"]["per_item"]["kl"]) == len(prompts)
    assert last["qa"]["per_item"]["kl"] == last["heldout"]["per_item"]["kl"]  # same prompts, same base answers


def test_a_frozen_llm_does_not_drift(make_config, speech_items):
    import copy
    import json

    from omnishift.evaluate.drift import DriftProbe, ProbeSet, greedy_answers

    prompts = ["what is two plus two?", "name a colour"]
    cfg = make_config("frozen", loop={"max_steps": 2})
    model = build_model(cfg)
    base = copy.deepcopy(model)
    answers = greedy_answers(base, prompts, 4)
    train(cfg, model=model, items=speech_items,
          probe=DriftProbe(base, [ProbeSet("heldout", prompts, answers, flip=True, max_new_tokens=4)], 1))
    last = json.loads((Path(cfg.out_dir) / "probes" / "step-00000002.json").read_text())
    held = last["sets"]["heldout"]
    assert last["llm_unchanged"] and held["kl"] == pytest.approx(0, abs=1e-6) and held["flip"] == 0.0


def test_the_start_point_follows_from_the_start_answers_as_measuring_would_give_it(tiny_tokenizer):
    import copy

    from tiny_models import make_tiny_speech_llm

    from omnishift.evaluate.drift import DriftProbe, ProbeSet, drift, greedy_answers

    base = make_tiny_speech_llm(tiny_tokenizer)
    prompts = ["name a colour", "say hello", "what is two plus two?"]
    answers = greedy_answers(base, prompts, 4)
    refs = [[answers[0]], ["no such answer"], [answers[2]]]
    sets = [ProbeSet("heldout", prompts, answers, flip=True, max_new_tokens=4),
            ProbeSet("qa", prompts, answers, references=refs, max_new_tokens=4)]
    probe = DriftProbe(base, sets, 2)
    point = probe(copy.deepcopy(base), 0)
    assert point["llm_unchanged"]
    for s in sets:  # what measuring the start against itself gives, forward passes and generation included
        summary, per_item = drift(copy.deepcopy(base), base, prompts, answers, flip=s.flip, max_new_tokens=4,
                                  references=s.references)
        got = point["sets"][s.name]
        assert got["per_item"]["answer"] == [r["answer"] for r in per_item]
        assert got["per_item"]["kl"] == pytest.approx([r["kl"] for r in per_item], abs=1e-6)
        assert got["flip"] == summary["flip"] == 0.0 and got.get("correct") == summary.get("correct")
    moved = copy.deepcopy(base)
    with torch.no_grad():
        next(moved.llm.parameters()).add_(0.1)
    assert "llm_unchanged" not in probe(moved, 2) and probe(moved, 2)["sets"]["heldout"]["kl"] > 0


def test_a_curve_is_not_continued_by_another_probe(make_config, speech_items):
    import copy

    from omnishift.evaluate.drift import DriftProbe, ProbeSet, greedy_answers

    prompts = ["name a colour", "say hello"]
    cfg = make_config("full", loop={"max_steps": 4})
    cfg.checkpoint.save_every = 1
    model = build_model(cfg)
    base = copy.deepcopy(model)
    answers = greedy_answers(base, prompts, 4)

    def kill(rec):
        if rec["step"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, model=model, items=speech_items, on_step=kill,
              probe=DriftProbe(base, [ProbeSet("heldout", prompts, answers, max_new_tokens=4)], 2))
    other = DriftProbe(base, [ProbeSet("heldout", prompts[:1], answers[:1], max_new_tokens=4)], 2)
    with pytest.raises(ValueError, match="another probe"):
        train(cfg, model=build_model(cfg), items=speech_items, resume=True, probe=other)


def test_precision_bf16_autocasts_the_step_on_the_cpu_and_auto_keeps_fp32(make_config, speech_items, monkeypatch,
                                                                          caplog):
    from omnishift.train import trainer
    from omnishift.train.config import config_from_dict
    from omnishift.schema import ConfigError

    cpu = torch.device("cpu")
    x = torch.randn(4, 8)
    with trainer.autocast_for("auto", cpu)():
        assert (x @ x.T).dtype == torch.float32  # a CPU run's arithmetic does not change with the machine
    with trainer.autocast_for("bf16", cpu)():
        assert (x @ x.T).dtype == torch.bfloat16
    monkeypatch.setattr(trainer, "native_bf16", lambda device: False)
    with caplog.at_level("WARNING"):
        trainer.autocast_for("bf16", cpu)
    assert "loop.precision=fp32" in caplog.text
    monkeypatch.undo()

    fp32 = make_config("full", out="fp32", loop={"max_steps": 1, "precision": "fp32"})
    bf16 = make_config("full", out="bf16", loop={"max_steps": 1, "precision": "bf16"})
    a, b = _log(train(fp32, items=speech_items).parent)[0], _log(train(bf16, items=speech_items).parent)[0]
    assert a["loss"] != b["loss"]  # the products really ran in bfloat16 ...
    assert b["loss"] == pytest.approx(a["loss"], rel=2e-2)  # ... and the loss is the same to bf16's precision
    with pytest.raises(ConfigError, match="loop.precision"):
        config_from_dict({"loop": {"precision": "fp16"}}, "test")
