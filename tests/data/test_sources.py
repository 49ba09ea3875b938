"""Loaders: HF schemas on local parquet/Arrow fixtures; the shared reference data (integration)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from omnishift.data.manifest import SkipReport
from omnishift.data.sources import (
    HF_SCHEMAS, load_hf_dataset, load_instructions, load_llama_questions, load_source, load_web_questions,
)


def _clip(sr=22050, seconds=0.5, channels=2):
    x = 0.1 * np.sin(np.arange(int(sr * seconds)) / sr * 2 * np.pi * 300).astype(np.float32)
    import io

    buf = io.BytesIO()
    sf.write(buf, np.stack([x] * channels, 1), sr, format="WAV")
    return buf.getvalue()


def _rows(schema_name):
    sc = HF_SCHEMAS[schema_name]
    n = 3
    cols = {sc.text: [f"question {i}?" for i in range(n)]}
    cols[sc.audio] = [{"bytes": _clip(), "path": f"{i}.wav"} for i in range(n)]
    if sc.response:
        cols[sc.response] = [f"answer {i}." for i in range(n)]
    if sc.answers:
        cols[sc.answers] = [[f"a{i}", f"b{i}"] if sc.answers == "answers" else f"a{i}" for i in range(n)]
    return cols


@pytest.mark.parametrize("schema", sorted(HF_SCHEMAS))
@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_hf_schemas_on_local_fixtures(tmp_path, schema, fmt):
    from datasets import Audio, Dataset

    ds = Dataset.from_dict(_rows(schema)).cast_column(HF_SCHEMAS[schema].audio, Audio(decode=False))
    if fmt == "parquet":
        path = tmp_path / "data.parquet"
        ds.to_parquet(str(path))
    else:
        path = tmp_path / "arrow"
        ds.save_to_disk(str(path))
    exs = load_hf_dataset(str(path), "train", tmp_path / "audio", schema=schema)
    assert len(exs) == 3 and exs[1].text == "question 1?"
    info = sf.info(exs[0].audio)
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    assert exs[0].duration == pytest.approx(0.5, abs=1e-3)
    sc = HF_SCHEMAS[schema]
    if sc.response:
        assert exs[2].response == "answer 2."
    if sc.answers:
        assert exs[0].answers in (["a0", "b0"], ["a0"])


def test_hf_bad_audio_raise_or_counted_skip(tmp_path):
    from datasets import Dataset

    rows = _rows("GSQA/spoken-alpaca-gpt4")
    rows["input_audio"][1] = {"bytes": b"garbage", "path": "bad.wav"}
    Dataset.from_dict(rows).to_parquet(str(tmp_path / "d.parquet"))
    with pytest.raises(ValueError, match="spoken-alpaca-gpt4_000001"):
        load_hf_dataset(str(tmp_path / "d.parquet"), "train", tmp_path / "a", schema="GSQA/spoken-alpaca-gpt4")
    report = SkipReport()
    exs = load_hf_dataset(str(tmp_path / "d.parquet"), "train", tmp_path / "a", schema="GSQA/spoken-alpaca-gpt4",
                          on_error="skip", report=report)
    assert len(exs) == 2 and report.count == 1
    with pytest.raises(ValueError, match="no column mapping"):
        load_hf_dataset(str(tmp_path / "d.parquet"), "train", tmp_path / "a")
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("nowhere")


@pytest.mark.integration
def test_shared_reference_data(shared_data):
    lq = load_llama_questions(shared_data)
    assert len(lq) == 300 and lq[0].text == "What is the capital of France?" and lq[0].answers == ["Paris"]
    assert all(sf.info(e.audio).samplerate == 16000 for e in lq[:5])
    assert len(load_web_questions("test", shared_data)) == 2032
    demo = load_instructions("alpaca_gpt4_llamafactory_demo1k", shared_data)
    assert len(demo) == 534 and all(e.response for e in demo)
    assert len(load_instructions("alpaca_gpt4_llamafactory_demo1k", shared_data, self_contained_only=False)) == 999
    assert len(load_source("instructions:dolly_alpagasus_3k", data_dir=shared_data, limit=10)) == 10
