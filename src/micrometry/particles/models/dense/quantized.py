"""An int8 copy of a dense model's network, run by ONNX Runtime: CPU prediction about 2x faster.

Static quantization (ONNX Runtime's ``quantize_static``): every 3x3 convolution's weights become 7-bit
integers per output channel and its activations uint8, with ranges calibrated on the network inputs of a
few real images (what the model sees when it predicts them, sizing passes included). Seven bits, not
eight, so that the products stay exact on every x86 CPU (:func:`runs_exactly_here`). The 1x1 output
convolution stays float32: the centre offsets it writes are read to a fraction of a network pixel,
and an int8 head moves outlines between touching particles (docs/particles-models.md, "int8
prediction", has the figures).

The quantized network is a file beside the weights, :data:`FILE`, in a model folder or a run folder.
It records a fingerprint of the float weights it was made from, so a run trained further (or weights
replaced by hand) never predicts with a stale copy: such a file is ignored, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from micrometry.particles.models.dense.unet import UNet

#: the quantized network's file name in a model or run folder
FILE = "network.int8.onnx"
#: ONNX metadata key holding :func:`fingerprint` of the float weights
FINGERPRINT_KEY = "micrometry_weights_sha256"
#: ONNX metadata key holding the weights' bits: "7" (reduced range); files made before 2026-12-07 lack it
WEIGHT_BITS_KEY = "micrometry_weight_bits"
T = TypeVar("T")

#: calibration images at most (each gives one to three network inputs: sizing passes and the final one)
CALIBRATION_IMAGES = 8


@functools.cache  # the CPU does not change while micrometry runs
def int8_exact_here() -> bool:
    """True where ONNX Runtime's convolutions with full-range int8 weights are exact: x86 CPUs with
    VNNI (or AMX), and ARM.

    Without VNNI, ONNX Runtime multiplies uint8 activations by int8 weights with an instruction
    (VPMADDUBSW) that adds pairs of products into 16 bits: two products of 255 x 127 overflow it and
    the sum saturates (on an AVX2-only AMD EPYC foreground probabilities moved by up to 0.43 on 3 %
    of a scene's pixels). With 7-bit weights two products reach at most 2 x 255 x 64 = 32,640, which fits.
    """
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: no way to tell here, so the safe arithmetic
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def runtime_available() -> bool:
    """True when ONNX Runtime is installed (it is a dependency; a stripped install may lack it)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a network's float weights (names and float32 values, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(state[name].detach().float().cpu().numpy()).tobytes())
    return digest.hexdigest()


def capture_inputs(
    net: UNet, run: Callable[[], None], limit: int = 4 * CALIBRATION_IMAGES
) -> list[np.ndarray]:
    """The inputs ``net`` receives while ``run()`` predicts (at most ``limit``), for calibration.

    ``run`` must call ``net`` through its ``forward`` (a segmenter holding it does).
    """
    caught: list[np.ndarray] = []

    def hook(_module, args):
        if len(caught) < limit:
            caught.append(args[0].detach().float().contiguous().cpu().numpy().copy())

    handle = net.register_forward_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return caught


def quantize_network(
    net: UNet, weights_fingerprint: str, calibration: list[np.ndarray], out: Path, reduce_range: bool = True
) -> Path:
    """Write ``net`` quantized to int8 (head kept float32) as the ONNX file ``out``; returns ``out``.

    Parameters
    ----------
    net : UNet
        The float network (batch norms folded or not: the export folds them).
    weights_fingerprint : str
        :func:`fingerprint` of the weights ``net`` was loaded with, stored in the file.
    calibration : list of ndarray
        ``(1, 1, h, w)`` float32 network inputs (:func:`capture_inputs`); at least one.
    out : Path
        Written whole or not at all.
    reduce_range : bool
        7-bit weights, exact on every CPU (the default); False gives full-range int8 weights,
        exact only where :func:`int8_exact_here`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("quantization needs at least one calibration input")

    class Inputs(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"image": item}

    net = net.float().eval()
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        plain, prepared, quantized = (Path(tmp) / n for n in ("float.onnx", "prepared.onnx", "int8.onnx"))
        side = 2 * net.multiple
        with warnings.catch_warnings():  # the exporter's notes on its legacy (TorchScript) path
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                torch.zeros(1, 1, side, side),
                str(plain),
                input_names=["image"],
                output_names=["maps"],
                dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "maps": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        convolutions = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
        quantize_static(
            str(prepared),
            str(quantized),
            Inputs(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            nodes_to_exclude=convolutions[-1:],  # the 1x1 head: offsets need float precision
        )
        model = onnx.load(str(quantized))
        for key, value in (
            (FINGERPRINT_KEY, weights_fingerprint),
            (WEIGHT_BITS_KEY, "7" if reduce_range else "8"),
        ):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        partial = Path(tmp) / "final.onnx"
        onnx.save(model, str(partial))
        os.replace(partial, out)
    return out


def stored_metadata(path: Path) -> dict[str, str] | None:
    """The metadata recorded in a quantized network file (None: a file ONNX Runtime cannot run)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # a damaged or foreign file: treated as absent
        return None
    return dict(session.get_modelmeta().custom_metadata_map)


def runs_exactly_here(metadata: dict[str, str]) -> bool:
    """True when a quantized network with this :func:`stored_metadata` computes exactly on this CPU:
    7-bit weights everywhere, full-range ones (files made before 2026-12-07) where :func:`int8_exact_here`.
    """
    return metadata.get(WEIGHT_BITS_KEY) == "7" or int8_exact_here()


class QuantizedNetwork:
    """The int8 network as a callable: ``(B, 1, h, w)`` tensor in, float32 maps out (like the UNet).

    The ONNX Runtime session is opened on first use with torch's thread count
    (``--threads``), and dropped when pickled (Ray ships segmenters to its actors).
    """

    def __init__(self, path: Path, multiple: int):
        self.path = Path(path)
        self.multiple = int(multiple)
        self._session = None

    def __getstate__(self):
        return {**self.__dict__, "_session": None}

    def _open(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            self._session = self._open()
        maps = self._session.run(None, {"image": x.detach().float().contiguous().cpu().numpy()})[0]
        return torch.from_numpy(maps)


def int8_file(exported) -> Path | None:
    """The int8 network beside an exported model's weights, when ONNX Runtime reads it, it fits them
    and it computes exactly on this CPU (:func:`runs_exactly_here`).

    A file this ONNX Runtime cannot read, or one made from other weights, is ignored
    with a warning: float32 predicts instead. A full-range file on a CPU without VNNI is ignored
    silently (float32 is what that CPU should run). None also for models without a U-Net.
    """
    net = exported.state.get("modules", {}).get("net")
    folder = exported.source
    if net is None or folder is None or not (Path(folder) / FILE).is_file() or not runtime_available():
        return None
    path = Path(folder) / FILE
    metadata = stored_metadata(path)
    remake = f"run 'micrometry particles quantize {folder}' to remake it"
    if metadata is None:
        import onnxruntime

        warnings.warn(
            f"{path}: not an int8 network ONNX Runtime {onnxruntime.__version__} can run; "
            f"predicting in float32 ({remake})"
        )
        return None
    if metadata.get(FINGERPRINT_KEY) != fingerprint(net):
        warnings.warn(
            f"{path}: the int8 network was made from other weights than this model's; "
            f"predicting in float32 ({remake})"
        )
        return None
    return path if runs_exactly_here(metadata) else None


def evenly(items: Sequence[T], limit: int = CALIBRATION_IMAGES) -> list[T]:
    """Up to ``limit`` of ``items``, spread evenly over them (first and last included)."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]
