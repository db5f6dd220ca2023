"""The study's Excel ledger (``<study>/ledger.xlsx``): every training, for people and for resume.

The ledger is written for a person opening it in Excel (bold frozen header,
autofilter, rounded display) but stores every number at full precision, so
``read_ledger`` can rebuild exactly the ``SeedResult`` objects that were
written. The workbook is built in memory and stored with one conditional
``put_bytes`` so concurrent writers cannot silently overwrite each other.

Sheets: ``Trials`` (one row per training), ``Configurations`` (one row per
configuration, ranked), ``Best`` (the final group) and ``Study`` (the spec as run).
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from hpo.contract import SeedResult
from hpo.store import Store, StoreError
from hpo.summary import ConfigSummary, ranked, summarise

if TYPE_CHECKING:
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

HYPERPARAMS = ("hidden_layers", "neurons", "activation", "learning_rate", "batch_size", "optimizer")

#: Trials columns before and after the per-label ``<label>_mae`` / ``<label>_pct`` pairs.
TRIALS_HEAD = ("trial", "stage", "parent", "config_key", *HYPERPARAMS, "seed", "mae")
TRIALS_TAIL = ("runtime_s", "fit_s", "epochs", "status", "error", "artifacts")
#: Appended after the documented columns: ``SeedResult`` fields the documented
#: layout has no place for, kept so the round trip through the ledger is exact.
TRIALS_EXTRA = ("rows_dropped", "study", "finished_at")

SHEETS = ("Trials", "Configurations", "Best", "Study")
NO_BEST_NOTE = "No final group yet: it is written when the study finishes."

#: Excel's limit on the characters of one cell.
_CELL_LIMIT = 32_767
_TRUNCATED = "[truncated] …"
_MAX_WIDTH = 50
_MIN_WIDTH = 6
_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", start_color="DDEBF7", end_color="DDEBF7")
_HEADER_ALIGN = Alignment(vertical="center")

# Characters XML 1.0 cannot carry, plus ``\r`` (parsers turn it into ``\n``) and
# text already looking like an escape: written the OOXML way (``_xHHHH_``, with
# a literal ``_x....`` guarded as ``_x005F_x....``) so Excel shows them and
# ``read_ledger`` restores the original text exactly.
_XML_UNSAFE = re.compile(
    "_x[0-9A-Fa-f]{4}_|[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ud800-\udfff\ufffe\uffff]"
)
_XML_ESCAPED = re.compile("_x([0-9A-Fa-f]{4})_")


# --------------------------------------------------------------------------- frames


def _neurons_text(value: Any) -> Any:
    """Lists as ``[64, 32]`` so the cell is readable and ``json.loads`` brings it back."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return value


def _hyperparams(config: Mapping[str, Any]) -> dict[str, Any]:
    row = {name: config.get(name) for name in HYPERPARAMS}
    row["neurons"] = _neurons_text(row["neurons"])
    return row


def trials_columns(labels: list[str]) -> list[str]:
    """The ``Trials`` header for ``labels``."""
    pairs = [name for label in labels for name in (f"{label}_mae", f"{label}_pct")]
    return [*TRIALS_HEAD, *pairs, *TRIALS_TAIL, *TRIALS_EXTRA]


def trials_frame(results: list[SeedResult], labels: list[str]) -> pd.DataFrame:
    """Sheet ``Trials``: one row per training, sorted by (trial, seed).

    Columns follow ``trials_columns``; per-label scores of labels not in
    ``labels`` are not written.
    """
    rows = []
    for r in sorted(results, key=lambda r: (r.trial, r.seed)):
        row: dict[str, Any] = {
            "trial": r.trial,
            "stage": r.stage,
            "parent": r.parent,
            "config_key": r.config_key,
            **_hyperparams(r.config),
            "seed": r.seed,
            "mae": r.mae,
        }
        for label in labels:
            scores = r.per_label.get(label) or {}
            row[f"{label}_mae"] = scores.get("mae")
            row[f"{label}_pct"] = scores.get("pct")
        row.update(
            runtime_s=r.runtime_s,
            fit_s=r.fit_s,
            epochs=r.epochs_run,
            status=r.status,
            error=r.error,
            artifacts=r.artifacts,
            rows_dropped=r.rows_dropped,
            study=r.study,
            finished_at=r.finished_at,
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=trials_columns(labels))


def configurations_columns(labels: list[str]) -> list[str]:
    """The ``Configurations`` header for ``labels``."""
    per_label = [n for label in labels for n in (f"{label}_mae_mean", f"{label}_pct_mean")]
    return [
        "rank",
        "trial",
        "stage",
        "parent",
        "config_key",
        *HYPERPARAMS,
        "mae_mean",
        "mae_std",
        "mae_min",
        "mae_max",
        "seeds",
        "failed",
        *per_label,
    ]


def configurations_frame(results: list[SeedResult], labels: list[str]) -> pd.DataFrame:
    """Sheet ``Configurations``: one row per configuration, best mean MAE first.

    ``seeds`` counts successful seeds, ``failed`` the failed ones. Configurations
    without a successful seed have no rank and come last, by trial id.
    """
    summaries = summarise(results)
    ordered = ranked(summaries.values())
    unranked = sorted((s for s in summaries.values() if s.mean is None), key=lambda s: s.trial)

    def row(rank: int | None, s: ConfigSummary) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rank": rank,
            "trial": s.trial,
            "stage": s.stage,
            "parent": s.parent,
            "config_key": s.config_key,
            **_hyperparams(s.config),
            "mae_mean": s.mean,
            "mae_std": s.std,
            "mae_min": s.min,
            "mae_max": s.max,
            "seeds": s.n,
            "failed": s.failed,
        }
        for label in labels:
            means = s.label_mean(label)
            out[f"{label}_mae_mean"] = means[0] if means else None
            out[f"{label}_pct_mean"] = means[1] if means else None
        return out

    rows = [row(i, s) for i, s in enumerate(ordered, 1)] + [row(None, s) for s in unranked]
    frame = pd.DataFrame(rows, columns=configurations_columns(labels))
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def study_frame(study: Mapping[str, Any]) -> pd.DataFrame:
    """Sheet ``Study``: the spec flattened to ``field`` / ``value`` rows, lists as JSON."""
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        elif isinstance(value, (Mapping, list, tuple)):
            rows.append((prefix, json.dumps(value, default=str)))
        else:
            rows.append((prefix, value))

    walk("", study)
    return pd.DataFrame(rows, columns=["field", "value"], dtype=object)


# --------------------------------------------------------------------------- writing


def number_format(column: str) -> str | None:
    """Display format by column name; values themselves keep full precision."""
    if column == "learning_rate":
        return "0.00E+00"
    if column in ("runtime_s", "fit_s") or column.endswith(("_pct", "_pct_mean")):
        return "0.00"
    if column == "mae" or column.startswith("mae_") or column.endswith(("_mae", "_mae_mean")):
        return "0.0000"
    return None


def _escape(text: str) -> str:
    if _XML_UNSAFE.search(text) is None:
        return text

    def sub(match: re.Match[str]) -> str:
        found = match.group()
        return "_x005F_" + found[1:] if len(found) > 1 else f"_x{ord(found):04X}_"

    return _XML_UNSAFE.sub(sub, text)


def _unescape(text: str) -> str:
    if "_x" not in text:
        return text
    return _XML_ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)


def _cell_text(text: str) -> str:
    """Escaped text within Excel's cell limit, keeping the tail (where a traceback ends)."""
    escaped = _escape(text)
    keep = _CELL_LIMIT - len(_TRUNCATED)
    while len(escaped) > _CELL_LIMIT:
        escaped = _TRUNCATED + _escape(text[-keep:])
        keep //= 2
    return escaped


def _text_xml(ref: str, text: str) -> str:
    text = _cell_text(text)
    space = ' xml:space="preserve"' if text != text.strip() else ""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<c r="{ref}" t="inlineStr"><is><t{space}>{text}</t></is></c>'


def _cell_xml(ref: str, style: str, value: Any) -> str:
    """One ``<c>`` element; "" leaves the cell out (None, NaN, empty text).

    Floats go out as ``repr``: the shortest text that parses back to the same
    double (openpyxl's own writer keeps only 16 significant digits).
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f'<c r="{ref}"{style}><v>{value!r}</v></c>' if math.isfinite(value) else ""
    if isinstance(value, bool):
        return f'<c r="{ref}"{style} t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int):
        return f'<c r="{ref}"{style}><v>{value}</v></c>'
    if not isinstance(value, str):
        value = json.dumps(value, default=str)
    return _text_xml(ref, value) if value else ""


def _column_xml(values: list[Any], dtype: Any, letter: str, style: str) -> list[str]:
    """Cells of one column from row 2 down; NumPy float/int columns skip the generic path."""
    kind = dtype.kind if isinstance(dtype, np.dtype) else None
    if kind == "f":
        return [
            f'<c r="{letter}{row}"{style}><v>{v!r}</v></c>' if math.isfinite(v) else ""
            for row, v in enumerate(values, 2)
        ]
    if kind in ("i", "u"):
        return [f'<c r="{letter}{row}"{style}><v>{v}</v></c>' for row, v in enumerate(values, 2)]
    return [_cell_xml(f"{letter}{row}", style, v) for row, v in enumerate(values, 2)]


def _display_width(column: str, values: pd.Series, fmt: str | None) -> float:
    """Column width from the longest shown value (as formatted), capped for readability."""
    width = len(column) + 3  # room for the autofilter button
    present = values.dropna()
    if len(present):
        if fmt is not None and pd.api.types.is_numeric_dtype(present):
            biggest = float(present.abs().max())
            if fmt == "0.00E+00":
                shown = 9
            else:
                decimals = len(fmt.split(".")[1]) if "." in fmt else 0
                shown = len(f"{biggest:.{decimals}f}") + int(bool((present < 0).any()))
        else:
            shown = int(present.map(lambda v: len(str(v))).max())
        width = max(width, shown + 2)
    return float(min(max(width, _MIN_WIDTH), _MAX_WIDTH))


def _header(ws: WriteOnlyWorksheet, columns: list[str]) -> list[WriteOnlyCell]:
    cells = []
    for name in columns:
        cell = WriteOnlyCell(ws, value=_cell_text(name))
        cell.data_type = "s"
        cell.font = _HEADER_FONT
        cell.fill = _HEADER_FILL
        cell.alignment = _HEADER_ALIGN
        cells.append(cell)
    return cells


def _layout_sheet(ws: WriteOnlyWorksheet, frame: pd.DataFrame) -> str:
    """Lay out ``ws`` for ``frame`` with openpyxl and return the XML of its data rows.

    openpyxl writes the header, widths, frozen pane, autofilter and styles; the
    data rows are serialised here (``_splice_rows`` puts them in after saving)
    because openpyxl's per-cell writer takes seconds for ten thousand rows.
    """
    columns = [str(c) for c in frame.columns]
    styles = []
    for idx, name in enumerate(columns, 1):
        fmt = number_format(name)
        dim = ws.column_dimensions[get_column_letter(idx)]
        dim.width = _display_width(name, frame.iloc[:, idx - 1], fmt)
        style = ""
        if fmt is not None:
            dim.number_format = fmt  # for cells a person adds later
            probe = WriteOnlyCell(ws)
            probe.number_format = fmt
            style = f' s="{probe.style_id}"'  # registers the format in the workbook's styles
        styles.append(style)
    ws.freeze_panes = "A2"
    if columns:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{len(frame) + 1}"
    ws.append(_header(ws, columns))

    cells = [
        _column_xml(frame.iloc[:, i].tolist(), frame.dtypes.iloc[i], get_column_letter(i + 1), s)
        for i, s in enumerate(styles)
    ]
    rows = zip(*cells, strict=True)
    return "".join(f'<row r="{row}">{"".join(values)}</row>' for row, values in enumerate(rows, 2))


def _splice_rows(package: bytes, rows: dict[str, tuple[str, str]]) -> bytes:
    """Insert each sheet's data rows after its header row in the saved package.

    Also states the sheet's extent (``<dimension>``), which the write-only
    writer leaves out and without which readers scan the whole sheet for it.
    """
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(package)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            data = src.read(info)
            if info.filename in rows:
                extent, extra = rows[info.filename]
                text = data.decode("utf-8")
                at = text.index("</sheetData>")
                text = text[:at] + extra + text[at:]
                if "<dimension" not in text:
                    dimension = f'<dimension ref="{extent}" />'
                    text = text.replace("<sheetViews>", dimension + "<sheetViews>", 1)
                data = text.encode("utf-8")
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    return out.getvalue()


def _workbook_bytes(
    trials: pd.DataFrame,
    configurations: pd.DataFrame,
    best: pd.DataFrame | None,
    study: pd.DataFrame,
) -> bytes:
    wb = Workbook(write_only=True)
    sheets = dict(zip(SHEETS, (trials, configurations, best, study), strict=True))
    rows: dict[WriteOnlyWorksheet, tuple[str, str]] = {}
    for title, frame in sheets.items():
        ws = wb.create_sheet(title)
        if frame is None:
            note = WriteOnlyCell(ws, value=NO_BEST_NOTE)
            note.font = Font(italic=True)
            ws.column_dimensions["A"].width = len(NO_BEST_NOTE) + 2
            ws.append([note])
        else:
            last = f"{get_column_letter(max(len(frame.columns), 1))}{len(frame) + 1}"
            rows[ws] = (f"A1:{last}", _layout_sheet(ws, frame))
    buffer = io.BytesIO()
    wb.save(buffer)
    # Sheet part names are only known once saved.
    return _splice_rows(buffer.getvalue(), {ws.path.lstrip("/"): xml for ws, xml in rows.items()})


def write_ledger(
    store: Store,
    key: str,
    results: list[SeedResult],
    labels: list[str],
    best: pd.DataFrame | None,
    study: dict[str, Any],
    *,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> str:
    """Write the whole ledger with one conditional ``put_bytes``; returns its ETag.

    Pass the ETag of the ledger last read as ``if_match`` (or ``if_none_match``
    for the first write) so a concurrent writer makes this raise
    ``PreconditionFailed`` instead of being overwritten.
    """
    data = _workbook_bytes(
        trials_frame(results, labels),
        configurations_frame(results, labels),
        best,
        study_frame(study),
    )
    return store.put_bytes(key, data, if_match=if_match, if_none_match=if_none_match)


# --------------------------------------------------------------------------- reading


def _labels_from_header(header: list[str]) -> list[str]:
    """Labels from the ``<label>_mae`` / ``<label>_pct`` pairs between ``mae`` and ``runtime_s``."""
    try:
        between = header[header.index("mae") + 1 : header.index("runtime_s")]
    except ValueError as exc:
        raise ValueError("Trials sheet lacks the 'mae' or 'runtime_s' column") from exc
    if len(between) % 2:
        raise ValueError(f"Trials sheet: per-label columns do not pair up: {between}")
    labels = []
    for mae_col, pct_col in zip(between[::2], between[1::2], strict=True):
        label = mae_col.removesuffix("_mae")
        if not mae_col.endswith("_mae") or pct_col != f"{label}_pct":
            raise ValueError(f"Trials sheet: expected <label>_mae, <label>_pct; got {between}")
        labels.append(label)
    return labels


def _clean(value: Any) -> Any:
    """Empty and NaN cells are None; text is unescaped."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return _unescape(value)
    return value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


def _rows(data: bytes, sheet: str) -> Iterator[list[Any]]:
    wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        if sheet not in wb.sheetnames:
            raise ValueError(f"ledger has no {sheet!r} sheet (sheets: {wb.sheetnames})")
        for row in wb[sheet].iter_rows(values_only=True):
            yield [_clean(v) for v in row]
    finally:
        wb.close()


def _config(get: Callable[[str], Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name in HYPERPARAMS:
        value = get(name)
        if value is None:
            continue
        if name == "neurons" and isinstance(value, str):
            value = json.loads(value)
        config[name] = value
    return config


def read_ledger(store: Store, key: str) -> list[SeedResult]:
    """Rebuild the ``SeedResult`` of every ``Trials`` row; [] if the ledger does not exist yet.

    Rows come back in the sheet's (trial, seed) order.
    """
    try:
        data = store.get_bytes(key)
    except StoreError:
        if not store.exists(key):
            return []
        raise
    rows = _rows(data, "Trials")
    header = [str(h) if h is not None else "" for h in next(rows, [])]
    if not header:
        return []
    labels = _labels_from_header(header)
    index = {name: i for i, name in enumerate(header)}
    width = len(header)
    results = []
    for raw in rows:
        if all(v is None for v in raw):
            continue
        row = raw + [None] * (width - len(raw))

        def get(name: str, row: list[Any] = row) -> Any:
            i = index.get(name)
            return None if i is None else row[i]

        per_label: dict[str, dict[str, float]] = {}
        for label in labels:
            mae, pct = get(f"{label}_mae"), get(f"{label}_pct")
            if mae is not None or pct is not None:
                per_label[label] = {"mae": _float(mae), "pct": _float(pct)}  # type: ignore[dict-item]
        results.append(
            SeedResult(
                study=get("study") or "",
                trial=str(get("trial")),
                stage=get("stage"),
                parent=get("parent"),
                config=_config(get),
                config_key=str(get("config_key")),
                seed=_int(get("seed")),
                status=get("status"),
                mae=_float(get("mae")),
                per_label=per_label,
                runtime_s=_float(get("runtime_s")) or 0.0,
                fit_s=_float(get("fit_s")) or 0.0,
                epochs_run=_int(get("epochs")),
                rows_dropped=_int(get("rows_dropped")),
                error=get("error"),
                artifacts=get("artifacts"),
                finished_at=_float(get("finished_at")) or 0.0,
            )
        )
    return results
