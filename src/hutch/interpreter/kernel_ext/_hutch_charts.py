"""Inside the kernel: matplotlib figures and pandas DataFrames as the data E2B's SDKs
parse (``Result.chart``, ``Result.data``). hutch's own reading of the figure's artists.

Chart kinds: ``line`` (only lines), ``scatter`` (only point collections), ``bar``
(bar containers), ``pie`` (wedges), ``box_and_whisker`` (boxplot with
``patch_artist=True``), ``superchart`` (several axes), else ``unknown`` with the title.
Imports matplotlib only when called (the formatter calls it for figures only).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

_UNIT = re.compile(r"\s\((.*?)\)|\[(.*?)\]")


def _num(value: Any) -> Any:
    """A JSON-safe scalar: numpy numbers to float/int, dates to ISO, NaN to None."""
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    kind = type(value).__name__
    if kind == "datetime64":
        return str(value.astype("datetime64[s]"))
    if kind == "Timestamp":
        return value.isoformat()
    if isinstance(value, str):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(f) or math.isinf(f):
        return None
    return f


def _text(value: str) -> str | None:
    return value or None


def _unit(label: str | None) -> str | None:
    if not label:
        return None
    m = _UNIT.search(label)
    return (m.group(1) or m.group(2)) if m else None


def _converter(axis: Any) -> Any:
    get = getattr(axis, "get_converter", None)
    return get() if get is not None else getattr(axis, "converter", None)


def _axis_kind(axis: Any, scale: str) -> str:
    conv = type(_converter(axis)).__module__ or ""
    if conv.startswith("matplotlib.dates"):
        return "datetime"
    if conv.startswith("matplotlib.category"):
        return "categorical"
    return scale


def _ticks(axis: Any, kind: str) -> list[Any]:
    ticks = list(axis.get_ticklocs())
    if kind == "datetime":
        from matplotlib.dates import num2date

        return [num2date(t).isoformat() for t in ticks]
    return [_num(t) for t in ticks]


def _base(ax: Any, kind: str) -> dict[str, Any]:
    return {"type": kind, "title": _text(ax.get_title()), "elements": []}


def _two_d(ax: Any, kind: str) -> dict[str, Any]:
    chart = _base(ax, kind)
    x_label, y_label = _text(ax.get_xlabel()), _text(ax.get_ylabel())
    chart.update(x_label=x_label, y_label=y_label, x_unit=_unit(x_label), y_unit=_unit(y_label))
    return chart


def _swap_axes(chart: dict[str, Any]) -> None:
    chart["x_label"], chart["y_label"] = chart["y_label"], chart["x_label"]
    chart["x_unit"], chart["y_unit"] = chart["y_unit"], chart["x_unit"]


def _point_chart(ax: Any, kind: str) -> dict[str, Any]:
    chart = _two_d(ax, kind)
    for name, axis, scale in (("x", ax.xaxis, ax.get_xscale()), ("y", ax.yaxis, ax.get_yscale())):
        axis_kind = _axis_kind(axis, scale)
        chart[f"{name}_scale"] = axis_kind
        chart[f"{name}_ticks"] = _ticks(axis, axis_kind)
        chart[f"{name}_tick_labels"] = [t.get_text() for t in axis.get_ticklabels()]
    return chart


def _point_value(value: Any, axis_kind: str) -> Any:
    if axis_kind == "datetime" and isinstance(value, (int, float)) and not isinstance(value, bool):
        from matplotlib.dates import num2date

        return num2date(value).isoformat()
    return _num(value)


def _line(ax: Any) -> dict[str, Any]:
    chart = _point_chart(ax, "line")
    for i, line in enumerate(ax.get_lines()):
        label = line.get_label()
        if label.startswith("_"):
            label = f"Line {i}"
        points = [
            [_point_value(x, chart["x_scale"]), _point_value(y, chart["y_scale"])]
            for x, y in zip(line.get_xdata(), line.get_ydata(), strict=False)
        ]
        chart["elements"].append({"label": label, "points": points})
    return chart


def _scatter(ax: Any) -> dict[str, Any]:
    chart = _point_chart(ax, "scatter")
    for i, coll in enumerate(ax.collections):
        label = coll.get_label()
        if label.startswith("_"):
            label = f"Series {i}"
        points = [
            [_point_value(x, chart["x_scale"]), _point_value(y, chart["y_scale"])]
            for x, y in coll.get_offsets()
        ]
        chart["elements"].append({"label": label, "points": points})
    return chart


def _tick_label_at(axis: Any, position: float) -> str:
    locs = list(axis.get_ticklocs())
    labels = [t.get_text() for t in axis.get_ticklabels()]
    if locs and len(locs) == len(labels):
        i = min(range(len(locs)), key=lambda k: abs(locs[k] - position))
        if abs(locs[i] - position) < 0.5 and labels[i]:
            return labels[i]
    return str(_num(position))


def _bar(ax: Any) -> dict[str, Any]:
    chart = _two_d(ax, "bar")
    horizontal = False
    for i, container in enumerate(ax.containers):
        rects = list(getattr(container, "patches", container))
        if not rects:
            continue
        group = container.get_label() or ""
        if group.startswith("_"):
            group = f"Group {i}"
        orientation = getattr(container, "orientation", None)
        horizontal = (
            orientation == "horizontal"
            if orientation
            else (len({round(r.get_height(), 9) for r in rects}) == 1 and len(rects) > 1)
        )
        for rect in rects:
            if horizontal:
                label = _tick_label_at(ax.yaxis, rect.get_y() + rect.get_height() / 2)
                value = rect.get_width()
            else:
                label = _tick_label_at(ax.xaxis, rect.get_x() + rect.get_width() / 2)
                value = rect.get_height()
            chart["elements"].append({"label": label, "group": group, "value": _num(value)})
    if horizontal:
        _swap_axes(chart)  # x_label names the categories, as for vertical bars
    return chart


def _pie(ax: Any) -> dict[str, Any]:
    chart = _base(ax, "pie")
    for wedge in ax.patches:
        angle = abs(float(wedge.theta2) - float(wedge.theta1))
        chart["elements"].append(
            {"label": wedge.get_label(), "angle": round(angle, 6), "radius": _num(wedge.r)}
        )
    return chart


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _box(ax: Any) -> dict[str, Any]:
    chart = _two_d(ax, "box_and_whisker")
    boxes = []
    for patch in ax.patches:
        v = patch.get_path().vertices
        boxes.append(
            (float(v[:, 0].min()), float(v[:, 0].max()), float(v[:, 1].min()), float(v[:, 1].max()))
        )
    if not boxes:
        return chart
    # Vertical boxes (the default) have equal widths along x and their data along y.
    vertical = len({round(b[1] - b[0], 9) for b in boxes}) == 1
    cat_axis = ax.xaxis if vertical else ax.yaxis
    if not vertical:
        _swap_axes(chart)
    elements = []
    for x0, x1, y0, y1 in boxes:
        lo, hi, q1, q3 = (x0, x1, y0, y1) if vertical else (y0, y1, x0, x1)
        box = {
            "label": _tick_label_at(cat_axis, (lo + hi) / 2),
            "min": q1,
            "first_quartile": q1,
            "median": (q1 + q3) / 2,
            "third_quartile": q3,
            "max": q3,
            "outliers": [],
        }
        for line in ax.get_lines():
            xs, ys = [float(a) for a in line.get_xdata()], [float(a) for a in line.get_ydata()]
            pos, val = (xs, ys) if vertical else (ys, xs)
            if not pos or not all(lo - 1e-9 <= p <= hi + 1e-9 for p in pos):
                continue
            if line.get_linestyle() in ("None", "", " ", "none"):
                box["outliers"].extend(_num(v) for v in val)
            elif len(val) == 2 and _close(val[0], val[1]) and q1 - 1e-9 <= val[0] <= q3 + 1e-9:
                if (
                    len(pos) == 2
                    and not _close(pos[0], pos[1])
                    and _close(abs(pos[1] - pos[0]), hi - lo)
                ):
                    box["median"] = val[0]
            elif len(val) == 2 and len(pos) == 2 and _close(pos[0], pos[1]):
                low, high = min(val), max(val)
                if _close(high, q1):
                    box["min"] = low
                elif _close(low, q3):
                    box["max"] = high
        elements.append(
            {k: _num(v) if k not in ("label", "outliers") else v for k, v in box.items()}
        )
    chart["elements"] = elements
    return chart


def axes_kind(ax: Any) -> str:
    from matplotlib.collections import PathCollection
    from matplotlib.patches import PathPatch, Rectangle, Wedge

    lines, colls, patches = list(ax.get_lines()), list(ax.collections), list(ax.patches)
    if lines and not colls and not patches:
        return "line"
    if patches and not colls and all(isinstance(p, PathPatch) for p in patches):
        return "box_and_whisker"
    if lines:  # lines beside other artists: only a boxplot mixes them
        return "unknown"
    if colls and not patches and all(isinstance(c, PathCollection) for c in colls):
        return "scatter"
    if patches and not colls and all(isinstance(p, Wedge) for p in patches):
        return "pie"
    if patches and not colls and ax.containers and all(isinstance(p, Rectangle) for p in patches):
        return "bar"
    return "unknown"


def axes_to_chart(ax: Any) -> dict[str, Any]:
    kind = axes_kind(ax)
    build = {"line": _line, "scatter": _scatter, "bar": _bar, "pie": _pie, "box_and_whisker": _box}
    if kind in build:
        return build[kind](ax)
    return _base(ax, "unknown")


def figure_to_chart(figure: Any) -> dict[str, Any] | None:
    axes = list(figure.get_axes())
    if not axes or not any(ax.has_data() for ax in axes):
        return None
    if len(axes) == 1:
        return axes_to_chart(axes[0])
    title = figure.get_suptitle() if hasattr(figure, "get_suptitle") else ""
    return {
        "type": "superchart",
        "title": _text(title),
        "elements": [axes_to_chart(ax) for ax in axes],
    }


def dataframe_to_data(frame: Any) -> dict[str, Any]:
    """Columns as lists (E2B's ``to_dict(orient="list")``), JSON-safe."""
    out: dict[str, Any] = {}
    for column, values in frame.to_dict(orient="list").items():
        out[str(column)] = [
            v if isinstance(v, (bool, int, str)) or v is None else _num(v) for v in values
        ]
    return out
