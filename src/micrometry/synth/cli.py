"""``micrometry synth ...``: write synthetic datasets with their hidden ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from micrometry.options import number, overwrite_option, seed_option

# Largest synthetic image side: 8192 x 8192 is 67 Mpx, within what the reader decodes (89 Mpx).
MAX_SIDE = 8192
# Most images of one kind per dataset: a bound on a typo's cost, far above any test set needed.
MAX_IMAGES = 100_000

synth_app = typer.Typer(
    help="Synthesise datasets in the real formats, with ground truth.", no_args_is_help=True
)


@synth_app.command("sem")
def synth_sem(
    out: Path = typer.Argument(..., help="Dataset folder to create (the 2022 Samsung 3D-metrology layout)."),
    truth: Path = typer.Option(..., "--truth", help="Folder for the hidden ground truth (outside OUT)."),
    seed: int = seed_option("Random seed; the dataset is a deterministic function of it."),
    n_structures: int = number(
        200, "--n-structures", low=1, help="Simulated base structures (x4 cases x2 renders)."
    ),
    n_sites: int = number(40, "--n-sites", low=1, help="Real training sites."),
    images_per_site: int = number(25, "--images-per-site", low=1, help="Real images per site."),
    n_test: int = number(200, "--n-test", low=0, high=MAX_IMAGES, help="Real test images."),
    overwrite: bool = overwrite_option("OUT and TRUTH folders"),
) -> None:
    """Synthesise simulated SEM/depth pairs, real sites with average depths, and test images."""
    from rich.console import Console

    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    config = SemSynthConfig(
        seed=seed, n_structures=n_structures, n_sites=n_sites, images_per_site=images_per_site, n_test=n_test
    )
    counts = write_sem_dataset(out, truth, config, overwrite=overwrite)
    Console().print(
        f"wrote {out} and {truth}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
    )


@synth_app.command("sem-frames")
def synth_sem_frames(
    out: Path = typer.Argument(..., help="Folder for the frames (frame_XXXX.png)."),
    truth: Path = typer.Option(..., "--truth", help="Folder for the hidden truth: depth maps, holes.csv."),
    seed: int = seed_option("Random seed; the frames are a deterministic function of it."),
    n_frames: int = number(4, "--frames", low=1, help="Frames to write."),
    height: int = number(1024, "--height", low=144, help="Frame height in pixels."),
    width: int = number(1024, "--width", low=144, help="Frame width in pixels."),
    lattice: str = typer.Option(
        "staggered", "--lattice", help="staggered (the crops' array), square, hexagonal."
    ),
    pitch_x: float = typer.Option(48.0, "--pitch-x", help="Lattice pitch along x in pixels."),
    pitch_y: float = typer.Option(72.0, "--pitch-y", help="Cell height of the staggered lattice in pixels."),
    depth: float = typer.Option(125.0, "--depth", help="Nominal hole depth in nm."),
    under_etched: int = number(4, "--under-etched", low=0, help="Under-etched holes per frame."),
    under_etch_fraction: float = typer.Option(
        0.7, "--under-etch-fraction", help="Their depth as a fraction of the nominal (+-0.1)."
    ),
    not_open: int = number(4, "--not-open", low=0, help="Holes that did not open, per frame."),
    merged: int = number(1, "--merged", low=0, help="Merged pairs per frame."),
    missing: int = number(2, "--missing", low=0, help="Missing holes per frame."),
    data_bar: int = number(
        0, "--data-bar", low=0, help="Height in px of a data bar at the bottom (0: none)."
    ),
    overwrite: bool = overwrite_option("OUT and TRUTH folders"),
) -> None:
    """Whole CD-SEM frames of hole arrays with trends and defect holes, and their truth (docs/depth.md, "Frames")."""
    from micrometry.synth.sem_frames import FrameConfig, write_sem_frames

    f = under_etch_fraction
    config = FrameConfig(
        seed=seed,
        n_frames=n_frames,
        height_px=height,
        width_px=width,
        lattice=lattice,
        pitch_x=pitch_x,
        pitch_y=pitch_y,
        depth_nm=depth,
        n_under_etched=under_etched,
        under_etch_fraction=(max(f - 0.1, 0.0), min(f + 0.1, 1.0)),
        n_not_open=not_open,
        n_merged=merged,
        n_missing=missing,
        data_bar_px=data_bar,
    )
    counts = write_sem_frames(out, truth, config, overwrite=overwrite)
    typer.echo(
        f"wrote {out} and {truth}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
    )


@synth_app.command("databar")
def synth_databar(
    out: Path = typer.Argument(..., help="Folder for the images (sem_XXXX.png)."),
    truth: Path = typer.Option(
        ..., "--truth", help="Folder for the truth: scale_bars.csv (pixel size, unit, ...)."
    ),
    n: int = number(20, "--n", low=1, help="Images to write (the first: six discs above a '500 nm' bar)."),
    seed: int = seed_option("Random seed of the fonts, sizes, positions, units and polarities."),
    overwrite: bool = overwrite_option("OUT and TRUTH folders"),
) -> None:
    """SEM-style images with a burned-in data bar (scale bar, label, settings), to try --pixel-size auto."""
    from micrometry.synth.databar import write_databar_images

    count = write_databar_images(out, truth, n, seed, overwrite)
    typer.echo(f"wrote {count} images to {out} and their scale bars to {truth / 'scale_bars.csv'}")


@synth_app.command("particles")
def particles(
    out: Path = typer.Argument(..., help="Output folder: train/, test/, batches/A, batches/B."),
    truth: Path = typer.Option(
        ..., "--truth", help="Folder for the hidden answers (test annotations, true descriptors)."
    ),
    seed: int = seed_option("Random seed: the same seed gives the same images."),
    n_train: int = number(8, "--n-train", low=0, high=MAX_IMAGES, help="Annotated training images."),
    n_test: int = number(4, "--n-test", low=0, high=MAX_IMAGES, help="Test images (answers go to TRUTH)."),
    n_batch: int = number(3, "--n-batch", low=0, high=MAX_IMAGES, help="Images in each of batches A and B."),
    height: int = number(1024, "--height", low=32, high=MAX_SIDE, help="Image height in pixels."),
    width: int = number(1280, "--width", low=32, high=MAX_SIDE, help="Image width in pixels."),
    params_file: Path | None = typer.Option(
        None,
        "--params",
        help="JSON of generator parameters "
        '({"population": {...}, "optics": {...}, "distractors": {...}, '
        '"imaging": {...}}); '
        "see OUT/synth_config.json for every name.",
    ),
    modes: str | None = typer.Option(
        None,
        "--modes",
        "--mode",
        help="Imaging mode, or a comma-separated mix "
        "(image k uses the k-th mode, cyclically): brightfield (default), "
        "low-contrast, uneven, phase, phase-negative, fluorescence, darkfield; realism modes: "
        "tissue (textured ground), dic (relief), chromatin (texture inside nuclei), "
        "fluorescence-hdr (16-bit, dim beside saturated).",
    ),
    noise: str | None = typer.Option(
        None, "--noise", help="Noise level: low, normal (default) or high (Poisson photon + read noise)."
    ),
    density: str | None = typer.Option(
        None,
        "--density",
        help="Particle density: sparse, normal (default: "
        "40-200 per 1024x1280 frame), crowded, touching, overlapping "
        "(occluding particles: instance separation is the hard part), none (texture only: no particles).",
    ),
    size_range: str | None = typer.Option(
        None,
        "--size-range",
        help="Smallest and largest area-equivalent "
        "diameter in pixels, e.g. 8,150 (default 12,110, median 30).",
    ),
    overwrite: bool = overwrite_option("OUT and TRUTH folders"),
) -> None:
    """Synthetic particle images (brightfield, phase, fluorescence, ...) with COCO truth (docs/particles-data.md)."""
    from micrometry.errors import InputError
    from micrometry.io.coco import read_json
    from micrometry.synth.particle_dataset import generate_dataset, with_options
    from micrometry.synth.particle_scene import SuspensionParams

    overrides = read_json(params_file) if params_file is not None else {}
    if not isinstance(overrides, dict):
        raise InputError("parameters must be a JSON object", params_file)
    overrides = {**overrides.get("params", overrides), "height": height, "width": width}
    try:
        params = SuspensionParams.from_dict(overrides)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc), params_file) from None
    try:
        params = with_options(
            params, modes=_names(modes), noise=noise, density=density, size_range_px=_size_range(size_range)
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    summary = generate_dataset(
        out, truth, params, seed=seed, n_train=n_train, n_test=n_test, n_batch=n_batch, overwrite=overwrite
    )
    typer.echo(
        f"{summary['images']} images ({summary['train_annotations']} train and "
        f"{summary['test_annotations']} test particles annotated) in {summary['seconds']:.1f} s "
        f"({summary['seconds_per_image']:.2f} s/image) -> {out}, answers in {truth}"
    )


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [m.strip() for m in text.split(",") if m.strip()]


def _size_range(text: str | None) -> tuple[float, float] | None:
    """``"8,150"`` -> (8.0, 150.0); ValueError with the expected form otherwise."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        lo, hi = (float(v) for v in parts)
    except ValueError:
        raise ValueError(f"--size-range must be MIN,MAX in pixels (e.g. 8,150), not {text!r}") from None
    return lo, hi
