"""``hutch serve``: the api, node and proxy roles composed into one process.

The roles stay independent of each other (they import only ``hutch.shared``); this package
is the only place that knows all three. See docs/serve.md.
"""
