"""Code that runs inside the Python kernel (loaded by ``startup.py``), not in the server."""
