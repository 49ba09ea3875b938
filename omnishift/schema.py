"""Typed configs from YAML: dataclass schemas, ``a.b=value`` overrides, resume checks.

Shared by every config of the project (training, alignment, experiments), so that each rejects
unknown keys the same way, names the file and the valid keys, and coerces values to the field's
type. It repairs a PyYAML quirk on the way: YAML 1.1 reads ``2e-5`` (no dot) as a *string*, so
float fields accept numeric strings. Depends on nothing else in the package.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml


# ---- building dataclasses from dicts ---------------------------------------------------------
class ConfigError(ValueError):
    """A config key or value that does not fit the schema."""


def build(cls, data, where: str, origin: str = "config"):
    """Make dataclass ``cls`` from a mapping, rejecting unknown keys and coercing types.

    Args:
        cls: a dataclass type.
        data: a mapping (None means all defaults).
        where: dotted path of this section (for messages), "" at the top.
        origin: what the values came from (file name), for messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: unknown or missing keys, or a value of the wrong type.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: '{where or '<top>'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{origin}: unknown key '{key}'; valid keys{' in ' + repr(where) if where else ''}: "
                          f"{sorted(fields)}")
    missing = [n for n, f in fields.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{origin}: '{where or '<top>'}' needs key(s) {missing}")
    kw = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k, origin) for k, v in data.items()}
    return cls(**kw)


def _coerce(value, tp, where: str, origin: str):
    """Check/convert ``value`` to type hint ``tp`` (dataclass, Optional/union, scalars, list, dict)."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, where, origin)
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, dict) or any(dataclasses.is_dataclass(a) and isinstance(value, a) for a in args):
            for a in args:
                if dataclasses.is_dataclass(a):  # a mapping is that dataclass's fields
                    return _coerce(value, a, where, origin)
        for a in (a for a in args if a is not type(None) and not dataclasses.is_dataclass(a)):
            try:
                return _coerce(value, a, where, origin)
            except ConfigError:
                pass
        raise ConfigError(f"{origin}: '{where}' = {value!r} does not fit {_name(tp)}")
    base = typing.get_origin(tp) or tp
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str):
            return value
    elif base in (list, dict):
        if isinstance(value, base):
            return value
    else:
        return value
    raise ConfigError(f"{origin}: '{where}' = {value!r} is not a {_name(tp)}")


def _name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# ---- YAML + overrides ------------------------------------------------------------------------
def apply_override(data: dict, override: str) -> dict:
    """Set ``a.b.c=value`` in a nested dict (value parsed with ``yaml.safe_load``); returns ``data``."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    parts = key.strip().split(".")
    node = data
    for i, p in enumerate(parts):
        where = ".".join(parts[:i + 1])
        if isinstance(node, list):  # phases.0.loop.max_steps: a list item by its index
            if not p.isdigit() or int(p) >= len(node):
                raise ConfigError(f"override {override!r}: '{where}': no item {p} in a list of {len(node)}")
            p = int(p)
        elif not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: '{'.'.join(parts[:i])}' is {node!r}, not a section")
        if i == len(parts) - 1:
            node[p] = yaml.safe_load(raw) if raw.strip() else None
            return data
        if isinstance(node, dict) and node.get(p) is None:
            node[p] = {}
        node = node[p]
    return data


def read_yaml(yaml_path: str | Path | None, overrides: list[str] | tuple = (), what: str = "config") -> tuple[dict, str]:
    """A config YAML as a dict with ``section.key=value`` overrides applied, and where it came from.

    Raises:
        FileNotFoundError: ``yaml_path`` does not exist (named as ``what``).
        ConfigError: the file is not valid YAML; the top level is not a mapping; an override is malformed.
    """
    data, origin = {}, "defaults"
    if yaml_path is not None:
        origin = str(yaml_path)
        if not Path(yaml_path).is_file():
            raise FileNotFoundError(f"{what} {yaml_path} not found")
        try:
            data = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            raise ConfigError(f"{yaml_path}: not valid YAML{at} ({getattr(e, 'problem', None) or e}); "
                              "fix the file (a missing ']' or ':' is the usual cause)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{yaml_path}: top level must be a mapping of sections")
    for o in overrides:
        data = apply_override(data, o)
    if overrides:
        origin += " (with overrides " + " ".join(overrides) + ")"
    return data, origin


def _flatten(d: dict, prefix=()) -> dict:
    out = {}
    for k, v in d.items():
        key = prefix + (k,)
        if isinstance(v, dict) and k != "options":
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def without(d: dict, paths: set) -> dict:
    """A copy of nested dict ``d`` without the key paths (tuples) in ``paths``: a run's config less
    what does not change what it computes (where it saves, how often it logs)."""
    import copy

    out = copy.deepcopy(d)
    for path in paths:
        node = out
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def check_same_run(out_dir: Path, new: dict, may_differ: set) -> None:
    """A resumed run must compute the same thing: compare ``new`` with the saved ``config.yaml``.

    Args:
        out_dir: the run folder (nothing to check when it holds no ``config.yaml``).
        new: the resuming run's config as a nested dict.
        may_differ: key-path prefixes (tuples) whose values do not change what the run computes.

    Raises:
        ValueError: naming the changed keys.
    """
    saved = Path(out_dir) / "config.yaml"
    if not saved.is_file():
        return
    old, cur = _flatten(yaml.safe_load(saved.read_text()) or {}), _flatten(new)
    diff = sorted(".".join(k) for k in set(old) | set(cur) if old.get(k) != cur.get(k)
                  and not any(k[:len(p)] == p for p in may_differ))
    if diff:
        raise ValueError(f"{out_dir}: cannot resume with a different config (changed: {diff}); "
                         "use a new out_dir for a new run")


def require(cfg, origin: str, *rules: tuple[str, object]) -> None:
    """Check value ranges after :func:`build`; raise one :class:`ConfigError` naming every bad key.

    Args:
        cfg: the built config (dataclass tree).
        origin: where it came from (file name), for the message.
        rules: ``(dotted key, test)`` pairs; ``test`` is ``(predicate, "what it must be")``.

    Why at load: a negative LR trains in the wrong direction and ``epochs: 0`` saves an untrained
    model, both with exit 0; a load-time refusal costs nothing.
    """
    bad = []
    for key, (ok, want) in rules:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if not ok(value):
            bad.append(f"'{key}' = {value!r} must be {want}")
    if bad:
        raise ConfigError(f"{origin}: " + "; ".join(bad))


POSITIVE = (lambda v: v > 0, "> 0")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
NONE_OR_AT_LEAST_1 = (lambda v: v is None or v >= 1, "null or >= 1")
NONE_OR_POSITIVE = (lambda v: v is None or v > 0, "null or > 0")
FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")


def positive_int(text: str) -> int:
    """argparse type for counts (``--limit``, ``--batch-size``, ``--max-new-tokens``): 0 or a negative
    number would silently mean "everything" or "nothing" downstream, so it is refused here."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_labelled(specs: list[str], what: str = "DIR", default_label=None) -> dict[str, str]:
    """``LABEL=DIR`` command-line arguments, parsed one way everywhere (plots, tables, Fig. 4):
    ``["a=runs/a", "runs/b"]`` -> ``{"a": "runs/a", "b": "runs/b"}``.

    Args:
        specs: the arguments.
        what: the name of the value in messages (``DIR``, ``SCORE_DIR``, ...).
        default_label: ``path -> label`` for an argument without ``LABEL=`` (default: the folder name).

    Raises:
        ValueError: an empty label or path, or two with the same label (naming it and the fix).
    """
    out: dict[str, str] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:
            path = spec
            label = default_label(path) if default_label else Path(spec.rstrip("/")).name
        if not label or not path:
            raise ValueError(f"{spec!r}: write LABEL={what} (both parts non-empty)")
        if label in out:
            raise ValueError(f"label {label!r} given twice: write LABEL={what} to tell the runs apart")
        out[label] = path
    return out
