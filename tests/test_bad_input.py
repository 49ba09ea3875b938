"""Bad input and refusing file systems: a clear error naming the item and the fix, nothing lost."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from tiny_models import make_tiny_speech_llm

from omnishift.cli import main
from omnishift.data.manifest import Example, read_manifest
from omnishift.evaluate.qa import EvalSettings, build_eval_items, evaluate


def test_a_non_utf8_manifest_names_its_file_and_line(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n')  # Latin-1, not UTF-8
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 25\); save the manifest"):
        read_manifest(f)


def test_digital_silence_is_named_and_counted(tmp_path, tiny_tokenizer, caplog):
    quiet, loud = tmp_path / "quiet.wav", tmp_path / "loud.wav"
    sf.write(quiet, np.zeros(32000, np.int16), 16000, subtype="PCM_16")  # 2 s of digital silence
    sf.write(loud, (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    exs = [Example("q1", "Is it quiet?", audio=str(quiet), answers=["yes"]),
           Example("q2", "Is it loud?", audio=str(loud), answers=["yes"])]
    with caplog.at_level(logging.WARNING):
        items = build_eval_items(exs, "s2t")
    assert "item 'q1': audio is digital silence (2.0 s" in caplog.text and "'q2'" not in caplog.text
    s = evaluate(make_tiny_speech_llm(tiny_tokenizer), items, tmp_path / "out",
                 EvalSettings(max_new_tokens=2, progress=False))
    assert s["silent_audio"] == 1
    recs = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "out" / "items.jsonl").read_text().splitlines()}
    assert recs["q1"].get("silent_audio") is True and "silent_audio" not in recs["q2"]


def test_ctc_decoding_without_a_ctc_head_is_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match=r"has none \(ctc_head: false\): drop the --ctc-\* flags"):
        make_tiny_speech_llm(tiny_tokenizer, ctc_decoding={"beam": 4})


def test_a_second_evaluator_of_one_folder_is_refused(tmp_path, tiny_tokenizer):
    import socket

    out = tmp_path / "out"
    out.mkdir()
    (out / "CLAIM").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "since": 0}))  # a live process
    items = build_eval_items([Example("q1", "Two plus two?", answers=["four"])], "t2t")
    with pytest.raises(FileExistsError, match=r"process 1 on .* is evaluating into this folder; wait for it"):
        evaluate(make_tiny_speech_llm(tiny_tokenizer), items, out, EvalSettings(max_new_tokens=2, progress=False))
    assert sorted(p.name for p in out.iterdir()) == ["CLAIM"]  # nothing written beside the other's answers


LORA = str(__import__("pathlib").Path(__file__).parent.parent / "configs" / "default" / "lora.yaml")


@pytest.mark.parametrize("args", [["train", LORA, "out_dir=OUT"], ["eval", "base", "--benchmark", "llama_questions",
                                                              "--out", "OUT"]])
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, capsys, args):
    for out, words in ((tmp_path / "file.txt", "is a file"), ("/proc/omnishift-test/x", "cannot create a file there")):
        (tmp_path / "file.txt").write_text("x")
        assert main([a.replace("OUT", str(out)) for a in args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "Traceback" not in err, err


def test_a_feature_cache_that_is_a_file_is_named(tmp_path, tiny_tokenizer):
    from omnishift.models.feature_cache import EncoderFeatureCache

    (tmp_path / "fc").write_text("x")
    with pytest.raises(NotADirectoryError, match="feature cache .*fc is a file"):
        EncoderFeatureCache(tmp_path / "fc", make_tiny_speech_llm(tiny_tokenizer))


def test_a_file_size_limit_names_the_file_and_the_fix(tmp_path):
    """``ulimit -f`` (RLIMIT_FSIZE) in a child process: the write fails with EFBIG, said plainly."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16));"
            "from omnishift.paths import atomic_write_bytes;"
            f"atomic_write_bytes({str(tmp_path / 'big.bin')!r}, b'x' * (1 << 20))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "cannot write" in r.stderr and "big.bin" in r.stderr and "ulimit -f" in r.stderr, r.stderr[-500:]
    assert not list(tmp_path.iterdir())  # the temp file is gone, nothing half-written
