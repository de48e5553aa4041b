"""HTML reports: the Report API, particle and depth reports, input detection, bad inputs."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pandas as pd
import pytest

from helpers import command_argv
from micrometry.cli import run
from micrometry.io.image import write_image
from micrometry.report import Report
from micrometry.report.cli import detect
from micrometry.report.depth import load_depth_samples, rmse_table

matplotlib.use("Agg")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Parsed(HTMLParser):
    """Collects embedded images, headings, table cells and any external reference."""

    def __init__(self):
        super().__init__()
        self.images: list[bytes] = []
        self.external: list[str] = []
        self.headings: list[str] = []
        self.cells: list[str] = []
        self.captions: list[str] = []
        self.downloads: dict[str, bytes] = {}
        self.key_labels: list[str] = []
        self.contents: list[str] = []
        self._tag = None
        self._in_nav = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag = tag
        if tag == "img":
            src = attrs.get("src", "")
            prefix = "data:image/png;base64,"
            if src.startswith(prefix):
                self.images.append(base64.b64decode(src[len(prefix) :]))
            else:
                self.external.append(src)
        for key in ("href", "src"):
            if tag in ("link", "script") and attrs.get(key):
                self.external.append(attrs[key])
        if tag == "a" and attrs.get("download"):
            prefix = "data:text/csv;charset=utf-8;base64,"
            assert attrs["href"].startswith(prefix)
            self.downloads[attrs["download"]] = base64.b64decode(attrs["href"][len(prefix) :])
        if tag == "nav":
            self._in_nav = True

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False

    def handle_data(self, data):
        if self._in_nav and self._tag == "a":
            self.contents.append(data)
        elif self._tag in ("h1", "h2"):
            self.headings.append(data)
        elif self._tag == "td":
            self.cells.append(data)
        elif self._tag == "figcaption":
            self.captions.append(data)
        elif self._tag == "span":
            self.key_labels.append(data)


def parse(path) -> Parsed:
    parser = Parsed()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_report_api_self_contained(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report = Report("Title <&>")
    report.section("Numbers").text("a < b").table(pd.DataFrame({"x": [1.5, 2.25], "name": ["p", "q"]}))
    report.figure(fig, "a line")
    out = report.write(tmp_path / "r.html")
    parsed = parse(out)
    assert len(parsed.images) == 1 and parsed.images[0].startswith(PNG_MAGIC)
    assert parsed.external == []
    assert "Title <&>" in parsed.headings and "Numbers" in parsed.headings
    assert {"1.5", "2.25", "p", "q"} <= set(parsed.cells)
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left


def write_label_folder(folder, n=2):
    rng = np.random.default_rng(0)
    for i in range(n):
        labels = np.zeros((96, 128), np.uint16)
        for k in range(1, 9):
            r, c = rng.integers(10, 86), rng.integers(10, 118)
            labels[max(r - 5, 0) : r + 5, max(c - 7, 0) : c + 7] = k
        write_image(folder / f"im{i}.png", labels)
        write_image(folder.parent / "gray" / f"im{i}.png", (labels > 0).astype(np.uint8) * 180 + 20)


def test_particle_report_from_measure_table(tmp_path):
    write_label_folder(tmp_path / "labels")
    table = tmp_path / "m.csv"
    assert run(["particles", "measure", str(tmp_path / "labels"), "--out", str(table)]) == 0
    assert detect(table) == "table"
    out = tmp_path / "report.html"
    assert run(["report", str(table), "--images", str(tmp_path / "gray"), "--out", str(out)]) == 0
    parsed = parse(out)
    # PSD, shape-ratio and descriptor histograms, and one overlay per image
    assert len(parsed.images) == 5
    assert all(img.startswith(PNG_MAGIC) for img in parsed.images)
    assert {"Summary", "Particle size distribution", "Shape distributions (ISO 9276-6)", "Overlays"} <= set(
        parsed.headings
    )
    # the _summary sibling is found too
    out2 = tmp_path / "report2.html"
    assert run(["report", str(tmp_path / "m_summary.csv"), "--out", str(out2)]) == 0
    assert len(parse(out2).images) >= 3


def test_particle_report_from_label_folder_measures_it(tmp_path):
    write_label_folder(tmp_path / "labels")
    assert detect(tmp_path / "labels") == "particles"
    out = tmp_path / "r.html"
    assert run(["report", str(tmp_path / "labels"), "--out", str(out)]) == 0
    assert len(parse(out).images) >= 3


def compare_a_b(folder):
    """``particles compare`` of ``folder``'s a.csv and b.csv (100 bootstrap draws) into ``folder/cmp``."""
    cmp = folder / "cmp"
    argv = ["particles", "compare", str(folder / "a.csv"), str(folder / "b.csv"), "--out", str(cmp)]
    assert run([*argv, "--n-boot", "100"]) == 0
    return cmp


def test_compare_report(tmp_path):
    rng = np.random.default_rng(0)
    for name, shift in (("a", 0.0), ("b", 0.4)):
        eq = rng.lognormal(2, 0.3, 300)
        pd.DataFrame(
            {
                "EqDiam": eq,
                "AR": 1.2 + shift + rng.gamma(2, 0.1, 300),
                "Circ.": rng.beta(20, 2, 300),
                "Unit": "um",
            }
        ).to_csv(tmp_path / f"{name}.csv", index=False)
    cmp = compare_a_b(tmp_path)
    parsed = parse(cmp / "report.html")
    assert len(parsed.images) >= 3 and "Verdict" in parsed.headings
    assert detect(cmp) == "compare"
    out = tmp_path / "again.html"
    assert run(["report", str(cmp), "--out", str(out)]) == 0
    text = out.read_text()
    assert "aspect ratio rose from" in text
    assert len(parse(out).images) == len(parsed.images)


def write_depth_case(root, rng, n_per_case=2):
    """Simulated layout: SEM/Case_k/80/<base>_itr0.png, Depth/Case_k/80/<base>.png, predictions like the SEM."""
    truths = {}
    for case, top in (("Case_1", 140), ("Case_2", 150)):
        for i in range(n_per_case):
            yy, xx = np.mgrid[0:72, 0:48]
            hole = ((xx - 24) ** 2 / 100 + (yy - 36) ** 2 / 400) <= 1
            depth = np.where(hole, 30, top).astype(np.uint8)
            pred = np.clip(depth.astype(int) + rng.integers(-3, 4, depth.shape), 0, 255).astype(np.uint8)
            write_image(root / "Depth" / case / "80" / f"b{i}.png", depth)
            write_image(root / "SEM" / case / "80" / f"b{i}_itr0.png", (255 - depth).astype(np.uint8))
            write_image(root / "pred" / case / "80" / f"b{i}_itr0.png", pred)
            truths[(case, i)] = (pred.astype(float) - depth).ravel()
    return truths


def report_depth_case(root, out, *options):
    """Exit code of ``report`` on a :func:`write_depth_case` folder with its SEM images and truth."""
    sem_truth = ["--sem", str(root / "SEM"), "--truth", str(root / "Depth")]
    return run(["report", str(root / "pred"), *sem_truth, *options, "--out", str(out)])


def test_depth_report(tmp_path):
    errors = write_depth_case(tmp_path, np.random.default_rng(0))
    assert detect(tmp_path / "pred") == "depth"
    samples = load_depth_samples(tmp_path / "pred", tmp_path / "SEM", tmp_path / "Depth")
    assert len(samples) == 4 and all(s.sem is not None and s.truth is not None for s in samples)
    table = rmse_table(samples).set_index("case")
    case1 = np.concatenate([errors[("Case_1", i)] for i in range(2)])
    assert table.loc["Case_1", "RMSE"] == pytest.approx(np.sqrt(np.mean(case1**2)))
    every = np.concatenate(list(errors.values()))
    assert table.loc["all", "RMSE"] == pytest.approx(np.sqrt(np.mean(every**2)))
    out = tmp_path / "depth.html"
    assert report_depth_case(tmp_path, out) == 0
    parsed = parse(out)
    # RMSE bars, predicted-vs-true + Bland-Altman, sample grid, metrology per case, 3-D surface
    assert len(parsed.images) == 5 and parsed.external == []
    assert {"RMSE per case", "Samples", "A hole in 3-D"} <= set(parsed.headings)
    assert f"{table.loc['all', 'RMSE']:.3f}" in parsed.cells


def test_depth_report_without_truth_or_sem(tmp_path):
    write_depth_case(tmp_path, np.random.default_rng(1), n_per_case=1)
    out = tmp_path / "d.html"
    assert run(["report", str(tmp_path / "pred"), "--out", str(out)]) == 0
    parsed = parse(out)
    # sample maps, metrology per case, 3-D surface; nothing that needs the truth
    assert len(parsed.images) == 3 and "RMSE per case" not in parsed.headings
    assert "Predicted against true hole depth" not in parsed.headings
    text = out.read_text()
    assert "no truth (--truth)" in text and "no SEM images (--sem)" in text
    assert "true depth" not in " ".join(parsed.captions)


@pytest.mark.parametrize(
    "case", ["missing", "bad_suffix", "empty_folder", "exists", "wrong_file", "bad_truth", "bad_pixel_size"]
)
def test_report_bad_inputs_exit_2(case, tmp_path, capsys):
    write_depth_case(tmp_path, np.random.default_rng(2), n_per_case=1)
    source, out, extra = tmp_path / "pred", tmp_path / "r.html", []
    if case == "missing":
        source = tmp_path / "nope"
    elif case == "bad_suffix":
        out = tmp_path / "r.pdf"
    elif case == "empty_folder":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "exists":
        out.write_text("keep")
    elif case == "wrong_file":
        source = tmp_path / "notes.txt"
        source.write_text("hello")
    elif case == "bad_truth":
        extra = ["--truth", str(tmp_path / "no_such_truth")]
    elif case == "bad_pixel_size":
        extra = ["--nm-per-px", "0"]
    capsys.readouterr()
    assert run(["report", str(source), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    if case == "exists":
        assert out.read_text() == "keep"
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_depth_report_flat_folder_with_cases_csv(tmp_path):
    """Real test images are flat (no case folders): cases come from a CSV; without it one 'all' row."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(4):
        depth = np.full((72, 48), 140 + 10 * (i % 2), np.uint8)
        depth[20:50, 14:34] = 30
        write_image(tmp_path / "truth" / f"{i:06d}.png", depth)
        write_image(
            tmp_path / "pred" / f"{i:06d}.png",
            np.clip(depth + rng.integers(-2, 3, depth.shape), 0, 255).astype(np.uint8),
        )
        rows.append({"file": f"{i:06d}.png", "case": 1 + i % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    flat = rmse_table(load_depth_samples(tmp_path / "pred", truth_dir=tmp_path / "truth"))
    assert list(flat["case"]) == ["all"]
    from micrometry.report.depth import read_cases

    by_case = rmse_table(
        load_depth_samples(
            tmp_path / "pred", truth_dir=tmp_path / "truth", cases=read_cases(tmp_path / "cases.csv")
        )
    )
    assert list(by_case["case"]) == ["Case_1", "Case_2", "all"]
    assert list(by_case["images"]) == [2, 2, 4]
    out = tmp_path / "r.html"
    assert (
        run(
            [
                "report",
                str(tmp_path / "pred"),
                "--truth",
                str(tmp_path / "truth"),
                "--cases",
                str(tmp_path / "cases.csv"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "Case_2" in parse(out).cells


# --------------------------------------------------------------------------- issue 15: contents, key results, CSVs


def read_download(parsed: Parsed, name: str) -> pd.DataFrame:
    import io

    return pd.read_csv(io.BytesIO(parsed.downloads[name]), keep_default_na=False, na_values=[""])


def test_report_contents_key_results_and_full_csv(tmp_path):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"x_nm": rng.normal(size=57), "name": [f"r{i}" for i in range(57)]})
    df.loc[3, "x_nm"] = np.nan
    report = Report("T", calibration="1 px = 2 nm")
    report.key_result("holes", "57", "all measured")
    report.section("First").table(df, csv_name="rows.csv")
    report.section("Second").text("more")
    parsed = parse(report.write(tmp_path / "r.html"))
    assert parsed.contents == ["First", "Second"]
    assert "Key results" in parsed.headings and "holes" in parsed.key_labels
    html_text = (tmp_path / "r.html").read_text()
    assert html_text.count("Calibration: 1 px = 2 nm") == 2  # stated in every section
    # 20 rows shown, all 57 in the CSV; missing values are empty, numbers rounded to 6 digits
    assert sum(c.startswith("r") for c in parsed.cells) == 20
    full = read_download(parsed, "rows.csv")
    assert list(full["name"]) == list(df["name"])
    assert np.allclose(full["x_nm"], df["x_nm"], rtol=1e-5, equal_nan=True)
    assert (
        ",nan" not in parsed.downloads["rows.csv"].decode()
        and "r3,\n" not in parsed.downloads["rows.csv"].decode()
    )
    assert b"\nr3\n" not in parsed.downloads["rows.csv"] and b"\n,r3\n" in parsed.downloads["rows.csv"]


def test_depth_report_bland_altman_with_truth_and_metrology_csv(tmp_path):
    write_depth_case(tmp_path, np.random.default_rng(0))
    out = tmp_path / "depth.html"
    assert report_depth_case(tmp_path, out, "--nm-per-px", "3") == 0
    parsed = parse(out)
    assert "Predicted against true hole depth" in parsed.headings
    assert any("Bland-Altman" in c for c in parsed.captions)
    assert {"pixel RMSE", "hole depth bias"} <= set(parsed.key_labels)
    assert "lateral pixel size 3 nm/px" in out.read_text()
    holes = read_download(parsed, "hole_metrology.csv")
    assert len(holes) == 4 and {"depth_nm", "top_cd_x_nm", "sidewall_angle_deg"} <= set(holes.columns)
    # the synthetic holes: top 140/150 nm, bottom 30 nm -> depth 110/120; the +-3 nm noise of the predictions
    # moves top and bottom (90th percentile, minimum) apart by up to 6 nm
    depth = holes.sort_values(["case", "file"])["depth_nm"].to_numpy()
    assert np.all((depth - [110, 110, 120, 120] >= 0) & (depth - [110, 110, 120, 120] <= 7))
    assert depth[2:].mean() - depth[:2].mean() == pytest.approx(10, abs=2)
    agreement = read_download(parsed, "agreement.csv").set_index("quantity")
    from micrometry.depth.measure import measure_hole
    from micrometry.io.image import read_image

    diffs = []
    for case in ("Case_1", "Case_2"):
        for i in range(2):
            pred = read_image(tmp_path / "pred" / case / "80" / f"b{i}_itr0.png").astype(float)
            true = read_image(tmp_path / "Depth" / case / "80" / f"b{i}.png").astype(float)
            key = "depth_nm" if "depth_nm" in measure_hole(true) else "hole_depth"
            diffs.append(measure_hole(pred)[key] - measure_hole(true)[key])
    assert agreement.loc["depth (nm)", "bias"] == pytest.approx(np.mean(diffs), abs=1e-3)
    assert agreement.loc["depth (nm)", "holes"] == 4


def test_depth_report_uses_true_geometry_table(tmp_path):
    """A <split>_geometry.csv beside the truth folder (synth sem --truth) gives the true values."""
    write_depth_case(tmp_path, np.random.default_rng(0))
    truth = tmp_path / "TRUTH"
    (tmp_path / "Depth").rename(tmp_path / "test_depth")
    truth.mkdir()
    (tmp_path / "test_depth").rename(truth / "test_depth")
    rows = [
        {
            "file": f"Depth/{case}/80/b{i}.png",
            "case": case,
            "depth_nm": 100.0,
            "top_cd_x_nm": 40.0,
            "bottom_cd_x_nm": 20.0,
            "sidewall_angle_deg": 85.0,
        }
        for case in ("Case_1", "Case_2")
        for i in range(2)
    ]
    pd.DataFrame(rows).to_csv(truth / "test_geometry.csv", index=False)
    from micrometry.report.depth import depth_report, load_depth_samples, metrology_table, true_metrology

    samples = load_depth_samples(tmp_path / "pred", truth_dir=truth / "test_depth")
    true, source = true_metrology(samples, truth / "test_depth")
    assert "test_geometry.csv" in source and list(true["depth_nm"]) == [100.0] * 4
    measured = metrology_table(samples)
    report = depth_report(tmp_path / "pred", truth_dir=truth / "test_depth")
    path = report.write(tmp_path / "r.html")
    agreement = read_download(parse(path), "agreement.csv").set_index("quantity")
    assert agreement.loc["depth (nm)", "bias"] == pytest.approx(measured["depth_nm"].mean() - 100.0)


def test_old_and_new_column_names_read_alike():
    from micrometry.report.columns import depth_columns, particle_columns, particle_unit

    old = pd.DataFrame({"file": ["a"], "hole_depth": [110.0], "top_cd_x": [50.0], "sidewall_angle": [85.0]})
    assert list(depth_columns(old).columns) == ["file", "depth_nm", "top_cd_x_nm", "sidewall_angle_deg"]
    new = pd.DataFrame({"Label": [1], "Area_um2": [4.0], "Perim_um": [7.0], "EqDiam_um": [2.26], "AR": [1.1]})
    mapped = particle_columns(new)
    assert {"Area", "Perim.", "EqDiam", "AR"} <= set(mapped.columns) and particle_unit(mapped) == "um"
    px = particle_columns(pd.DataFrame({"Area_px2": [4.0], "Feret_px": [3.0]}))
    assert {"Area", "Feret"} <= set(px.columns) and particle_unit(px) == "px"
    # a length name with a squared unit is not an area: left alone
    assert "Feret" not in particle_columns(pd.DataFrame({"Feret_um2": [1.0]})).columns


def test_particle_report_from_table_with_unit_names(tmp_path):
    write_label_folder(tmp_path / "labels")
    table = tmp_path / "m.csv"
    assert (
        run(command_argv("particles", "measure", tmp_path / "labels", out=table, pixel_size=0.5, unit="um"))
        == 0
    )
    particles = pd.read_csv(table)  # particles measure names the units in its columns
    assert {"Area_um2", "Feret_um", "Perim_um"} <= set(particles.columns) and "Unit" not in particles.columns
    out = tmp_path / "r.html"
    assert run(["report", str(table), "--out", str(out)]) == 0
    parsed = parse(out)
    assert "EqDiam (um)" in parsed.cells and "Area (um²)" in parsed.cells
    assert "1 px = 0.5 um" in out.read_text()
    # the particle CSV download is the table as read, every row
    assert len(read_download(parsed, "particles.csv")) == len(particles)
    assert "Area_um2" in read_download(parsed, "particles.csv").columns


def test_overlay_ids_match_the_table(tmp_path):
    from micrometry.report.particles import OverlaySample, id_positions, overlay_figure

    labels = np.zeros((80, 100), np.uint16)
    labels[5:25, 5:30] = 3
    labels[40:70, 50:90] = 7
    # a C shape: its centroid lies outside it, the id must not
    labels[30:60, 10:40] = 9
    labels[38:52, 18:40] = 0
    positions = id_positions(labels)
    assert [p[0] for p in positions] == [3, 7, 9]
    assert all(labels[int(round(y)), int(round(x))] == i for i, x, y in positions)
    assert [p[0] for p in id_positions(labels, np.array([7, 3, 42]))] == [3, 7]

    sample = OverlaySample("im", labels)
    numbered = overlay_figure(sample, np.array([3, 7, 9]))
    assert sorted(t.get_text() for t in numbered.axes[0].texts) == ["3", "7", "9"]
    bare = overlay_figure(sample, np.array([], dtype=int))
    assert len(bare.axes[0].texts) == 0

    def pixels(fig):
        import io

        from PIL import Image

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=50)
        return np.asarray(Image.open(buffer).convert("RGB")).astype(int)

    assert np.abs(pixels(numbered) - pixels(bare)).sum() > 0


def test_particle_report_ids_and_truth(tmp_path):
    write_label_folder(tmp_path / "labels")
    table = tmp_path / "m.csv"
    assert run(["particles", "measure", str(tmp_path / "labels"), "--out", str(table)]) == 0
    # "truth": the same particles, a third of them left out
    truth = pd.read_csv(table).iloc[::3]
    truth.to_csv(tmp_path / "truth.csv", index=False)
    out = tmp_path / "r.html"
    assert (
        run(
            [
                "report",
                str(table),
                "--images",
                str(tmp_path / "gray"),
                "--truth",
                str(tmp_path / "truth.csv"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    parsed = parse(out)
    assert "D50 error vs truth" in parsed.key_labels
    compared = read_download(parsed, "psd_vs_truth.csv")
    assert len(compared) == 6 and compared["true (px)"].notna().all()
    assert "No truth given" not in out.read_text()
    assert any("particle ids" in c for c in parsed.captions)
    out2 = tmp_path / "r2.html"
    assert run(["report", str(table), "--out", str(out2)]) == 0
    assert "No truth given (--truth)" in out2.read_text()


def test_compare_verdict_names_the_deciding_criterion():
    from micrometry.particles.compare import compare_tables
    from micrometry.report.particles import decided_by

    rng = np.random.default_rng(0)
    n = 4000
    # same median, different spread: KS rejects, the median does not move
    a = pd.DataFrame({"EqDiam": rng.lognormal(2, 0.25, n), "AR": 1.2 + rng.gamma(2, 0.1, n)})
    b = pd.DataFrame({"EqDiam": rng.lognormal(2, 0.45, n), "AR": 1.2 + rng.gamma(2, 0.1, n)})
    result = compare_tables(a, b).set_index("descriptor")
    eq, ar = result.loc["EqDiam"], result.loc["AR"]
    assert eq["ks_pvalue"] < 0.001 and not eq["changed"]
    assert "no significant change" not in eq["verdict"] and "includes 0" in eq["verdict"]
    assert decided_by(eq, 0.01) == "median-shift CI includes 0"
    assert ar["ks_pvalue"] > 0.01 and "does not reject" in ar["verdict"]
    assert decided_by(ar, 0.01).startswith("KS test not significant")


def test_compare_report_rewords_old_verdicts(tmp_path):
    """An older compare folder's 'no significant change (... p<0.001 ...)' is reworded from its numbers."""
    rng = np.random.default_rng(1)
    for name, sigma in (("a", 0.25), ("b", 0.45)):
        pd.DataFrame(
            {"EqDiam": rng.lognormal(2, sigma, 3000), "Circ.": rng.beta(20, 2, 3000), "Unit": "um"}
        ).to_csv(tmp_path / f"{name}.csv", index=False)
    cmp = compare_a_b(tmp_path)
    table = pd.read_csv(cmp / "compare.csv")
    table["verdict"] = "old wording: no significant change (p<0.001)"
    table.to_csv(cmp / "compare.csv", index=False)
    out = tmp_path / "again.html"
    assert run(["report", str(cmp), "--out", str(out)]) == 0
    text = out.read_text()
    assert "old wording" not in text and "decided by" in text
    parsed = parse(out)
    assert "median-shift CI includes 0" in parsed.cells
    assert len(read_download(parsed, "compare.csv")) == len(table)
