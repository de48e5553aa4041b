"""The micrometry dock widget: segment the current image, measure its particles, fine-tune the model.

Three steps, top to bottom:

1. **Segment**: choose an image layer, a model (``shipped``, ``watershed``, or a run or
   exported model folder, typed or browsed) and the particle diameter (``auto``: estimated
   per image); the particles become the labels layer ``NAME labels``
   (:func:`micrometry.api.SegmentationModel.segment`).
2. **Measure**: the labels layer's particles in a table (ImageJ and ISO 9276-6
   descriptors, :func:`micrometry.api.measure`), calibrated by the pixel size, with the
   number-weighted D10/D50/D90 (:func:`micrometry.api.size_distribution`). Correct the
   labels with napari's tools and measure again.
3. **Fine-tune**: train the model further on the image and its (corrected) labels for a
   time budget: ``micrometry particles train DATA --init MODEL`` in a child process
   (the command line's code path; napari stays responsive), with a progress bar. The
   new run becomes the selected model.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from micrometry.errors import InputError
from micrometry.napari_plugin import image_name, labels_name

MODELS = ("shipped", "watershed")
UNITS = ("um", "nm", "mm")
#: Columns shown in the table (the full table is in the layer's ``features``); unit-named ones by prefix.
SHOWN = (
    "Label",
    "Area_",
    "EqDiam_",
    "Feret_",
    "MinFeret_",
    "Circ.",
    "AR",
    "Solidity",
    "Agglomerate",
    "Touching",
    "TouchesBorder",
)
POLL_MS = 250
#: Characters per line of the measurement summary.
SUMMARY_WIDTH = 48


class SegmentationWidget(QWidget):
    """Segment, measure and fine-tune from napari (see the module's description).

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer or napari.components.ViewerModel
        The viewer whose layers the widget reads and adds to.

    Attributes
    ----------
    table : pandas.DataFrame or None
        The last measurement, all columns.
    run_dir : Path or None
        The last fine-tuning run.
    train_threads : int
        ``--threads`` of the fine-tuning process (0: all cores).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.table = None
        self.run_dir: Path | None = None
        self.train_threads = 0
        self._models: dict[tuple, object] = {}
        self._process: subprocess.Popen | None = None
        self._worker = None
        self._started = 0.0
        self._budget_s = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll_training)

        layout = QVBoxLayout(self)
        layout.addWidget(self._segment_box())
        layout.addWidget(self._measure_box())
        layout.addWidget(self._finetune_box())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

        for event in ("inserted", "removed", "moved"):
            getattr(self.viewer.layers.events, event).connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ layout

    def _segment_box(self) -> QGroupBox:
        box = QGroupBox("1. Segment")
        form = QFormLayout(box)
        self.image_combo = QComboBox()
        form.addRow("image", self.image_combo)
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.addItems(MODELS)
        self.model_combo.setToolTip(
            "shipped, watershed, or a folder: a run of 'micrometry particles train' or an exported model"
        )
        browse = QPushButton("…")
        browse.setToolTip("choose a run or exported model folder")
        browse.setFixedWidth(28)
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(browse)
        form.addRow("model", row)
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(0, 10000)
        self.diameter.setDecimals(1)
        self.diameter.setSuffix(" px")
        self.diameter.setSpecialValueText("auto")
        self.diameter.setToolTip("the particles' median diameter in pixels; auto: estimated per image")
        form.addRow("diameter", self.diameter)
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(self.segment)
        form.addRow(self.segment_button)
        return box

    def _measure_box(self) -> QGroupBox:
        box = QGroupBox("2. Measure")
        layout = QVBoxLayout(box)
        form = QFormLayout()
        self.labels_combo = QComboBox()
        form.addRow("labels", self.labels_combo)
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setRange(0, 1e6)
        self.pixel_size.setDecimals(4)
        self.pixel_size.setSpecialValueText("none (px)")
        self.unit = QComboBox()
        self.unit.setEditable(True)
        self.unit.addItems(UNITS)
        row = QHBoxLayout()
        row.addWidget(self.pixel_size, 1)
        row.addWidget(self.unit)
        form.addRow("pixel size", row)
        layout.addLayout(form)
        self.measure_button = QPushButton("Measure")
        self.measure_button.clicked.connect(self.measure)
        layout.addWidget(self.measure_button)
        # lines wrapped here (textwrap): a word-wrapped QLabel may be squeezed and cut off by the layout
        self.summary = QLabel("")
        layout.addWidget(self.summary)
        self.table_view = QTableWidget()
        self.table_view.setMinimumHeight(120)
        self.table_view.verticalHeader().setVisible(False)  # the Label column names the rows
        self.table_view.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        layout.addWidget(self.table_view)
        return box

    def _finetune_box(self) -> QGroupBox:
        box = QGroupBox("3. Fine-tune on the labels")
        form = QFormLayout(box)
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0.1, 600)
        self.budget.setDecimals(1)
        self.budget.setValue(2.0)
        self.budget.setSuffix(" min")
        form.addRow("time budget", self.budget)
        self.finetune_button = QPushButton("Fine-tune")
        self.finetune_button.setToolTip(
            "train the model further on the image and the labels layer (correct them first)"
        )
        self.finetune_button.clicked.connect(self._finetune_clicked)
        form.addRow(self.finetune_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        form.addRow(self.progress)
        return box

    # ------------------------------------------------------------------ layers

    def _layers(self, kind: str) -> list:
        return [layer for layer in self.viewer.layers if type(layer).__name__.lower() == kind]

    def _refresh_layers(self, event=None) -> None:
        for combo, kind in ((self.image_combo, "image"), (self.labels_combo, "labels")):
            current = combo.currentText()
            names = [layer.name for layer in self._layers(kind)]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif names:
                combo.setCurrentIndex(len(names) - 1)
            combo.blockSignals(False)

    def _layer(self, name: str, kind: str):
        for layer in self._layers(kind):
            if layer.name == name:
                return layer
        raise InputError(f"no {kind} layer {name!r}: choose one")

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run or exported model folder")
        if folder:
            self.model_combo.setCurrentText(folder)

    # ------------------------------------------------------------------ actions

    def _model(self):
        from micrometry.api import load_model

        source = self.model_combo.currentText().strip() or "shipped"
        if source not in self._models:
            self._models[source] = load_model(source)
        return self._models[source]

    @property
    def busy(self) -> bool:
        """Whether a segmentation is running (in a worker thread: napari stays responsive)."""
        return self._worker is not None

    def segment(self) -> None:
        """Segment the chosen image layer into the labels layer ``NAME labels``, then measure it.

        Returns at once; the model runs in a worker thread (see :attr:`busy`).
        """
        from superqt.utils import create_worker

        if self.busy:
            return
        try:
            layer = self._layer(self.image_combo.currentText(), "image")
            image = _gray(layer.data)
        except (InputError, ValueError) as exc:
            return self._say(f"error: {exc}", error=True)
        diameter = self.diameter.value() or None
        self._say(f"segmenting {layer.name} ...")
        self.segment_button.setEnabled(False)
        self._worker = create_worker(
            lambda: self._model().segment(image, diameter=diameter),
            _connect={
                "returned": lambda seg: self._segmented(layer, seg),
                "errored": self._segment_failed,
                "finished": self._segment_finished,
            },
            _ignore_errors=True,
        )

    def _segment_failed(self, exc: Exception) -> None:
        if not isinstance(exc, InputError | ValueError):
            raise exc  # a bug: napari shows its traceback
        self._say(f"error: {exc}", error=True)

    def _segment_finished(self) -> None:
        self._worker = None
        self.segment_button.setEnabled(True)

    def _segmented(self, layer, seg) -> None:
        name = labels_name(layer.name)
        existing = [lab for lab in self._layers("labels") if lab.name == name]
        if existing:
            existing[0].data = seg.labels
        else:
            self.viewer.add_labels(seg.labels, name=name)
        self._refresh_layers()
        self.labels_combo.setCurrentText(name)
        self._use_calibration(layer)
        d, source = seg.info.get("diameter_px"), seg.info.get("diameter_source", "")
        size = f" · diameter {d:.1f} px, {source}" if d else ""
        warned = "".join(f"\nwarning: {w}" for w in seg.info.get("warnings", []))
        if seg.reliable is False:
            warned += f"\nunreliable segmentation: {seg.info.get('reason', '')}"
        self.measure()
        self._say(
            f"{seg.count} particles in {layer.name} · model {self._model().name}{size}{warned}",
            error=seg.reliable is False,
        )

    def _use_calibration(self, image_layer) -> None:
        """Take the pixel size the image's file declared (the reader stores it), unless one is set."""
        meta = getattr(image_layer, "metadata", {}) or {}
        if self.pixel_size.value() == 0 and meta.get("pixel_size"):
            self.pixel_size.setValue(float(meta["pixel_size"]))
            self.unit.setCurrentText(str(meta.get("unit", "um")))

    def measure(self) -> None:
        """Measure the chosen labels layer and show the table and the size distribution."""
        from micrometry.api import measure, size_distribution

        try:
            layer = self._layer(self.labels_combo.currentText(), "labels")
            pixel_size = self.pixel_size.value() or None
            unit = self.unit.currentText().strip() if pixel_size else None
            table = measure(np.asarray(layer.data), pixel_size=pixel_size, unit=unit)
        except (InputError, ValueError) as exc:
            return self._say(f"error: {exc}", error=True)
        self.table = table
        unit = unit or "px"
        if len(table):
            with warnings.catch_warnings(record=True) as caught:  # too few particles: said here
                warnings.simplefilter("always")
                psd = size_distribution(table, n_boot=200).loc["number"]
            d = " / ".join(f"{psd.loc[p, 'value']:.3g}" for p in ("D10", "D50", "D90"))
            lo, hi = psd.loc["D50", "ci_low"], psd.loc["D50", "ci_high"]
            said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
            flags = "".join(
                f" · {int(table[c].sum())} {name}"
                for c, name in (("Agglomerate", "agglomerates"), ("Touching", "touching"))
                if c in table
            )
            lines = [
                f"{len(table)} particles{flags}",
                f"D10 / D50 / D90 (number): {d} {unit}",
                f"D50 95 % CI {lo:.3g}-{hi:.3g} {unit} (equivalent diameter)",
                *said,
            ]
            self.summary.setText("\n".join(textwrap.fill(line, SUMMARY_WIDTH) for line in lines))
            self.summary.setMinimumHeight(self.summary.sizeHint().height())  # never squeezed
        else:
            self.summary.setText("no particles")
        self._show_table(table)

    def _show_table(self, table) -> None:
        columns = [c for s in SHOWN for c in table.columns if c == s or (s.endswith("_") and c.startswith(s))]
        self.table_view.clear()
        self.table_view.setColumnCount(len(columns))
        self.table_view.setRowCount(len(table))
        self.table_view.setHorizontalHeaderLabels(columns)
        for i, row in enumerate(table[columns].itertuples(index=False)):
            for j, value in enumerate(row):
                text = f"{value:.4g}" if isinstance(value, float) else str(value)
                self.table_view.setItem(i, j, QTableWidgetItem(text))
        self.table_view.resizeColumnsToContents()

    # ------------------------------------------------------------------ fine-tuning

    @property
    def training(self) -> bool:
        """Whether a fine-tuning process is running."""
        return self._process is not None

    def _finetune_clicked(self) -> None:
        if self.training:
            self._process.terminate()
            return
        self.finetune()

    def finetune(self) -> None:
        """Start fine-tuning on the chosen labels layer and its image (returns at once; see :attr:`training`)."""
        from micrometry.io.image import write_image

        try:
            labels_layer = self._layer(self.labels_combo.currentText(), "labels")
            labels = np.asarray(labels_layer.data)
            if labels.ndim != 2 or not labels.any():
                raise InputError(f"labels layer {labels_layer.name!r} holds no 2-D particles to learn from")
            image = self._image_for(labels_layer)
        except (InputError, ValueError) as exc:
            return self._say(f"error: {exc}", error=True)
        work = Path(tempfile.mkdtemp(prefix="micrometry-finetune-"))
        stem = "image"
        write_image(work / "data" / "images" / f"{stem}.png", image)
        write_image(work / "data" / "masks" / f"{stem}.png", labels.astype(np.uint16))
        self.run_dir = work / "run"
        source = self.model_combo.currentText().strip() or "shipped"
        init = source if source == "shipped" or Path(source).is_dir() else "shipped"
        self._budget_s = self.budget.value() * 60
        command = [
            sys.executable,
            "-m",
            "micrometry",
            "--quiet",
            "particles",
            "train",
            str(work / "data"),
            "--init",
            init,
            "--time-budget",
            f"{self.budget.value():g}",
            "--out",
            str(self.run_dir),
            "--threads",
            str(self.train_threads),
        ]
        self._log = open(work / "train.log", "w+")  # noqa: SIM115 - closed when the process ends
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        self._started = time.monotonic()
        self.progress.setValue(0)
        self.finetune_button.setText("Stop fine-tuning")
        self._say(
            f"fine-tuning {init} on {labels_layer.name} for {self.budget.value():g} min -> {self.run_dir}"
        )
        self._timer.start()

    def _image_for(self, labels_layer) -> np.ndarray:
        """The image a labels layer belongs to (its name, else the image chosen above), as uint8/uint16 gray."""
        names = [image_name(labels_layer.name), self.image_combo.currentText()]
        for name in names:
            for layer in self._layers("image"):
                if layer.name == name:
                    image = _gray(layer.data)
                    if image.shape != np.shape(labels_layer.data):
                        raise InputError(
                            f"image {layer.name!r} and labels {labels_layer.name!r} differ in size"
                        )
                    return _storable(image)
        raise InputError(f"no image layer for labels {labels_layer.name!r}")

    def _poll_training(self) -> None:
        elapsed = time.monotonic() - self._started
        code = self._process.poll()
        if code is None:
            # the budget covers training; loading and the final checkpoint add a few seconds
            self.progress.setValue(min(99, int(100 * elapsed / max(self._budget_s, 1e-6))))
            self.progress.setFormat(f"{elapsed:.0f} s of {self._budget_s:.0f} s")
            return
        self._timer.stop()
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().splitlines() if line.strip()]
        self._log.close()
        self._process = None
        self.finetune_button.setText("Fine-tune")
        if code != 0:
            self.progress.setFormat("failed")
            return self._say(lines[-1] if lines else f"fine-tuning stopped (exit code {code})", error=True)
        self.progress.setValue(100)
        self.progress.setFormat("done")
        run = str(self.run_dir)
        if self.model_combo.findText(run) < 0:
            self.model_combo.addItem(run)
        self.model_combo.setCurrentText(run)
        self._say((lines[-1] if lines else "fine-tuned") + "\nthe new model is selected: Segment again")

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #e06c75;" if error else "")
        self.status.setText(text)


def _gray(data) -> np.ndarray:
    """An image layer's data as a 2-D array (RGB(A) to gray luminance, as micrometry reads files)."""
    from micrometry.io.image import to_gray

    array = np.asarray(data)
    if array.ndim == 3 and array.shape[-1] not in (3, 4):
        raise InputError(f"image is {array.ndim}-D {array.shape}: micrometry segments 2-D images")
    return to_gray(array, "<layer>")


def _storable(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 as they are; anything else scaled to 16 bit (as micrometry reads float images)."""
    from micrometry.io.image import float_to_u16

    return image if image.dtype in (np.uint8, np.uint16) else float_to_u16(image)
