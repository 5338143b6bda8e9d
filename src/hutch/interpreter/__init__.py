"""The code-interpreter server that runs inside ``code-interpreter`` sandboxes (port 49999).

It speaks the wire contract of E2B's code-interpreter SDKs (``/execute``, ``/contexts``)
and drives Jupyter kernels directly over ZMQ with ``jupyter_client`` (no Jupyter server;
docs/adr/0014). Self-contained: it imports nothing else from ``hutch``, so the template
can install it with only ``requirements.txt``.
"""
