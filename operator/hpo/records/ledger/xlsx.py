"""The ledger's workbook format (OOXML), both ways: frames in, cell values out.

Written for a person opening it in Excel (bold frozen header, autofilter,
rounded display) but storing every number at full precision. openpyxl lays
out each sheet; the data rows are serialised here and spliced into the saved
package, because openpyxl's per-cell writer takes seconds for ten thousand
rows. Text Excel cannot carry is escaped the OOXML way and restored on read.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from hpo.study.contract import LEARNING_RATE

if TYPE_CHECKING:
    from openpyxl.cell.cell import Cell
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet
    from openpyxl.worksheet.worksheet import Worksheet

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


def number_format(column: str) -> str | None:
    """Display format by column name; values themselves keep full precision."""
    if column == LEARNING_RATE:
        return "0.0#####"  # 0.00577, not 5.77E-03
    if column == "finished":
        return "yyyy-mm-dd hh:mm:ss"
    if column in ("runtime_s", "fit_s") or column.endswith(("_pct", "_pct_mean")):
        return "0.00"
    if column in ("test_mae", "val_mae") or column.startswith(("test_mae_", "val_mae_")):
        return "0.0000"
    if column.endswith(("_mae", "_mae_mean")):
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
            if fmt.startswith("yyyy"):
                shown = len(fmt)
            else:
                decimals = len(fmt.split(".")[1]) if "." in fmt else 0
                shown = len(f"{biggest:.{decimals}f}") + int(bool((present < 0).any()))
        else:
            shown = int(present.map(lambda v: len(str(v))).max())
        width = max(width, shown + 2)
    return float(min(max(width, _MIN_WIDTH), _MAX_WIDTH))


def _header(ws: WriteOnlyWorksheet, columns: list[str]) -> list[Cell]:
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
    # A write-only sheet gets these from ``Worksheet._setup`` too; its stubs do not say so.
    sheet = cast("Worksheet", ws)
    styles = []
    for idx, name in enumerate(columns, 1):
        fmt = number_format(name)
        dim = sheet.column_dimensions[get_column_letter(idx)]
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
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{len(frame) + 1}"
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


def workbook_bytes(
    trials: pd.DataFrame,
    configurations: pd.DataFrame,
    best: pd.DataFrame | None,
    study: pd.DataFrame,
) -> bytes:
    """The whole workbook, sheets in ``SHEETS`` order; no ``best`` yet leaves a note instead."""
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


def _clean(value: Any) -> Any:
    """Empty and NaN cells are None; text is unescaped."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return _unescape(value)
    return value


def sheet_rows(data: bytes, sheet: str) -> Iterator[list[Any]]:
    """The cell values of ``sheet``, row by row; empty and NaN cells are None, text unescaped."""
    wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        if sheet not in wb.sheetnames:
            raise ValueError(f"ledger has no {sheet!r} sheet (sheets: {wb.sheetnames})")
        for row in wb[sheet].iter_rows(values_only=True):
            yield [_clean(v) for v in row]
    finally:
        wb.close()
