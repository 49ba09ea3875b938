"""The command line: help, synth, and ask from text and from audio (the latter on real models)."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from omnishift.cli import main


def _leaves(parser, prefix=()) -> list[tuple[str, ...]]:
    """Every runnable command, as words, in ``--help`` order, with its help line checked."""
    import argparse

    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None:
        return [prefix]
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert all(helps[c] for c in sub.choices), prefix  # each says what it does
    return [leaf for name, p in sub.choices.items() for leaf in _leaves(p, (*prefix, name))]


def test_every_package_registers_its_commands_once_with_help(capsys):
    from omnishift.cli import build_parser

    leaves = _leaves(build_parser())
    assert {" ".join(c) for c in leaves} >= {
        "models prepare", "data synth", "data stage1", "data align", "ask", "eval qa", "eval table",
        "eval ablate-rank", "eval listening", "eval aligned", "eval ctc", "train", "align run", "align ls",
        "importance compute", "plot-loss", "report", "run", "demo"}
    for cmd in leaves:
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0 and f"usage: omnishift {' '.join(cmd)}" in capsys.readouterr().out


@pytest.mark.parametrize("old, new", [
    (["eval-aligned", "F"], ["eval", "aligned", "F"]), (["eval", "runs/x", "--benchmark", "b"],
                                                        ["eval", "qa", "runs/x", "--benchmark", "b"]),
    (["eval", "--benchmark", "b", "base"], ["eval", "qa", "--benchmark", "b", "base"]),
    (["-v", "align", "cpu_listen"], ["-v", "align", "run", "cpu_listen"]), (["ls"], ["align", "ls"]),
    (["align", "ls"], ["align", "ls"]), (["align-data", "--out", "d"], ["data", "align", "--out", "d"]),
    (["eval", "--help"], ["eval", "--help"]), (["synth", "a", "b"], ["data", "synth", "a", "b"]),
    (["train", "c.yaml"], ["train", "c.yaml"]),
])
def test_old_names_and_short_forms_expand_to_the_grouped_commands(old, new):
    from omnishift.cli import build_commands

    assert build_commands()[1].expand(old) == new


def test_no_recipe_is_named_like_an_align_sub_command():
    from omnishift.align.recipe import RECIPES
    from omnishift.cli import build_commands

    assert not set(RECIPES) & set(build_commands()[1].groups["align"].choices)  # `align NAME` stays unambiguous


def test_synth_command_writes_wavs_and_manifest(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "q1", "text": "What is the capital of France?"}) + "\n")
    assert main(["synth", str(src), str(tmp_path / "out"), "--rate", "200"]) == 0
    row = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    info = sf.info(tmp_path / "out" / row["audio"])
    assert info.samplerate == 16000 and info.channels == 1 and row["duration"] == pytest.approx(info.duration, abs=1e-3)


def test_bad_input_exits_2_with_message(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"text": "no id"}\n')
    assert main(["synth", str(tmp_path / "in.jsonl"), str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.integration
def test_ask_text_and_audio(tmp_path, capsys):
    from omnishift.data.synth import synthesize, write_wav

    assert main(["ask", "--text", "What is the capital of France?", "--no-instruction", "--max-new-tokens", "12"]) == 0
    assert "paris" in capsys.readouterr().out.lower()
    write_wav(tmp_path / "q.wav", synthesize("What is the capital of France?"))
    assert main(["ask", "--audio", str(tmp_path / "q.wav"), "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip()  # untrained adaptor: any text, but the path runs


def test_unclear_cases_are_named_without_a_traceback(tmp_path, capsys, monkeypatch):
    """Issue 12's "unclear" cases: each exits 2 naming the item and the fix, before any model loads."""
    import omnishift.models.speech_llm as sl

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(sl, "load_speech_llm", no_model)
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    for cmd in ("train", "run", "align"):
        assert main([cmd, str(bad)]) == 2
        err = capsys.readouterr().err
        assert "not valid YAML at line 2" in err and "Traceback" not in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["eval", "base", "--benchmark", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "has no rows" in capsys.readouterr().err
    assert main(["eval", "base", "--benchmark", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "e")]) == 2
    assert "missing.jsonl not found" in capsys.readouterr().err
    assert main(["synth", str(empty), str(tmp_path / "s")]) == 2
    assert "no rows: nothing to synthesize" in capsys.readouterr().err and not (tmp_path / "s" / "manifest.jsonl").exists()
    assert main(["synth", str(tmp_path), str(tmp_path / "s")]) == 2
    assert "is a folder" in capsys.readouterr().err
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"id": "q1", "text": "Q?", "answers": ["a"]}) + "\n")
    for argv in (["eval", "base", "--benchmark", str(qa), "--mode", "t2t", "--out", str(qa)],
                 ["importance", "compute", "--data", str(qa), "--out", str(qa / "x")]):
        assert main(argv) == 2  # a file-typed --out: refused before the model loads, not after the pass
        assert "is a file" in capsys.readouterr().err


def test_train_rerun_without_resume_says_how(tmp_path, capsys):
    """The check comes first: no model is loaded and no step taken before it."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"out_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "Traceback" not in err


def _huge_page_probe(env_value: str | None) -> tuple[str, int]:
    """In a fresh interpreter: import the CLI, fill a 64 MB tensor; return the variable and AnonHugePages (kB)."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, re
        import omnishift.cli, torch
        x = torch.empty(64 << 20, dtype=torch.uint8)
        x.fill_(1)
        kb = sum(int(m) for m in re.findall(r"AnonHugePages:\\s+(\\d+) kB", open("/proc/self/smaps_rollup").read()))
        print(os.environ["THP_MEM_ALLOC_ENABLE"], kb)
    """)
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = env_value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


def test_cli_asks_torch_for_huge_pages_unless_the_user_said_otherwise():
    from pathlib import Path

    value, huge_kb = _huge_page_probe(None)
    assert value == "1"
    off_value, off_kb = _huge_page_probe("0")
    assert off_value == "0"
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if mode.is_file() and "[madvise]" in mode.read_text() and Path("/proc/self/smaps_rollup").is_file():
        assert huge_kb >= 2048 and off_kb == 0  # torch madvised the 64 MB tensor only when asked


def test_the_readme_is_a_short_guide_whose_command_table_is_the_cli():
    import re
    from pathlib import Path

    from omnishift.cli import build_parser

    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `omnishift ([a-z0-9 -]+)` \|", readme, re.M)
    assert table == [" ".join(c) for c in _leaves(build_parser())]  # every command, once, in --help order
    assert len(readme.splitlines()) <= 200
    assert not re.search(r"issue \d+|sitting|20\d\d-\d\d-\d\d", readme, re.I)
    assert not [p for p in (root / "docs").rglob("*") if p.suffix in (".py", ".sh")]  # the lab lives in experiments/
