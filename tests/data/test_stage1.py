"""``omnishift data stage1`` on local parquet fixtures written with the datasets' real column layouts
(issue 14 part 2), each with a broken row of every kind, and the LLaMA / Web Questions loaders on
fixtures of theirs.

Layouts, from the hub dataset cards:
* gpt-omni/VoiceAssistant-400K (README.md, commit 65dab70): split_name, index, round, question,
  question_audio (audio), answer, answer_snac.
* GSQA/spoken-alpaca-gpt4 (mirrored by voidful/spoken-alpaca-gpt4, README.md c17707f): instruction,
  input, output, speech_input, input_speaker, output_speaker, input_audio (audio), output_audio (audio).
* fixie-ai/spoken-web-questions (README.md, refs/pr/2): url, question, answers (sequence), audio (16 kHz).
* fixie-ai/llama-questions: question, answer, audio (test split).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from omnishift.cli import main


def _wav(sr=22050, seconds=0.6, channels=2, freq=300.0):
    t = np.arange(int(sr * seconds)) / sr
    x = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x] * channels, 1), sr, format="WAV")
    return buf.getvalue()


def _parquet(path, cols: dict, audio_cols: list[str]):
    from datasets import Audio, Dataset

    ds = Dataset.from_dict(cols)
    for c in audio_cols:
        ds = ds.cast_column(c, Audio(decode=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def voice_assistant(root):
    """6 rows: conversations c0 (rounds 0, 1), c1 (round 0), c2 (round 0: broken audio),
    c3 (round 0: empty answer), c4 (round 2 then 1: its first stored turn is round 1)."""
    idx = ["c0", "c0", "c1", "c2", "c3", "c4", "c4"]
    rnd = ["0", "1", "0", "0", "0", "2", "1"]
    audio = [{"bytes": _wav(freq=200 + 50 * i), "path": f"{i}.wav"} for i in range(7)]
    audio[3] = {"bytes": b"not a wav", "path": "bad.wav"}
    answer = [f"answer {i}" for i in range(7)]
    answer[4] = ""
    return _parquet(root / "va" / "train-00000.parquet", {
        "split_name": ["identity"] * 7, "index": idx, "round": rnd, "question": [f"question {i}?" for i in range(7)],
        "question_audio": audio, "answer": answer, "answer_snac": ["1 2 3"] * 7}, ["question_audio"])


def spoken_alpaca(root):
    """5 rows: one 48 kHz mono, one empty instruction, one silent-stereo-cancelling clip."""
    n = 5
    audio = [{"bytes": _wav(), "path": f"{i}.wav"} for i in range(n)]
    audio[1] = {"bytes": _wav(sr=48000, channels=1), "path": "48k.wav"}
    t = np.arange(8000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 250 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x, -x], 1), 16000, format="WAV")
    audio[4] = {"bytes": buf.getvalue(), "path": "anti.wav"}
    instr = [f"Give me tip number {i}." for i in range(n)]
    instr[3] = "   "
    return _parquet(root / "sa" / "0000.parquet", {
        "instruction": instr, "input": [""] * n, "output": [f"Tip {i}." for i in range(n)],
        "speech_input": instr, "input_speaker": ["spk"] * n, "output_speaker": ["spk"] * n,
        "input_audio": audio, "output_audio": [{"bytes": _wav(), "path": "o.wav"}] * n},
        ["input_audio", "output_audio"])


def test_stage1_keeps_first_turns_resamples_skips_with_reasons_and_holds_out(tmp_path):
    va, sa = voice_assistant(tmp_path), spoken_alpaca(tmp_path)
    out = tmp_path / "stage1"
    assert main(["data", "stage1", "--out", str(out), "--sources", f"voice_assistant={va.parent}",
                 f"spoken_alpaca={sa.parent}", "--test-size", "2", "--seed", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    va_s, sa_s = summary["sources"]["voice_assistant"], summary["sources"]["spoken_alpaca"]
    # VoiceAssistant: first turns of c0..c4 = rows 0, 2, 3, 4, 6; row 3 undecodable, row 4 no answer
    assert va_s["kept"] == 3 and va_s["skipped"] == 2
    assert any("decode" in r for r in va_s["skipped_by_reason"]) and any("empty" in r for r in va_s["skipped_by_reason"])
    assert sa_s["kept"] == 3 and sa_s["skipped"] == 2  # empty instruction, anti-phase stereo
    train = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (out / "test.jsonl").read_text().splitlines()]
    assert len(train) == 4 and len(test) == 2 and not {r["id"] for r in train} & {r["id"] for r in test}
    texts = {r["text"] for r in train + test}
    assert "question 1?" not in texts and "question 5?" not in texts  # second turns dropped
    assert {"question 0?", "question 2?", "question 6?"} <= texts  # c4's first stored turn is round 1
    for r in train + test:
        info = sf.info(out / r["audio"])
        assert info.samplerate == 16000 and info.channels == 1 and r["response"]
    again = tmp_path / "again"
    main(["data", "stage1", "--out", str(again), "--sources", f"voice_assistant={va.parent}",
          f"spoken_alpaca={sa.parent}", "--test-size", "2", "--seed", "3"])
    assert (again / "test.jsonl").read_text() == (out / "test.jsonl").read_text()  # seeded hold-out


def test_stage1_refuses_unknown_sources_and_too_small_data(tmp_path):
    from omnishift.data.stage1 import build_stage1

    with pytest.raises(ValueError, match="unknown stage-1 source"):
        build_stage1(tmp_path / "o", {"librispeech": "x"})
    sa = spoken_alpaca(tmp_path)
    with pytest.raises(ValueError, match="cannot hold out 500 test examples"):
        build_stage1(tmp_path / "o", {"spoken_alpaca": str(sa.parent)})


@pytest.mark.parametrize("web", ["chiyuanhsiao/spoken-web-questions", "fixie-ai/spoken-web-questions"])
def test_benchmark_loaders_on_their_real_layouts(tmp_path, web):
    from omnishift.data.sources import load_hf_dataset

    swq = _parquet(tmp_path / "swq" / "test-0.parquet", {
        "url": ["http://www.freebase.com/view/en/a", "http://www.freebase.com/view/en/b"],
        "question": ["what is the capital of peru?", "who wrote hamlet?"],
        "answers": [["Lima"], ["William Shakespeare", "Shakespeare"]],
        "audio": [{"bytes": _wav(sr=16000, channels=1), "path": "a.wav"}, {"bytes": _wav(), "path": "b.wav"}]},
        ["audio"])
    exs = load_hf_dataset(str(swq.parent), "test", tmp_path / "a", schema=web)
    assert [e.answers for e in exs] == [["Lima"], ["William Shakespeare", "Shakespeare"]]
    assert sf.info(exs[1].audio).samplerate == 16000
    llq = _parquet(tmp_path / "llq" / "test-0.parquet", {
        "question": ["What is the capital of France?", ""], "answer": ["Paris", "x"],
        "audio": [{"bytes": _wav(), "path": "a.wav"}, {"bytes": _wav(), "path": "b.wav"}]}, ["audio"])
    with pytest.raises(ValueError, match=r"row 1 .*empty \['question'\]"):
        load_hf_dataset(str(llq.parent), "test", tmp_path / "b", schema="fixie-ai/llama-questions")
    exs = load_hf_dataset(str(llq.parent), "test", tmp_path / "b", schema="fixie-ai/llama-questions", on_error="skip")
    assert len(exs) == 1 and exs[0].answers == ["Paris"]
