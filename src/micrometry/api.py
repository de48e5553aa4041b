"""micrometry from Python: the functions the command line calls, numpy in, numpy and pandas out.

``import micrometry as mm`` exposes every name of this module (loaded on first use,
so that ``import micrometry`` stays fast)::

    import micrometry as mm

    model = mm.load_model("shipped")                # or "watershed", a run folder, an exported model folder
    seg = model.segment(image, diameter=None)       # seg.labels, seg.scores, seg.reliable, seg.info
    table = mm.measure(seg.labels, pixel_size=0.5, unit="um")   # the columns of `particles measure`
    psd = mm.size_distribution(table)               # number- and volume-weighted D10/D50/D90 with CIs
    result = mm.compare(table_a, table_b)           # what `particles compare` decides, one row per descriptor
    depth = mm.load_depth_model("shipped").predict(sem_images)  # (N, 72, 48) heights in nm
    holes = mm.hole_metrology(depth, nm_per_px=2.0)             # what `depth measure` writes

Problems with the input raise :class:`~micrometry.errors.InputError` (the CLI's
one-line ``error: ...``) or one of its subclasses. The full reference with
examples is ``docs/api.md``.

Examples
--------
Six dark discs on a bright field, segmented by the classical watershed and measured
at 0.5 um per pixel:

>>> import numpy as np
>>> import micrometry as mm
>>> from skimage.draw import disk
>>> image = np.full((160, 240), 200, np.uint8)
>>> for y in (50, 110):
...     for x in (50, 120, 190):
...         image[disk((y, x), 15)] = 60
>>> seg = mm.load_model("watershed").segment(image)
>>> seg.count
6
>>> table = mm.measure(seg.labels, pixel_size=0.5, unit="um")
>>> table[["Label", "Area_um2", "Feret_um"]].round(1).head(2)
   Label  Area_um2  Feret_um
0      1     178.2      15.7
1      2     178.2      15.7
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from micrometry import _API_NAMES
from micrometry.errors import InputError
from micrometry.particles.segmenter import Instances

if TYPE_CHECKING:
    import pandas as pd

# The package lists the API's names once (it serves them lazily, without importing this module).
__all__ = list(_API_NAMES)

# --------------------------------------------------------------------------- particles


@dataclass
class Segmentation(Instances):
    """The particles found in one image.

    Attributes
    ----------
    labels : ndarray
        ``(H, W)`` int32 label image: 0 background, ``1..N`` one id per particle.
    scores : ndarray
        ``(N,)`` float32 confidences; ``scores[i]`` belongs to label ``i + 1``.
    reliable : bool or None
        Whether the segmentation can be trusted for this image: False when it
        shows the marks of a model segmenting a texture or debris rather than
        particles (:mod:`micrometry.particles.reliability`; ``info["reason"]``
        says why, and a warning is given). None: not judged.
    info : dict
        What ``particles predict`` stores for the image in ``prediction.json``:
        what the model chose (``diameter_px``, ``scale``, ``diameter_source``),
        ``warnings`` about implausible results, and the reliability verdict
        (``reliable``, ``reason``, ``reliability``: the figures it looked at).
    """

    reliable: bool | None = None


class SegmentationModel:
    """A particle segmentation model, ready to segment images (see :func:`load_model`).

    Attributes
    ----------
    name : str
        The model's registered name (``center-offset``, ``watershed``, ...).
    source : str
        What was loaded: ``shipped``, a model name or a folder.
    """

    def __init__(self, source: str | Path, **options):
        self.source = str(source)
        self._options = options
        from micrometry.particles.models.base import load_particle_model

        self._segmenters = {None: load_particle_model(source, **options)}
        self.name = self._segmenters[None].name

    def __repr__(self) -> str:
        return f"SegmentationModel({self.source!r}, name={self.name!r})"

    def _segmenter(self, diameter: float | None):
        """The loaded segmenter for this particle diameter (one per diameter, kept)."""
        from micrometry.options import check_number
        from micrometry.particles.models.base import load_particle_model

        if diameter is not None:
            diameter = float(check_number(diameter, "diameter", low=1, high=10000))
        if diameter not in self._segmenters:
            self._segmenters[diameter] = load_particle_model(self.source, diameter=diameter, **self._options)
        return self._segmenters[diameter]

    def segment(self, image, diameter: float | None = None, scale_bar=None) -> Segmentation:
        """Segment the particles of one image.

        Parameters
        ----------
        image : array_like or path
            ``(H, W)`` gray image (uint8, uint16 or float), an ``(H, W, 3|4)`` colour
            image (converted to gray luminance with a warning) or an image file.
        diameter : float, optional
            The particles' typical (median area-equivalent) diameter in pixels, as
            ``--diameter``; default: estimated per image (models trained with
            automatic size, like the shipped one). The watershed takes none.
        scale_bar : ScaleBar, optional
            The image's data bar, as :func:`read_scale_bar` found it: left out of
            the segmentation (the model sees the image without its rows, so no
            particle comes from the bar's text), as ``particles predict
            --pixel-size auto`` does. ``info["data_bar_rows"]`` records the band.

        Returns
        -------
        Segmentation

        Raises
        ------
        InputError
            An unreadable file, an image that is not 2-D gray or colour, a diameter
            out of range or one the model does not take.

        Examples
        --------
        >>> import numpy as np
        >>> import micrometry as mm
        >>> from skimage.draw import disk
        >>> image = np.full((128, 128), 210, np.uint8)
        >>> for y, x in [(32, 32), (32, 96), (96, 40), (90, 94)]:
        ...     image[disk((y, x), 12)] = 50
        >>> seg = mm.load_model("shipped").segment(image, diameter=24)
        >>> seg.count, seg.labels.shape, seg.info["diameter_source"]
        (4, (128, 128), 'given (--diameter)')
        """
        import warnings

        from micrometry.particles.databar import band_of, segment_without_bar
        from micrometry.particles.reliability import assess_reliability

        array = _gray_image(image)
        segmenter = self._segmenter(diameter)
        if scale_bar is None:
            found = segmenter.segment(array)
        else:
            found = segment_without_bar(segmenter, array, band_of(scale_bar))
        verdict = assess_reliability(found.labels, found.scores, found.info)
        if not verdict.reliable:
            warnings.warn(f"unreliable segmentation: {verdict.reason}", stacklevel=2)
        info = {**found.info, **verdict.record()}
        return Segmentation(found.labels, found.scores, info, reliable=verdict.reliable)


def load_model(name_or_path: str | Path = "shipped", **options) -> SegmentationModel:
    """A particle segmentation model, as ``--model`` names it.

    Parameters
    ----------
    name_or_path : str or Path
        ``"shipped"`` (the model that comes with micrometry), a registered name
        (``"watershed"``: classical, no training), a run folder written by
        ``micrometry particles train``, or a model folder written by
        ``micrometry export``.
    **options
        Inference options of ``particles predict``: ``tta`` (bool; None or left
        out: the model's default, flips for a model fine-tuned on 1-4 images), ``tta_scales``
        (``"0.8,1,1.25"``), ``scale``, ``tile``; watershed parameters for
        ``"watershed"`` (:class:`~micrometry.particles.watershed.WatershedParams`).

    Returns
    -------
    SegmentationModel

    Raises
    ------
    InputError
        An unknown name or option; ``CheckpointError`` for a folder that is not a
        usable particle model.

    Examples
    --------
    >>> import micrometry as mm
    >>> mm.load_model("watershed").name
    'watershed'
    >>> mm.load_model("shipped").name
    'center-offset'
    """
    return SegmentationModel(name_or_path, **options)


def read_scale_bar(image):
    """Read the burned-in scale bar of a micrograph: the pixel size, its unit and the data bar's rows.

    What ``--pixel-size auto`` reads (:func:`micrometry.io.scalebar.read_scale_bar`;
    the limits are in ``docs/scale-bar.md``).

    Parameters
    ----------
    image : array_like or path
        The micrograph with its data bar (gray or colour array, or an image file).

    Returns
    -------
    ScaleBar
        ``pixel_size`` (in ``unit`` per pixel), ``unit`` (``nm``, ``um``, ``mm``),
        ``label`` (the text read, e.g. ``"500 nm"``), ``bar_px``, ``confidence``
        and ``band_rows`` (the data bar's rows, which :meth:`SegmentationModel.segment`
        leaves out when given the scale bar).

    Raises
    ------
    ScaleBarError
        No scale bar could be read with confidence (an ``InputError``: the message
        says what was missing).

    Examples
    --------
    >>> import micrometry as mm
    >>> from micrometry.io.scalebar import font_paths
    >>> from micrometry.synth.databar import DataBarStyle, draw_databar, sem_discs
    >>> field, _ = sem_discs()                   # six dark discs
    >>> image, _ = draw_databar(field, 4.0, "nm", DataBarStyle(font=font_paths()[0]))
    >>> bar = mm.read_scale_bar(image)
    >>> bar.label, round(bar.pixel_size, 2), bar.unit
    ('500 nm', 4.0, 'nm')
    >>> seg = mm.load_model("watershed").segment(image, scale_bar=bar)
    >>> seg.count, bool(seg.labels[bar.band_rows[0] :].any())
    (6, False)
    """
    from micrometry.io.scalebar import read_scale_bar as read

    path = image if isinstance(image, str | Path) else None
    return read(_gray_image(image), path)


def measure(
    labels: np.ndarray,
    pixel_size: float | None = None,
    unit: str | None = None,
    image: np.ndarray | None = None,
    exclude_edges: bool = False,
) -> pd.DataFrame:
    """Measure every particle of a label image (ImageJ descriptors and ISO 9276-6).

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` integer label image, 0 background (e.g. ``Segmentation.labels``).
    pixel_size : float, optional
        Side of one pixel in ``unit``; default: lengths in pixels.
    unit : str, optional
        Length unit of ``pixel_size`` (``"um"``, ``"nm"``, ...); needed with a
        pixel size other than 1.
    image : ndarray, optional
        The gray image (same shape): adds ``Mean``, ``Min``, ``Max``.
    exclude_edges : bool
        Leave out particles touching the border (``--exclude-edges``).

    Returns
    -------
    DataFrame
        One row per particle with the columns of ``particles measure``'s table:
        ``Label``, ``Area_um2``, ``Perim_um``, ``Circ.``, ..., ``Feret_um``,
        ``EqDiam_um``, ..., ``TouchesBorder`` (units in the names; ``_px`` when
        uncalibrated).

    Examples
    --------
    >>> import numpy as np
    >>> import micrometry as mm
    >>> labels = np.zeros((40, 60), np.int32)
    >>> labels[10:20, 10:30] = 1          # a 20 x 10 px rectangle
    >>> table = mm.measure(labels, pixel_size=0.5, unit="um")
    >>> table.loc[0, ["Area_um2", "Feret_um", "MinFeret_um", "AR"]].astype(float).round(2).tolist()
    [50.0, 10.97, 5.0, 2.0]
    """
    from micrometry.options import calibration
    from micrometry.particles.measure import measure_image
    from micrometry.particles.morphometry import with_unit_names

    pixel_size, unit, _ = calibration(pixel_size, unit)
    table, _, _ = measure_image(np.asarray(labels), pixel_size, unit, image, exclude_edges)
    return with_unit_names(table, unit)


def size_distribution(
    table: pd.DataFrame | str | Path,
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    target: float = 0.05,
) -> pd.DataFrame:
    """D10/D50/D90 of the particles' area-equivalent diameter, number- and volume-weighted, with CIs,
    and whether the particle count supports D50 and D90 (ISO 13322-1).

    The figures of ``particles measure``'s summary table: percentile-bootstrap
    intervals up to 2,000 particles, Woodruff's intervals above. Volume weighting
    counts each particle as a sphere of its area-equivalent diameter. The count
    adequacy (:func:`micrometry.particles.psd.count_adequacy`) gives, for D50 and
    D90, the relative precision the count achieves and the count a relative CI
    half-width of ``target`` would need; too few particles for it is a warning, as
    in the CLI.

    Parameters
    ----------
    table : DataFrame or path
        A particle table from :func:`measure`, or a CSV/Parquet file written by
        ``particles measure``.
    n_boot : int
        Bootstrap resamples.
    confidence : float
        Central coverage of the intervals.
    seed : int
        Seed of the bootstrap.
    target : float
        Wanted relative CI half-width of D50 and D90 (0.05: +-5 %) at ``confidence``.

    Returns
    -------
    DataFrame
        Index ``(weighting, percentile)``: ``("number", "D10")`` ... ``("volume", "D90")``;
        columns ``value``, ``ci_low``, ``ci_high`` (in the table's unit), ``unit``,
        ``count`` (particles), and for D50 and D90 ``precision`` (the relative CI
        half-width this count achieves), ``count_needed`` (for ``target``; -1 when
        unknown) and ``adequate`` (NaN / missing for D10).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> import micrometry as mm
    >>> sizes = np.random.default_rng(0).lognormal(np.log(10), 0.3, 400)
    >>> table = pd.DataFrame({"EqDiam_um": sizes})
    >>> psd = mm.size_distribution(table)
    >>> psd.loc[("number", "D50"), ["value", "ci_low", "ci_high"]].astype(float).round(1).tolist()
    [9.9, 9.4, 10.3]
    >>> bool(psd.loc[("volume", "D50"), "value"] > psd.loc[("number", "D50"), "value"])
    True
    >>> v90 = psd.loc[("volume", "D90")]  # +-21 % from 400 particles; +-5 % needs about 6,900
    >>> round(float(v90["precision"]), 2), int(v90["count_needed"]), bool(v90["adequate"])
    (0.21, 6905, False)
    """
    import warnings

    import pandas as pd

    from micrometry.particles.measure import SIZE_COLUMN
    from micrometry.particles.psd import adequacy_row, adequacy_warning, count_adequacy, percentiles_with_ci

    plain = _particle_table(table)
    if SIZE_COLUMN not in plain.columns:
        raise InputError(f"the table has no {SIZE_COLUMN} column (is it from 'particles measure'?)")
    sizes = plain[SIZE_COLUMN].to_numpy(dtype=float)
    if "Unit" in plain.columns and len(plain):
        unit = str(plain["Unit"].iloc[0])
    else:  # no particle: the unit is only in the size column's name
        named = [str(c) for c in (table.columns if isinstance(table, pd.DataFrame) else [])]
        unit = next((c[len(SIZE_COLUMN) + 1 :] for c in named if c.startswith(f"{SIZE_COLUMN}_")), "px")
    parts = {
        weighting: percentiles_with_ci(sizes, weighting, n_boot=n_boot, confidence=confidence, seed=seed)
        for weighting in ("number", "volume")
    }
    psd = pd.concat(parts, names=["weighting", "percentile"])
    psd["unit"] = unit
    count = int(np.isfinite(sizes).sum())
    psd["count"] = count
    adequacy = count_adequacy(sizes, target, confidence)
    keys = [f"{p}_{w[0]}" for w, p in psd.index]  # ("number", "D50") -> D50_n
    psd["precision"] = [adequacy["precision"].get(k, np.nan) for k in keys]
    psd["count_needed"] = pd.array([adequacy["count_needed"].get(k) for k in keys], dtype="Int64")
    psd["adequate"] = pd.array([adequacy["adequate"].get(k) for k in keys], dtype="boolean")
    line = adequacy_warning(adequacy_row(sizes, target, confidence), count)
    if line:
        warnings.warn(line, stacklevel=2)
    return psd


def compare(
    table_a: pd.DataFrame | str | Path,
    table_b: pd.DataFrame | str | Path,
    alpha: float = 0.01,
    rel_threshold: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare two batches descriptor by descriptor, as ``particles compare`` does.

    A descriptor has ``changed`` when the KS test rejects equal distributions at
    ``alpha``, the bootstrap CI of the median shift excludes 0, and the shift is
    at least ``rel_threshold`` of A's median (docs/morphometry.md).

    Parameters
    ----------
    table_a, table_b : DataFrame or path
        Particle tables from :func:`measure` (concatenate several images' tables
        for a batch), or CSV/Parquet files written by ``particles measure``. Both
        in the same unit.
    alpha, rel_threshold, n_boot, seed
        ``--alpha``, ``--rel-threshold``, ``--n-boot``, ``--seed``.

    Returns
    -------
    DataFrame
        One row per shape descriptor: ``descriptor``, medians and their CIs, the
        shift and its CI, KS statistic and p-value, Cliff's delta, ``significant``,
        ``relevant``, ``changed`` and the sentence the CLI prints (``verdict``).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> import micrometry as mm
    >>> rng = np.random.default_rng(1)
    >>> a = pd.DataFrame({"AR": rng.normal(1.2, 0.1, 300), "Circ.": rng.normal(0.8, 0.05, 300)})
    >>> b = pd.DataFrame({"AR": rng.normal(1.5, 0.1, 300), "Circ.": rng.normal(0.8, 0.05, 300)})
    >>> result = mm.compare(a, b)
    >>> result[["descriptor", "changed"]]
      descriptor  changed
    0      Circ.    False
    1         AR     True
    """
    from micrometry.particles.compare import CompareSettings, compare_tables

    settings = CompareSettings(alpha=alpha, relative_threshold=rel_threshold, n_boot=n_boot, seed=seed)
    return compare_tables(_particle_table(table_a), _particle_table(table_b), settings=settings)


def _particle_table(table: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A particle table with micrometry's column names (``Area``, ``Feret``, ``Unit``)."""
    from micrometry.particles.measure import read_table
    from micrometry.particles.morphometry import without_unit_names

    if isinstance(table, str | Path):
        return read_table(table)
    return without_unit_names(table)


def _gray_image(image) -> np.ndarray:
    """A 2-D gray array from an array or an image file, as ``particles predict`` reads one."""
    from micrometry.io.image import read_image, to_gray

    if isinstance(image, str | Path):
        return read_image(image)
    array = np.asarray(image)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise InputError(f"expected a numeric image, got dtype {array.dtype}")
    return to_gray(array)


# --------------------------------------------------------------------------- depth


class DepthModel:
    """A depth-from-SEM model, ready to predict (see :func:`load_depth_model`).

    Attributes
    ----------
    name : str
        The method's registered name (``unet-weak``, ``ae``, ...).
    method : DepthMethod
        The underlying :class:`~micrometry.depth.methods.base.DepthMethod`.
    """

    def __init__(self, method):
        self.method = method
        self.name = method.name

    def __repr__(self) -> str:
        return f"DepthModel(name={self.name!r})"

    def predict(self, images) -> np.ndarray:
        """Height maps of 72x48 SEM images of contact holes.

        Parameters
        ----------
        images : array_like
            ``(N, 72, 48)`` or one ``(72, 48)`` image, or a list of them; uint8
            (uint16 is scaled by 1/257, as the CLI reads 16-bit PNGs).

        Returns
        -------
        ndarray
            ``(N, 72, 48)`` float32 heights in nm (``(72, 48)`` for one image).

        Examples
        --------
        >>> import numpy as np
        >>> import micrometry as mm
        >>> sem = np.full((2, 72, 48), 90, np.uint8)
        >>> mm.load_depth_model("shipped").predict(sem).shape
        (2, 72, 48)
        """
        stack, single = _sem_stack(images)
        maps = self.method.predict(stack)
        return maps[0] if single else maps

    def report(self, images) -> pd.DataFrame:
        """Per image the hole depth with its 90 % interval and whether it looks unlike the training data.

        The figures of ``depth predict``'s ``depth_report.csv``; a model that knows
        no uncertainty (all but ``unet-weak``) gives NaN intervals and no flags.

        Returns
        -------
        DataFrame
            ``depth_nm``, ``depth_low_nm``, ``depth_high_nm``, ``ood_score``,
            ``unlike_training_data`` (bool), one row per image.
        """
        import pandas as pd

        from micrometry.depth.predict import REPORT_COLUMNS

        stack, _ = _sem_stack(images)
        report = self.method.predict_report(stack)[1] if hasattr(self.method, "predict_report") else None
        if report is None:
            nan = np.full(len(stack), np.nan)
            return pd.DataFrame(
                {**dict.fromkeys(REPORT_COLUMNS, nan), "unlike_training_data": np.zeros(len(stack), bool)}
            )
        table = pd.DataFrame({k: np.asarray(report[k], dtype=float) for k in REPORT_COLUMNS})
        table["unlike_training_data"] = np.asarray(report["ood"], dtype=bool)
        return table


def load_depth_model(name_or_path: str | Path = "shipped", device: str = "cpu") -> DepthModel:
    """A depth model, as ``depth predict --model`` names it.

    Parameters
    ----------
    name_or_path : str or Path
        ``"shipped"``, a run folder written by ``micrometry depth train`` or a
        model folder written by ``micrometry export``.
    device : str
        ``"cpu"``, ``"cuda"``, ``"auto"`` ...

    Returns
    -------
    DepthModel

    Examples
    --------
    >>> import micrometry as mm
    >>> mm.load_depth_model("shipped").name
    'unet-weak'
    """
    from micrometry.depth.methods import base

    return DepthModel(base.load_depth_model(name_or_path, device=device))


def hole_metrology(
    depth: np.ndarray,
    nm_per_px: float = 2.0,
    top_fraction: float = 0.9,
    bottom_fraction: float = 0.1,
    names: list[str] | None = None,
) -> pd.DataFrame:
    """Depth, top and bottom CD and sidewall angle of the central hole of each height map.

    The measurement of ``depth measure`` (definitions in docs/depth.md).

    Parameters
    ----------
    depth : ndarray
        ``(N, H, W)`` or one ``(H, W)`` height map in nm (e.g. from
        :meth:`DepthModel.predict`).
    nm_per_px : float
        Pixel size in nm (``--nm-per-px``).
    top_fraction, bottom_fraction : float
        Levels, as fractions of the depth above the bottom, where the top and
        bottom CD are read (``--top-level``, ``--bottom-level``).
    names : list of str, optional
        A ``file`` column (e.g. the images' file names).

    Returns
    -------
    DataFrame
        One row per map: ``status`` (``ok``, ``partial``, ``failed``), ``note``
        (why a value is missing), ``depth_nm``, ``top_level_nm``,
        ``bottom_level_nm``, ``top_cd_x_nm``, ``top_cd_y_nm``, ``bottom_cd_x_nm``,
        ``bottom_cd_y_nm``, ``sidewall_angle_x_deg``, ``sidewall_angle_y_deg``,
        ``sidewall_angle_deg``.

    Examples
    --------
    A hole 100 nm deep with straight walls, 40 px across at the top and 20 px at
    the bottom:

    >>> import numpy as np
    >>> import micrometry as mm
    >>> y, x = np.mgrid[:72, :48]
    >>> r = np.hypot(y - 35.5, x - 23.5)
    >>> height = np.clip(150 - 100 * (20 - r) / 10, 50, 150)
    >>> holes = mm.hole_metrology(height, nm_per_px=2.0)
    >>> holes.loc[0, "status"]
    'ok'
    >>> holes.loc[0, ["depth_nm", "top_cd_x_nm", "bottom_cd_x_nm"]].astype(float).round(1).tolist()
    [100.0, 76.0, 44.0]
    """
    from micrometry.depth.measure import hole_table, measure_maps

    maps = np.asarray(depth, dtype=np.float64)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise InputError(f"expected height maps of shape (N, H, W) or (H, W), got {np.shape(depth)}")
    if not 0 <= bottom_fraction < top_fraction <= 1:
        raise InputError(
            f"need 0 <= bottom_fraction < top_fraction <= 1, got {bottom_fraction} and {top_fraction}"
        )
    if names is not None and len(names) != len(maps):
        raise InputError(f"{len(names)} names for {len(maps)} height maps")
    rows = measure_maps(maps, nm_per_px=nm_per_px, top_fraction=top_fraction, bottom_fraction=bottom_fraction)
    table = hole_table(range(len(maps)) if names is None else names, rows)
    return table if names is not None else table.drop(columns="file")


def _sem_stack(images) -> tuple[np.ndarray, bool]:
    """``(N, 72, 48)`` uint8 SEM images, checked as the CLI checks each file, and whether one was given."""
    from micrometry.depth.dataset import sem_image

    array = images if isinstance(images, np.ndarray) else np.asarray(list(images))
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"expected SEM images of shape (N, 72, 48) or (72, 48), got {array.shape}")
    return np.stack([sem_image(im, f"image {i}") for i, im in enumerate(array)]), single
