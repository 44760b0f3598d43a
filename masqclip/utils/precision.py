"""Mixed precision: which autocast dtype a device gets, and fp32 regions inside autocast.

``SOLVER.AMP`` (training) and ``TEST.AMP`` (inference) both resolve through :func:`resolve_amp`:

- CUDA: ``PRECISION: auto`` is bf16 where the GPU supports it (Ampere and newer), else fp16;
  fp16 trains with a gradient scaler, bf16 needs none. ``bf16`` on a GPU without it falls back to
  fp16 with a notice.
- CPU: bf16 autocast only where the CPU has native bf16 matrix units (Intel AMX, ``amx_bf16``);
  elsewhere bf16 is emulated and slower than fp32, so AMP is off with a one-line notice. fp16
  autocast is never used on CPU.
- Anything else (e.g. MPS): fp32 with a notice.

Losses whose precision decides the result (matching costs, point-sampled BCE/dice, CLIP logits)
run inside :func:`full_precision`, which switches autocast off and so keeps them in fp32 whatever
the surrounding region does.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp16", "bf16")
_ALIASES = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class AmpSetting:
    """What a job runs in. ``dtype`` None = fp32 (no autocast)."""

    dtype: torch.dtype | None = None
    device_type: str = "cpu"
    grad_scaler: bool = False  # fp16 needs a GradScaler
    notice: str = ""  # one line for the log when the configured AMP could not be used as asked

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return {torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for this setting, or a no-op context for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


CPU_BF16_FLAG = "amx_bf16"  # Intel AMX: native bf16 matrix units (without them bf16 is emulated, slower)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16(flags: set[str] | frozenset[str] | None = None) -> bool:
    """True when this CPU multiplies bf16 matrices natively (Intel AMX ``amx_bf16``).

    Args:
        flags: CPU feature flags (default: this machine's, from ``/proc/cpuinfo``; where those
            cannot be read, torch is asked whether AMX tiles are supported).
    """
    if flags is None:
        flags = cpu_flags()
        if not flags:
            probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
            try:
                return bool(probe()) if probe else False
            except Exception:  # noqa: BLE001 - a capability probe must never fail a job
                return False
    return CPU_BF16_FLAG in flags


def cuda_bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def normalize_precision(precision: str, key: str = "SOLVER.AMP.PRECISION") -> str:
    """``"auto" | "fp16" | "bf16"`` (``float16``/``bfloat16`` accepted); anything else is a ValueError naming ``key``."""
    value = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if value not in PRECISIONS:
        raise ValueError(f"{key}: {precision!r} is not one of {', '.join(PRECISIONS)}")
    return value


def resolve_amp(enabled: bool, precision: str, device: torch.device | str, *, key: str = "SOLVER.AMP",
                cpu_bf16: bool | None = None, gpu_bf16: bool | None = None) -> AmpSetting:
    """The autocast setting of a job.

    Args:
        enabled: ``<key>.ENABLED``.
        precision: ``<key>.PRECISION`` (auto | fp16 | bf16).
        device: the job's device.
        key: config prefix named in notices and errors.
        cpu_bf16 / gpu_bf16: the device's bf16 capability (default: probed); tests pass both ways.

    Returns:
        An ``AmpSetting``; its ``notice`` is non-empty when AMP was asked for but is not used as asked.
    """
    device_type = torch.device(device).type
    precision = normalize_precision(precision, f"{key}.PRECISION")
    if not enabled:
        return AmpSetting(device_type=device_type)
    if device_type == "cuda":
        has_bf16 = cuda_bf16_supported() if gpu_bf16 is None else gpu_bf16
        if precision == "auto":
            precision = "bf16" if has_bf16 else "fp16"
        notice = ""
        if precision == "bf16" and not has_bf16:
            precision, notice = "fp16", f"{key}: this GPU has no bf16 support; using fp16 with a gradient scaler"
        return AmpSetting(DTYPES[precision], "cuda", grad_scaler=precision == "fp16", notice=notice)
    if device_type == "cpu":
        has_bf16 = cpu_native_bf16() if cpu_bf16 is None else cpu_bf16
        if not has_bf16:
            return AmpSetting(device_type="cpu", notice=f"{key}: this CPU has no native bf16 matrix units "
                              "(AMX); running in fp32")
        notice = f"{key}: fp16 autocast is not used on CPU; using bf16 (AMX)" if precision == "fp16" else ""
        return AmpSetting(torch.bfloat16, "cpu", notice=notice)
    return AmpSetting(device_type=device_type, notice=f"{key}: no mixed precision on {device_type}; running in fp32")


def amp_from_config(cfg, device: torch.device | str, *, inference: bool = False) -> AmpSetting:
    """``SOLVER.AMP`` for training, ``TEST.AMP`` for inference (whose precision defaults to the
    training one: ``TEST.AMP.PRECISION`` empty -> ``SOLVER.AMP.PRECISION``)."""
    if not inference:
        return resolve_amp(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.PRECISION, device, key="SOLVER.AMP")
    precision = cfg.TEST.AMP.PRECISION or cfg.SOLVER.AMP.PRECISION
    return resolve_amp(cfg.TEST.AMP.ENABLED, precision, device, key="TEST.AMP")


def full_precision(device: torch.device | str | torch.Tensor) -> contextlib.AbstractContextManager:
    """A region where autocast is off for ``device``'s type (a tensor's device is used for a tensor).

    Inputs made in a lower precision outside must still be cast with ``.float()`` inside.
    """
    if isinstance(device, torch.Tensor):
        device = device.device
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda", "xpu", "hpu", "mps"):
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)

