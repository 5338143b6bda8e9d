# Run by ipykernel at start (--IPKernelApp.exec_files), in the user namespace: every name
# it makes is removed at the end. It registers the e2b/data (pandas DataFrame) and
# e2b/chart (matplotlib figure) display formatters, and caps ipykernel's stream buffers.
# IPython puts this file's directory on sys.path while it runs, so _hutch_charts imports.


def __hutch_setup():
    import json
    import sys

    import _hutch_charts
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter, JSONFormatter
    from traitlets import ObjectName, Unicode

    class DataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

        def __call__(self, obj):
            pandas = sys.modules.get("pandas")  # no DataFrame without pandas imported
            if pandas is not None and isinstance(obj, pandas.DataFrame):
                try:
                    return _hutch_charts.dataframe_to_data(obj)
                except Exception:
                    return None
            return super().__call__(obj)

    class ChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            if "matplotlib" in sys.modules:
                from matplotlib.figure import Figure

                if isinstance(obj, Figure):
                    try:
                        return _hutch_charts.figure_to_chart(obj) or None
                    except Exception:
                        return None
            return super().__call__(obj)

    class PlainJSONFormatter(JSONFormatter):
        # As E2B's: a dict or list result also comes as application/json (Result.json).
        def __call__(self, obj):
            if type(obj) in (dict, list):
                try:
                    return json.loads(json.dumps(obj, allow_nan=False))
                except (TypeError, ValueError):
                    pass
            return super().__call__(obj)

    ip = get_ipython()
    formatters = ip.display_formatter.formatters
    formatters["e2b/data"] = DataFormatter(parent=ip.display_formatter)
    formatters["e2b/chart"] = ChartFormatter(parent=ip.display_formatter)
    formatters["application/json"] = PlainJSONFormatter(parent=ip.display_formatter)
    ip.display_formatter.active_types = [
        *ip.display_formatter.active_types,
        "e2b/data",
        "e2b/chart",
    ]

    def _cap_stream_buffers(limit=1 << 20):
        # ipykernel flushes a stream every 0.2 s whatever its size; a cell printing fast
        # would build one message of hundreds of MB. Flush whenever 1 MiB is buffered.
        try:
            from ipykernel.iostream import OutStream
        except ImportError:
            return
        write = OutStream.write

        def capped_write(self, string):
            n = write(self, string)
            try:
                buffers = self._buffers
                if any(b.tell() >= limit for b in buffers.values()):
                    self.flush()
            except Exception:
                pass
            return n

        OutStream.write = capped_write

    _cap_stream_buffers()


__hutch_setup()
del __hutch_setup
