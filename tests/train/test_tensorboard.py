"""TensorBoard scalars under out_dir/tb/ hold exactly what log.jsonl holds, also across a resume."""

from __future__ import annotations

import json

import pytest

from omnishift.train.trainer import train


def _scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class Killed(Exception):
    pass


def test_tensorboard_matches_log_jsonl_after_kill_and_resume(make_config, speech_items):
    cfg = make_config("full", loop={"max_steps": 4}, checkpoint={"save_every": 2, "keep_last": 1})

    def kill_at_3(record):
        if record["step"] == 3:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, items=speech_items, on_step=kill_at_3)  # TB got step 3, which the resume redoes
    out = train(cfg, items=speech_items, resume=True)
    log = [json.loads(x) for x in (out.parent / "log.jsonl").read_text().splitlines()]
    tb = _scalars(out.parent / "tb")

    # the killed run's step-3 event is purged: one value per step, equal to the log's (float32)
    assert [s for s, _ in tb["train/loss"]] == [1, 2, 3, 4]
    for (step, value), rec in zip(tb["train/loss"], log):
        assert step == rec["step"] and value == pytest.approx(rec["loss"], rel=1e-6)
    for key in ("grad_norm", "tokens_per_s"):
        assert [v for _, v in tb[f"train/{key}"]] == pytest.approx([r[key] for r in log], rel=1e-6)
    for group in ("adaptor", "llm"):
        assert [v for _, v in tb[f"lr/{group}"]] == pytest.approx([r["lr"][group] for r in log], rel=1e-6)
