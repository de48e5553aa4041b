"""One self-contained HTML file: text, tables and matplotlib figures (PNG, base64-embedded).

The report opens offline in any browser and can be mailed as one file: no
scripts, no external style sheets, no linked images. Tables show their first
rows and carry the whole table as a CSV download (a ``data:`` link). The page
opens with the key results and a contents list; each section states the
calibration the numbers rest on.

>>> report = Report("Batch comparison")
>>> report.section("Verdict")
>>> report.text("Aspect ratio rose.")
>>> report.table(df)
>>> report.figure(fig, "Aspect ratio, ECDF")
>>> report.write("report.html")
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are drawn headless, never on screen

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from micrometry.io.atomic import write_text  # noqa: E402

_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { margin-top: 1.8em; color: #345; }
div.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: right; }
th { background: #eef2f5; }
td.text, th.text { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
figcaption { font-size: .9em; color: #555; }
p.meta { color: #777; font-size: .85em; }
p.calibration { color: #456; font-size: .85em; margin-top: -.6em; }
p.note { background: #fff6dd; border-left: 4px solid #e0b040; padding: .4em .7em; }
a.download { font-size: .85em; }
.changed { background: #fde9e4; }
div.key { display: flex; flex-wrap: wrap; gap: .6em; margin: 1em 0; }
div.key div { border: 1px solid #cdd6de; border-radius: 6px; padding: .45em .8em; background: #f6f9fb;
              min-width: 11em; }
div.key b { display: block; font-size: 1.25em; color: #234; }
div.key span { font-size: .8em; color: #555; }
nav.contents { border: 1px solid #ddd; padding: .3em 1em; background: #fafafa; font-size: .92em; }
nav.contents ul { margin: .2em 0; }
"""

# Tables longer than this show their first rows; the full table is always a CSV download.
SHOWN_ROWS = 20
_HEADING = re.compile(r"<h([23])>(.*?)</h\1>", re.S)


class Report:
    """An HTML report built top to bottom.

    Parameters
    ----------
    title : str
        Page title and first heading.
    calibration : str, optional
        What the numbers rest on (pixel size, units), stated under every section heading.
    """

    def __init__(self, title: str, calibration: str = ""):
        self.title = title
        self.calibration = calibration
        self._parts: list[str] = []
        self._key: list[tuple[str, str, str]] = []
        self._csv_count = 0

    def section(self, heading: str) -> Report:
        """Start a section (an ``<h2>`` heading), with the calibration line under it."""
        self._parts.append(f"<h2>{html.escape(heading)}</h2>")
        if self.calibration:
            self._parts.append(f'<p class="calibration">Calibration: {html.escape(self.calibration)}</p>')
        return self

    def key_result(self, label: str, value: str, detail: str = "") -> Report:
        """A headline number for the key-results panel at the top (``value`` carries its unit)."""
        self._key.append((label, value, detail))
        return self

    def note(self, paragraph: str) -> Report:
        """A highlighted paragraph: what the report could not show and why."""
        self._parts.append(f'<p class="note">{html.escape(paragraph)}</p>')
        return self

    def text(self, paragraph: str) -> Report:
        """A paragraph of plain text (escaped)."""
        self._parts.append(f"<p>{html.escape(paragraph)}</p>")
        return self

    def bullets(self, items: list[str]) -> Report:
        """A bulleted list of plain-text items."""
        lis = "".join(f"<li>{html.escape(item)}</li>" for item in items)
        self._parts.append(f"<ul>{lis}</ul>")
        return self

    def table(
        self,
        df: pd.DataFrame,
        float_format: str = "{:.4g}",
        highlight: pd.Series | None = None,
        max_rows: int = SHOWN_ROWS,
        csv_name: str | None = None,
        full: pd.DataFrame | None = None,
    ) -> Report:
        """A table; numbers formatted with ``float_format``, text left-aligned; the whole table as a CSV link.

        Parameters
        ----------
        highlight : Series of bool, optional
            Rows to shade (e.g. descriptors that changed).
        max_rows : int
            Longer tables show their first rows, with a note saying how many more the CSV holds.
        csv_name : str, optional
            File name the CSV download gets (default ``table<N>.csv``).
        full : DataFrame, optional
            What the CSV holds when it differs from what is shown (e.g. every column); default ``df``.
        """
        shown = df.head(max_rows)
        head = "".join(f"<th class='{_css(df[c])}'>{html.escape(str(c))}</th>" for c in shown.columns)
        rows = []
        for i, (_, row) in enumerate(shown.iterrows()):
            cls = " class='changed'" if highlight is not None and bool(highlight.iloc[i]) else ""
            cells = "".join(
                f"<td class='{_css(df[c])}'>{html.escape(_cell(row[c], float_format))}</td>"
                for c in shown.columns
            )
            rows.append(f"<tr{cls}>{cells}</tr>")
        self._parts.append(
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
        full = df if full is None else full
        self._csv_count += 1
        name = csv_name or f"table{self._csv_count}.csv"
        more = f"; the first {max_rows} are shown above" if len(df) > max_rows else ""
        self._parts.append(
            f'<p><a class="download" download="{html.escape(name, quote=True)}" '
            f'href="{csv_data_uri(full)}">Download the full table ({html.escape(name)}, '
            f"{len(full)} rows{more})</a></p>"
        )
        return self

    def figure(
        self, fig: plt.Figure, caption: str = "", dpi: int = 100, colours: int | None = None
    ) -> Report:
        """Embed a matplotlib figure as a base64 PNG and close it.

        ``colours``: store the PNG with a palette of this many colours; for overlays on
        photographs 128 colours keep the look and cut the report by about a third (a particle
        report with two 1280x1024 overlays, measured: 2.6 -> 1.7 MB); default full colour.
        """
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        if colours:
            from PIL import Image

            image = Image.open(buffer).convert("RGB").quantize(colours, dither=Image.Dither.NONE)
            buffer = io.BytesIO()
            image.save(buffer, format="png", optimize=True)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        alt = html.escape(caption or "figure", quote=True)
        self._parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{cap}</figure>')
        return self

    def include(self, other: Report, heading: str | None = None) -> Report:
        """Append another report's content under one heading (its title by default).

        The other report's sections become sub-sections, so one page can hold
        several jobs' reports (``micrometry demo`` does).
        """
        heading = heading or other.title
        self._parts.append(f"<h2>{html.escape(heading)}</h2>")
        self._parts.extend(part.replace("<h2>", "<h3>").replace("</h2>", "</h3>") for part in other._parts)
        self._key.extend((f"{heading}: {label}", value, detail) for label, value, detail in other._key)
        return self

    def render(self) -> str:
        """The whole HTML document: title, key results, contents, then the sections."""
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        body, contents = _anchored("\n".join(self._parts))
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            f'<h1>{html.escape(self.title)}</h1>\n<p class="meta">micrometry report, {stamp}</p>\n'
            f"{self._key_panel()}{contents}\n{body}\n</body></html>\n"
        )

    def _key_panel(self) -> str:
        if not self._key:
            return ""
        cards = "".join(
            f"<div><span>{html.escape(label)}</span><b>{html.escape(value)}</b>"
            f"{f'<span>{html.escape(detail)}</span>' if detail else ''}</div>"
            for label, value, detail in self._key
        )
        return f'<section id="key-results"><h2>Key results</h2><div class="key">{cards}</div></section>\n'

    def write(self, path: str | Path) -> Path:
        """Write the report atomically; returns the path."""
        return write_text(path, self.render())


def _anchored(body: str) -> tuple[str, str]:
    """``body`` with an id on every h2/h3 heading, and a contents list linking to them."""
    entries: list[tuple[int, str, str]] = []

    def number(match: re.Match) -> str:
        anchor = f"s{len(entries) + 1}"
        entries.append((int(match[1]), anchor, match[2]))
        return f'<h{match[1]} id="{anchor}">{match[2]}</h{match[1]}>'

    body = _HEADING.sub(number, body)
    if len(entries) < 2:
        return body, ""
    items, depth = [], 2
    for level, anchor, text in entries:
        if level > depth:
            items.append("<ul>")
        elif level < depth:
            items.append("</ul>")
        depth = level
        items.append(f'<li><a href="#{anchor}">{text}</a></li>')
    items.extend("</ul>" for _ in range(depth - 2))
    return body, f'<nav class="contents"><b>Contents</b><ul>{"".join(items)}</ul></nav>'


def csv_data_uri(df: pd.DataFrame) -> str:
    """A table as a ``data:text/csv`` URI: numbers to 6 significant digits, missing values empty."""
    text = df.to_csv(index=False, float_format="%.6g", na_rep="")
    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def _css(column: pd.Series) -> str:
    return (
        "num" if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) else "text"
    )


def _cell(value, float_format: str) -> str:
    if isinstance(value, float):
        return "" if value != value else float_format.format(value)
    return str(value)
