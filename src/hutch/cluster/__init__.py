"""Roles as processes (issue 11): ``hutch api``, ``hutch proxy`` (the edge), a node's own
proxy, and ``hutch cluster up|status|down`` (a real local cluster). Wiring, like
``hutch.serve``: the one other package allowed to join the roles."""
