"""Where omnishift keeps things: the model cache, the shared reference data, atomic writes.

Every file omnishift writes goes through :func:`atomic_write_bytes` / :func:`atomic_dir`, so an
interrupted run never leaves a half-written manifest, WAV or checkpoint behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's own default is 0600


def omnishift_home() -> Path:
    """Cache root: ``$OMNISHIFT_HOME`` or ``~/.cache/omnishift``."""
    env = os.environ.get("OMNISHIFT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "omnishift"


def shared_data_dir() -> Path:
    """The reference data folder: ``$OMNISHIFT_DATA``, else ``../shared/data`` beside the checkout.

    Raises:
        FileNotFoundError: naming both places it looked, and how to point at the data.
    """
    env = os.environ.get("OMNISHIFT_DATA")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        "reference data not found (looked in: " + ", ".join(str(c) for c in candidates) + "); "
        "set OMNISHIFT_DATA=/path/to/shared/data"
    )


def builtin_file(name: str) -> Path:
    """A file shipped in ``omnishift/configs`` (``demo.yaml``, ``recipes/cpu_listen.yaml``, ...).

    Raises:
        FileNotFoundError: naming the shipped files.
    """
    from importlib import resources

    root = Path(str(resources.files("omnishift.configs")))
    p = root / name
    if not p.exists():
        avail = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.suffix in (".yaml", ".jsonl"))
        raise FileNotFoundError(f"builtin:{name} not found; shipped files: {avail}")
    return p


def resolve_builtin(spec: str) -> str:
    """``builtin:NAME`` -> the shipped file's path; any other spec unchanged."""
    return str(builtin_file(spec[len("builtin:"):])) if spec.startswith("builtin:") else spec


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _WRITE_LIMITS:
            raise write_error(e, path) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path`` in one rename.

    An exception inside the block removes the temp folder and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's default is 0700
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Delete what an interrupted :func:`atomic_dir` / atomic write left in ``folder`` (``.NAME.*.tmp``
    folders and files, ``.NAME.old`` folders); returns their names. Call it only when no other
    process of the same run is writing there (a run's start, on its main process): a checkpoint
    folder of a ``full`` run is 1.7 GB, and nothing else would ever remove a killed write's copy."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and (p.name.endswith(".tmp") or ".tmp." in p.name or p.name.endswith(".old")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        import logging

        logging.getLogger(__name__).warning("removed %d leftovers of interrupted writes in %s: %s", len(removed),
                                            folder, ", ".join(sorted(removed)[:5]))
    return removed


def ensure_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create ``path`` (a folder) if needed and prove a file can be written in it, before any long
    work: an importance pass or an evaluation that finds an unwritable or file-typed ``--out`` only
    when it saves loses everything it computed.

    Raises:
        NotADirectoryError: ``path`` (or a parent) is a file.
        PermissionError: the folder cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {path} is a file, not a folder: choose another {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except NotADirectoryError:
        raise NotADirectoryError(f"{what} {path}: a parent of it is a file: choose another {what}") from None
    except PermissionError:
        raise PermissionError(f"{what} {path} is not writable: choose a folder you can write, "
                              "or fix its permissions") from None
    except OSError as e:  # /proc, a read-only or full filesystem, ...
        raise OSError(e.errno, f"{what} {path}: cannot create a file there ({e.strerror}); choose another {what}") from None
    return path


_WRITE_LIMITS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "a file size limit is reached (ulimit -f)",
                 errno.EDQUOT: "the disk quota is reached"}


def write_error(e: OSError, path) -> OSError:
    """An OSError met while writing ``path``, said with the file and, for a full disk or a size
    limit, the fix (what finished before is kept: rerunning the same command resumes)."""
    hint = _WRITE_LIMITS.get(e.errno)
    fix = f" ({hint}): free space or raise the limit, then rerun the same command to resume" if hint else ""
    return OSError(e.errno, f"cannot write {path}: {e.strerror or e}{fix}")


def read_jsonl_tolerant(path: Path) -> list[dict]:
    """Records of a JSONL file an interrupted writer may have left with a torn last line: that line
    is dropped (and the file rewritten without it, with a warning naming it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON (and not the last line an interrupted write "
                                 "could leave); fix or delete the file") from None
            logging.getLogger(__name__).warning("%s: dropping a torn last line (an interrupted write): %r",
                                                path, line[:80])
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    return out
