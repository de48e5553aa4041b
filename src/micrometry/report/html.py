"""One self-contained HTML file: text, tables and matplotlib figures (PNG, base64-embedded).

The report opens offline in any browser and can be mailed as one file: no
scripts, no external style sheets, no linked images.

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
table { border-collapse: collapse; margin: .8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: right; }
th { background: #eef2f5; }
td.text, th.text { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
figcaption { font-size: .9em; color: #555; }
p.meta { color: #777; font-size: .85em; }
.changed { background: #fde9e4; }
"""


class Report:
    """An HTML report built top to bottom.

    Parameters
    ----------
    title : str
        Page title and first heading.
    """

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []

    def section(self, heading: str) -> "Report":
        """Start a section (an ``<h2>`` heading)."""
        self._parts.append(f"<h2>{html.escape(heading)}</h2>")
        return self

    def text(self, paragraph: str) -> "Report":
        """A paragraph of plain text (escaped)."""
        self._parts.append(f"<p>{html.escape(paragraph)}</p>")
        return self

    def bullets(self, items: list[str]) -> "Report":
        """A bulleted list of plain-text items."""
        lis = "".join(f"<li>{html.escape(item)}</li>" for item in items)
        self._parts.append(f"<ul>{lis}</ul>")
        return self

    def table(self, df: pd.DataFrame, float_format: str = "{:.4g}", highlight: pd.Series | None = None,
              max_rows: int = 200) -> "Report":
        """A table; numbers formatted with ``float_format``, text left-aligned.

        Parameters
        ----------
        highlight : Series of bool, optional
            Rows to shade (e.g. descriptors that changed).
        max_rows : int
            Longer tables are cut, with a note saying how many rows were left out.
        """
        shown = df.head(max_rows)
        head = "".join(f"<th class='{_css(df[c])}'>{html.escape(str(c))}</th>" for c in shown.columns)
        rows = []
        for i, (_, row) in enumerate(shown.iterrows()):
            cls = " class='changed'" if highlight is not None and bool(highlight.iloc[i]) else ""
            cells = "".join(f"<td class='{_css(df[c])}'>{html.escape(_cell(row[c], float_format))}</td>"
                            for c in shown.columns)
            rows.append(f"<tr{cls}>{cells}</tr>")
        self._parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        if len(df) > max_rows:
            self.text(f"({len(df) - max_rows} more rows not shown)")
        return self

    def figure(self, fig: plt.Figure, caption: str = "", dpi: int = 100) -> "Report":
        """Embed a matplotlib figure as a base64 PNG and close it."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        alt = html.escape(caption or "figure", quote=True)
        self._parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{alt}\">{cap}</figure>")
        return self

    def include(self, other: "Report", heading: str | None = None) -> "Report":
        """Append another report's content under one heading (its title by default).

        The other report's sections become sub-sections, so one page can hold
        several jobs' reports (``micrometry demo`` does).
        """
        self._parts.append(f"<h2>{html.escape(heading or other.title)}</h2>")
        self._parts.extend(part.replace("<h2>", "<h3>").replace("</h2>", "</h3>") for part in other._parts)
        return self

    def render(self) -> str:
        """The whole HTML document."""
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        body = "\n".join(self._parts)
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n<p class=\"meta\">micrometry report, {stamp}</p>\n"
                f"{body}\n</body></html>\n")

    def write(self, path: str | Path) -> Path:
        """Write the report atomically; returns the path."""
        return write_text(path, self.render())


def _css(column: pd.Series) -> str:
    return "num" if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) else "text"


def _cell(value, float_format: str) -> str:
    if isinstance(value, float):
        return "" if value != value else float_format.format(value)
    return str(value)
