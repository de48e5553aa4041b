"""Numeric precision of the networks' matrix maths: bfloat16 where the hardware does it natively.

Intel CPUs with AMX tiles (Xeon 4th generation, "Sapphire Rapids", and later) run bfloat16
convolutions in hardware: on the project's 2-core machine a particle U-Net's training step is
2.1-2.9x faster and its inference 3.1-3.3x (docs/particles-models.md, "bfloat16 on CPUs with
AMX"). Elsewhere bfloat16 is emulated and slower than float32, so ``auto`` uses it only where it
is native. Weights, optimiser state and losses stay float32 (``torch.autocast``): only the
convolutions' inputs and products are rounded, to 8 bits of mantissa.
"""

from __future__ import annotations

import contextlib
import os

import torch

from micrometry.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16")

#: overrides ``auto`` in training (``fp32`` reproduces a float32 run on an AMX machine; ``int8``
#: concerns predictions only) and sets the precision of predictions (:func:`inference_precision`)
PRECISION_ENV = "MICROMETRY_PRECISION"


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True when ``device`` multiplies bfloat16 in hardware (a CPU with AMX tiles)."""
    device = torch.device(device)
    if device.type != "cpu":  # GPUs keep float32 under auto: not measured here
        return False
    supported = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(supported and supported())


def resolve_precision(name: str, device: torch.device | str = "cpu") -> str:
    """``fp32`` or ``bf16`` for a requested precision (``auto``: bf16 where native).

    Raises
    ------
    InputError
        ``name`` (or the ``MICROMETRY_PRECISION`` variable) is not a precision.
    """
    source = f"precision {name!r}"
    if name == "auto":
        name = os.environ.get(PRECISION_ENV) or "auto"
        source = f"{PRECISION_ENV}={name!r}"
        if name == "int8":  # an int8 network is made after training, from its float weights
            name = "auto"
    if name not in PRECISIONS:
        raise InputError(f"{source} is not one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def inference_precision(device: torch.device | str = "cpu", int8_ready: bool = False) -> str:
    """The arithmetic a network predicts in: int8 where the model has a quantized copy, else float32.

    ``int8_ready``: the model has a current int8 network and ONNX Runtime runs it exactly on this
    device (:mod:`micrometry.particles.models.dense.quantized`; same segm AP on the real sets,
    about 2x faster). ``MICROMETRY_PRECISION`` chooses otherwise: ``fp32``, ``bf16`` (2-4x
    faster on AMX CPUs but loses segm AP, docs/particles-models.md, "bfloat16 on CPUs with
    AMX"), ``int8`` (refused when the model has none) or ``auto`` (int8, else bf16 where native).

    Raises
    ------
    InputError
        The variable names no precision, or ``int8`` for a model without an int8 network.
    """
    forced = os.environ.get(PRECISION_ENV)
    if forced == "int8" or (int8_ready and forced in (None, "", "auto")):
        if not int8_ready:
            raise InputError(
                f"{PRECISION_ENV}=int8: this model has no int8 network for this device "
                "(make one with 'micrometry particles quantize MODEL')"
            )
        return "int8"
    return resolve_precision(forced, device) if forced else "fp32"


def autocast(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """The context the network runs in: bfloat16 autocast for ``bf16``, nothing for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
