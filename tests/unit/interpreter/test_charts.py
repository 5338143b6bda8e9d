"""matplotlib figures -> chart data, parsed back with the official SDK's chart classes
(hutch.interpreter.kernel_ext._hutch_charts; it runs inside the kernel)."""

from __future__ import annotations

import datetime as dt

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScatterChart,
    SuperChart,
    _deserialize_chart,
)

from hutch.interpreter.kernel_ext import _hutch_charts as charts


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def parsed(fig):
    data = charts.figure_to_chart(fig)
    assert data is not None
    return data, _deserialize_chart(data)


def test_line_chart() -> None:
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [2, 4, 8], label="growth")
    ax.plot([1, 2, 3], [1, 1, 1])
    ax.set_title("Lines")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("size [m]")
    _, chart = parsed(fig)
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert chart.title == "Lines"
    assert (chart.x_label, chart.x_unit, chart.y_unit) == ("time (s)", "s", "m")
    assert [e.label for e in chart.elements] == ["growth", "Line 1"]
    assert chart.elements[0].points == [(1.0, 2.0), (2.0, 4.0), (3.0, 8.0)]
    assert chart.x_scale.value == "linear"
    assert chart.x_ticks and len(chart.x_ticks) == len(chart.x_tick_labels)


def test_line_chart_with_dates_has_a_datetime_scale() -> None:
    fig, ax = plt.subplots()
    days = [dt.datetime(2026, 1, d) for d in (1, 2, 3)]
    ax.plot(days, [1, 2, 3])
    _, chart = parsed(fig)
    assert chart.x_scale.value == "datetime"
    assert chart.elements[0].points[0][0].startswith("2026-01-01")
    assert all(isinstance(t, str) for t in chart.x_ticks)


def test_scatter_chart() -> None:
    fig, ax = plt.subplots()
    ax.scatter([1, 2], [3, 4], label="a")
    ax.scatter([5], [6], label="b")
    _, chart = parsed(fig)
    assert isinstance(chart, ScatterChart)
    assert [(e.label, e.points) for e in chart.elements] == [
        ("a", [(1.0, 3.0), (2.0, 4.0)]),
        ("b", [(5.0, 6.0)]),
    ]


def test_bar_chart_vertical_and_horizontal() -> None:
    fig, ax = plt.subplots()
    ax.bar(["red", "green", "blue"], [3, 5, 1], label="votes")
    ax.set_xlabel("colour")
    ax.set_ylabel("count")
    _, chart = parsed(fig)
    assert isinstance(chart, BarChart)
    assert [(e.label, e.group, e.value) for e in chart.elements] == [
        ("red", "votes", 3.0),
        ("green", "votes", 5.0),
        ("blue", "votes", 1.0),
    ]
    assert (chart.x_label, chart.y_label) == ("colour", "count")

    fig, ax = plt.subplots()
    ax.barh(["a", "b"], [7, 2])
    ax.set_xlabel("amount")
    ax.set_ylabel("item")
    _, chart = parsed(fig)
    assert [(e.label, e.value) for e in chart.elements] == [("a", 7.0), ("b", 2.0)]
    assert chart.elements[0].group == "Group 0"
    assert (chart.x_label, chart.y_label) == ("item", "amount")  # categories first


def test_pie_chart() -> None:
    fig, ax = plt.subplots()
    ax.pie([1, 1, 2], labels=["a", "b", "c"])
    _, chart = parsed(fig)
    assert isinstance(chart, PieChart)
    assert [(e.label, round(e.angle)) for e in chart.elements] == [("a", 90), ("b", 90), ("c", 180)]
    assert all(e.radius == 1.0 for e in chart.elements)


def test_box_and_whisker_chart() -> None:
    fig, ax = plt.subplots()
    ax.boxplot([[1, 2, 3, 4, 5], [2, 4, 6, 8, 30]], patch_artist=True, tick_labels=["A", "B"])
    _, chart = parsed(fig)
    assert isinstance(chart, BoxAndWhiskerChart)
    a, b = chart.elements
    assert (a.label, a.min, a.first_quartile, a.median, a.third_quartile, a.max) == (
        "A",
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
    )
    assert (b.label, b.median, b.outliers) == ("B", 6.0, [30.0])
    assert b.max == 8.0


def test_several_axes_make_a_superchart() -> None:
    fig, (left, right) = plt.subplots(1, 2)
    left.plot([1, 2], [1, 2])
    right.bar(["x", "y"], [1, 2])
    fig.suptitle("Both")
    _, chart = parsed(fig)
    assert isinstance(chart, SuperChart) and chart.title == "Both"
    assert [type(c) for c in chart.elements] == [LineChart, BarChart]


def test_blank_figure_has_no_chart_and_mixed_axes_are_unknown() -> None:
    fig, _ = plt.subplots()
    assert charts.figure_to_chart(fig) is None
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1, 2])
    ax.bar([1], [1])
    data = charts.figure_to_chart(fig)
    assert data["type"] == "unknown"
    assert _deserialize_chart(data).type == ChartType.UNKNOWN


def test_dataframe_to_data_is_json_safe() -> None:
    import pandas as pd  # a pinned test dependency: its absence is an error, not a skip

    frame = pd.DataFrame(
        {
            "n": [1, 2],
            "f": [0.5, float("nan")],
            "when": pd.to_datetime(["2026-01-01", "2026-01-02"]),
        }
    )
    assert charts.dataframe_to_data(frame) == {
        "n": [1, 2],
        "f": [0.5, None],
        "when": ["2026-01-01T00:00:00", "2026-01-02T00:00:00"],
    }
