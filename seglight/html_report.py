"""test_report.html: a test run's report as one self-contained page (pictures embedded as PNG
data URIs, no script, no external file), which opens in a browser from disk or a mail."""

import base64
import html
import io

from PIL import Image

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd}dt{font-weight:600}dd{margin:0 0 .4em 1em}"""


def data_uri(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _number(value) -> str:
    if value is None:
        return "–"  # undefined (NaN): no pixel of the class in truth or prediction
    if isinstance(value, float):
        return f"{100 * value:.2f}" if abs(value) <= 1 else f"{value:.4g}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_number(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def build_html(report: dict, columns: tuple[str, ...], pictures: dict[str, Image.Image]) -> str:
    """The page for `report` (build_report's dict plus task, checkpoint, protocol, images):
    the protocol, the summary (in %), the per-class `columns`, then `pictures` by title."""
    what = "label" if report.get("task") == "multilabel" else "class"
    facts = {k: report.get(k) for k in ("task", "checkpoint", "protocol", "threshold")}
    summary_keys = [k for k, v in report.items() if isinstance(v, float | type(None))
                    and k not in facts]  # fmt: skip
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>seglight test report</title>",
        f"<style>{STYLE}</style></head><body><h1>seglight test report</h1><dl>",
        *(f"<dt>{k}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items() if v is not None),
        "</dl><h2>Summary (%)</h2>",
        _table(["metric", "value"], [[k, report[k]] for k in summary_keys]),
        f"<h2>Per {what} (%; pixels: ground-truth pixels)</h2>",
        _table([what, *columns, "pixels"],
               [[r["name"], *(r[c] for c in columns), r["pixels"]] for r in report["classes"]]),
    ]  # fmt: skip
    images = report.get("images")
    if images:
        parts.append(f"<h2>Lowest-scoring images ({html.escape(images['metric'])}, %)</h2>")
        parts.append(_table(["image", images["metric"]],
                            [[w["name"], w["score"]] for w in images["worst"]]))  # fmt: skip
    for title, picture in pictures.items():
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                     f"src='{data_uri(picture)}'>")  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)
