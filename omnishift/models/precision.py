"""Whether this machine computes bfloat16 natively, and a warning where it does not.

Why: the alignment options ``bf16_logits`` and ``bf16_adaptor`` are 1.4-1.9x faster on CPUs with
AVX512-BF16 or AMX (``docs/benchmarks.md``), but on a CPU without them (AVX2 only) PyTorch runs
bfloat16 matrix products on a slow path: about 16x slower than float32 on a small product there
(``docs/benchmarks.md``; ``benchmarks/bf16_matmul.py`` measures it on any machine). A config written
on one machine kind then turns a 2-hour run into a day on another, with nothing said; the run's
numbers would also differ from float32's. So the choice stays the config's (a run must not change
its arithmetic with the machine), and the trainer says loudly when it is the slow one.
"""

from __future__ import annotations

import dataclasses
import logging
import platform

import torch

log = logging.getLogger(__name__)


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True where bfloat16 matrix products run on native instructions.

    Args:
        device: ``"cpu"``, ``"cuda"``, or a :class:`torch.device`.

    Returns:
        On CUDA, :func:`torch.cuda.is_bf16_supported`; on the CPU, whether it has AVX512-BF16 or AMX
        tiles (what oneDNN's fast bfloat16 kernels need).
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return True  # other accelerators: nothing known to check; trust the config
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    checks = [c for c in checks if c is not None]
    if not checks:  # an older or newer torch without these probes: oneDNN's own answer
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(c() for c in checks)


def cpu_description() -> dict:
    """What a timing was measured on: the CPU's model name, PyTorch's CPU capability, native bfloat16.

    Why: two machines of one kind can report the same model name ("AMD EPYC") with and without
    AVX512-BF16, and an alignment step's cost differs by the precision options' speed-up between them;
    the benchmarks record this beside their seconds.

    Returns:
        ``{"cpu": str, "capability": str, "native_bf16": bool}``; ``cpu`` from ``/proc/cpuinfo`` on Linux,
        else :func:`platform.processor`.
    """
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(),
            "capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16("cpu")}


def bf16_options(options) -> list[str]:
    """Names of an options dataclass's boolean ``bf16_*`` fields that are on (``["bf16_logits"]``)."""
    if not dataclasses.is_dataclass(options):
        return []
    return [f.name for f in dataclasses.fields(options)
            if f.name.startswith("bf16_") and getattr(options, f.name) is True]


def warn_slow_bf16(where: str, options, device: str | torch.device = "cpu", native: bool | None = None) -> str | None:
    """Log a warning when ``options`` ask for bfloat16 on a device without native bfloat16.

    Args:
        where: what the options belong to, named in the message (``"objective ctc"``).
        options: an options dataclass; its true ``bf16_*`` fields are the ones reported.
        device: where the run computes.
        native: override the probe (tests); None asks :func:`native_bf16`.

    Returns:
        The warning's text, or None when there is nothing to warn about.
    """
    on = bf16_options(options)
    if not on or (native_bf16(device) if native is None else native):
        return None
    names = ", ".join(on)
    msg = (f"{where}: {names} ask(s) for bfloat16 arithmetic, but this {torch.device(device).type} has no native "
           f"bfloat16 (no AVX512-BF16 or AMX): bfloat16 matrix products run many times slower than float32 here "
           f"(benchmarks/bf16_matmul.py). To run at float32 speed, set {names} to false in the config's "
           f"options (a float32 run's numbers differ slightly from a bfloat16 one's).")
    log.warning(msg)
    return msg
