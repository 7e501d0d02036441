"""The numeric precision everything that trains or differentiates runs at.

`bf16`: bf16 autocast with channels_last models, on CUDA and on CPUs whose matrix
units do bf16 natively (AMX tiles or AVX-512 BF16, as oneDNN reports them through
torch); there the same small CNNs train 2-3.5x faster than in fp32 at the same
accuracy (bench/benchmarks/training_loop.py). `fp32`: plain fp32 in NCHW, the
harness's CPU path before bf16 existed, which reproduces those records bit for bit
(with the torch thread count pinned). Weights, optimizer state, metrics and released
data stay fp32 either way: autocast changes only the arithmetic inside a step.

`auto` picks bf16 where it is native and fp32 elsewhere (on a CPU without bf16 units
autocast emulates it and is slower than fp32). A process has one requested precision
(`request`, set by the runner in each worker from `--precision`); `active(device)`
resolves it for a device.

Precision is a recorded property of a run, like its device and thread count, not
part of its identity: see docs/design.md ("Precision").
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from bench.errors import BenchError

PRECISIONS = ("auto", "fp32", "bf16")
RESOLVED = ("fp32", "bf16")
ENV_VAR = "BENCH_PRECISION"   # the default request of a process that sets none (tests, benchmarks, notebooks)

_requested: str | None = None


def check(requested: str) -> str:
    if requested not in PRECISIONS:
        raise BenchError(f"unknown precision {requested!r}; valid choices: {', '.join(PRECISIONS)}")
    return requested


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 matmuls and convolutions in hardware (AMX or AVX-512 BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve(requested: str, device: torch.device) -> str:
    """`fp32` or `bf16`: what `requested` means on `device`."""
    check(requested)
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def requested() -> str:
    if _requested is not None:
        return _requested
    value = os.environ.get(ENV_VAR, "auto")
    if value not in PRECISIONS:
        raise BenchError(f"{ENV_VAR}={value!r}; valid choices: {', '.join(PRECISIONS)}")
    return value


def request(precision: str | None) -> None:
    """Set this process's requested precision (None: back to $BENCH_PRECISION, default auto)."""
    global _requested
    _requested = None if precision is None else check(precision)


@contextlib.contextmanager
def requesting(precision: str):
    """Run a block at `precision`, then restore what was requested before."""
    global _requested
    before = _requested
    request(precision)
    try:
        yield
    finally:
        _requested = before


def active(device: torch.device) -> str:
    return resolve(requested(), device)


def autocast(device: torch.device):
    """The autocast context of the active precision on `device` (nothing at fp32)."""
    if active(device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last with bf16 (oneDNN's and cuDNN's fast bf16 convolutions want NHWC), NCHW in fp32."""
    return torch.channels_last if active(device) == "bf16" else torch.contiguous_format


class GroupedConv2dFP32(nn.Conv2d):
    """A grouped (e.g. depthwise) convolution that stays in fp32 under autocast.

    oneDNN's bf16 backward of grouped convolutions is several times slower than fp32 on CPU: in
    bf16, MobileNetV3 (the transfer attacker's third clean model) trained at 0.4-0.8 x its fp32
    speed; with its 11 depthwise convolutions in fp32 and the rest in bf16, at 2.4 x (measured with
    bench.benchmarks.training_loop's probe shapes, one thread). Same parameters, same state_dict.
    """

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    if active(device) != "bf16":
        return model   # fp32 leaves the model exactly as it was (the path that reproduces older records)
    if device.type == "cpu":
        for module in model.modules():
            if type(module) is nn.Conv2d and module.groups > 1:
                module.__class__ = GroupedConv2dFP32
    return model.to(memory_format=torch.channels_last)


def of_record(record: dict) -> str:
    """The precision a record ran at; records written before it was recorded ran at the path of their
    day: bf16 autocast on CUDA, fp32 on CPU."""
    stated = record.get("precision")
    if stated is not None:
        return stated
    return "bf16" if str(record.get("device", "cpu")).startswith("cuda") else "fp32"
