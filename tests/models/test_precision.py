"""The bfloat16 probe and the warning for a config that asks for slow bfloat16."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from omnishift.align.objectives import CTCOptions
from omnishift.models.precision import bf16_options, cpu_description, native_bf16, warn_slow_bf16


def test_bf16_options_lists_only_true_bf16_fields():
    @dataclass
    class Opts:
        bf16_a: bool = True
        bf16_b: bool = False
        other: bool = True
        bf16_count: int = 1  # not a switch: never reported

    assert bf16_options(Opts()) == ["bf16_a"]
    assert bf16_options(CTCOptions(bf16_logits=True, bf16_adaptor=True)) == ["bf16_logits", "bf16_adaptor"]
    assert bf16_options(CTCOptions()) == []
    assert bf16_options({"bf16_logits": True}) == []


def test_warning_names_the_options_and_the_fix_only_where_bf16_is_slow(caplog):
    opts = CTCOptions(bf16_logits=True, negatives=8)
    with caplog.at_level(logging.WARNING, logger="omnishift.models.precision"):
        msg = warn_slow_bf16("objective ctc", opts, "cpu", native=False)
    assert msg is not None and "objective ctc" in msg and "bf16_logits" in msg and "set bf16_logits to false" in msg
    assert "bf16_adaptor" not in msg
    assert [r.getMessage() for r in caplog.records] == [msg]
    assert warn_slow_bf16("objective ctc", opts, "cpu", native=True) is None
    assert warn_slow_bf16("objective ctc", CTCOptions(), "cpu", native=False) is None


def test_native_bf16_agrees_with_the_cpu_probes():
    probes = [getattr(torch.cpu, n)() for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
              if hasattr(torch.cpu, n)]
    if probes:
        assert native_bf16("cpu") == any(probes)
    assert isinstance(native_bf16("cpu"), bool)
    assert native_bf16("meta") is True


def test_cpu_description_names_the_cpu_and_its_bfloat16(monkeypatch):
    d = cpu_description()
    assert set(d) == {"cpu", "capability", "native_bf16"}
    assert d["cpu"] and d["capability"] == torch.backends.cpu.get_cpu_capability()
    assert d["native_bf16"] == native_bf16("cpu")

    import builtins
    import platform

    real_open = builtins.open

    def no_cpuinfo(path, *a, **k):
        if str(path) == "/proc/cpuinfo":
            raise OSError("not Linux")
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "Test CPU 9000")
    assert cpu_description()["cpu"] == "Test CPU 9000"
