"""HTML reports: the Report API, particle and depth reports, input detection, bad inputs."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pandas as pd
import pytest

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
        self._tag = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag = tag
        if tag == "img":
            src = attrs.get("src", "")
            prefix = "data:image/png;base64,"
            if src.startswith(prefix):
                self.images.append(base64.b64decode(src[len(prefix):]))
            else:
                self.external.append(src)
        for key in ("href", "src"):
            if tag in ("link", "script") and attrs.get(key):
                self.external.append(attrs[key])

    def handle_data(self, data):
        if self._tag in ("h1", "h2"):
            self.headings.append(data)
        elif self._tag == "td":
            self.cells.append(data)


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
            labels[max(r - 5, 0):r + 5, max(c - 7, 0):c + 7] = k
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
    # PSD, histograms and one overlay per image
    assert len(parsed.images) == 4
    assert all(img.startswith(PNG_MAGIC) for img in parsed.images)
    assert {"Summary", "Particle size distribution", "Overlays"} <= set(parsed.headings)
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


def test_compare_report(tmp_path):
    rng = np.random.default_rng(0)
    for name, shift in (("a", 0.0), ("b", 0.4)):
        eq = rng.lognormal(2, 0.3, 300)
        pd.DataFrame({"EqDiam": eq, "AR": 1.2 + shift + rng.gamma(2, 0.1, 300), "Circ.": rng.beta(20, 2, 300),
                      "Unit": "um"}).to_csv(tmp_path / f"{name}.csv", index=False)
    cmp = tmp_path / "cmp"
    assert run(["particles", "compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out", str(cmp),
                "--n-boot", "100"]) == 0
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
    assert run(["report", str(tmp_path / "pred"), "--sem", str(tmp_path / "SEM"), "--truth",
                str(tmp_path / "Depth"), "--out", str(out)]) == 0
    parsed = parse(out)
    # RMSE bars, sample grid, 3-D surface
    assert len(parsed.images) == 3 and parsed.external == []
    assert {"RMSE per case", "Samples", "A hole in 3-D"} <= set(parsed.headings)
    assert f"{table.loc['all', 'RMSE']:.3f}" in parsed.cells


def test_depth_report_without_truth_or_sem(tmp_path):
    write_depth_case(tmp_path, np.random.default_rng(1), n_per_case=1)
    out = tmp_path / "d.html"
    assert run(["report", str(tmp_path / "pred"), "--out", str(out)]) == 0
    parsed = parse(out)
    assert len(parsed.images) == 2 and "RMSE per case" not in parsed.headings


@pytest.mark.parametrize("case", ["missing", "bad_suffix", "empty_folder", "exists", "wrong_file", "bad_truth"])
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
        write_image(tmp_path / "pred" / f"{i:06d}.png", np.clip(depth + rng.integers(-2, 3, depth.shape), 0, 255)
                    .astype(np.uint8))
        rows.append({"file": f"{i:06d}.png", "case": 1 + i % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    flat = rmse_table(load_depth_samples(tmp_path / "pred", truth_dir=tmp_path / "truth"))
    assert list(flat["case"]) == ["all"]
    from micrometry.report.depth import read_cases

    by_case = rmse_table(load_depth_samples(tmp_path / "pred", truth_dir=tmp_path / "truth",
                                            cases=read_cases(tmp_path / "cases.csv")))
    assert list(by_case["case"]) == ["Case_1", "Case_2", "all"]
    assert list(by_case["images"]) == [2, 2, 4]
    out = tmp_path / "r.html"
    assert run(["report", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"), "--cases",
                str(tmp_path / "cases.csv"), "--out", str(out)]) == 0
    assert "Case_2" in parse(out).cells
