"""``micrometry demo --quick``: every step of the tour runs and leaves its outputs."""

from html.parser import HTMLParser

import pandas as pd
import pytest

from micrometry.cli import run


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.headings = [], []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))
        self._in_heading = tag in ("h2", "h3")

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run(["demo", "--out", out, "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "depth RMSE" in printed and "particle segm AP" in printed and "report.html" in printed

    # every stage left what a user would open
    assert len(list((out / "predictions/depth-ae").glob("*.png"))) == 12
    metrology = pd.read_csv(out / "depth-metrology.csv")
    assert len(metrology) == 12 and {"depth_nm", "top_cd_x_nm", "sidewall_angle_deg"} <= set(
        metrology.columns
    )
    assert (out / "particles-measure.csv").is_file() and (out / "compare/compare.csv").is_file()

    page = _Images()
    page.feed((out / "report.html").read_text())
    assert len([s for s in page.sources if s.startswith("data:image/png;base64,")]) >= 6
    joined = " ".join(page.headings)
    assert "Depth from SEM" in joined and "batch A versus batch B" in joined
