"""Rich results through the official SDK: matplotlib as png + chart, DataFrames as html +
data, and %pip / !pip installing into the kernel's own Python."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from e2b_code_interpreter.charts import BarChart, ChartType, LineChart, PieChart, SuperChart


def test_matplotlib_figure_is_png_and_chart(sbx) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9], label='squares')\n"
        "plt.title('Squares'); plt.xlabel('n'); plt.ylabel('n^2')\n"
        "plt.show()"
    )
    assert execution.error is None
    (result,) = execution.results
    assert not result.is_main_result
    assert base64.b64decode(result.png).startswith(b"\x89PNG\r\n\x1a\n")
    assert isinstance(result.chart, LineChart)
    assert result.chart.title == "Squares"
    assert result.chart.elements[0].label == "squares"
    assert result.chart.elements[0].points == [(1.0, 1.0), (2.0, 4.0), (3.0, 9.0)]


def test_figure_as_last_expression_is_the_main_result(sbx) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 4])\nplt.close(fig)\nfig"
    )
    (result,) = execution.results
    assert result.is_main_result and result.png
    assert isinstance(result.chart, BarChart)
    assert [(e.label, e.value) for e in result.chart.elements] == [("a", 3.0), ("b", 4.0)]


def test_pie_and_superchart(sbx) -> None:
    pie = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.pie([1, 3], labels=['x', 'y'])\nplt.show()"
    ).results[0]
    assert isinstance(pie.chart, PieChart)
    assert [e.label for e in pie.chart.elements] == ["x", "y"]
    both = sbx.run_code(
        "import matplotlib.pyplot as plt\nfig, (a, b) = plt.subplots(1, 2)\n"
        "a.plot([1, 2]); b.scatter([1], [2])\nplt.show()"
    ).results[0]
    assert isinstance(both.chart, SuperChart)
    assert [c.type for c in both.chart.elements] == [ChartType.LINE, ChartType.SCATTER]


def test_dataframe_is_html_and_data(sbx) -> None:
    execution = sbx.run_code(
        "import pandas as pd\npd.DataFrame({'name': ['a', 'b'], 'value': [1.5, 2.5]})"
    )
    (result,) = execution.results
    assert result.is_main_result
    assert "<table" in result.html
    assert result.data == {"name": ["a", "b"], "value": [1.5, 2.5]}
    assert "name" in result.text


def test_plain_values_have_no_data_or_chart(sbx) -> None:
    (result,) = sbx.run_code("[1, 2, 3]").results
    assert result.data is None and result.chart is None and result.text == "[1, 2, 3]"
    assert result.json == [1, 2, 3]  # dicts and lists come as JSON too, as from E2B


def test_json_only_for_json_safe_dicts_and_lists(sbx) -> None:
    assert sbx.run_code("{'a': {'b': [1, None]}}").results[0].json == {"a": {"b": [1, None]}}
    assert sbx.run_code("{'x': object()}").results[0].json is None
    assert sbx.run_code("(1, 2)").results[0].json is None


def _kernel_pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=False, capture_output=True)


@pytest.fixture
def no_tabulate():
    _kernel_pip("uninstall", "-y", "tabulate")
    yield
    _kernel_pip("uninstall", "-y", "tabulate")


@pytest.mark.parametrize("magic", ["%pip", "!pip"])
def test_pip_installs_into_the_kernels_python(sbx, no_tabulate, magic: str) -> None:
    ctx = sbx.create_code_context()
    try:
        missing = sbx.run_code("import tabulate", context=ctx)
        assert missing.error is not None and missing.error.name == "ModuleNotFoundError"
        installed = sbx.run_code(f"{magic} install -q --no-deps tabulate", context=ctx, timeout=300)
        assert installed.error is None, installed.logs
        out = sbx.run_code(
            "import sys, tabulate; tabulate.__file__.startswith(sys.prefix)", context=ctx
        )
        assert out.error is None and out.text == "True"
    finally:
        sbx.remove_code_context(ctx)
