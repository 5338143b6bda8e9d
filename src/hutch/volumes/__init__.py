"""Volume storage: the ``VolumeBackend`` seam and its implementations (docs/volumes.md).

* ``base.py``: the Protocol, the entry/usage/owner records, and the pure path rules every
  backend applies before touching storage;
* ``local.py``: one loop-mounted ext4 image per volume (ADR 0008);
* ``safefs.py``: ``openat2(RESOLVE_BENEATH)``: the local backend never follows a path or a
  symlink out of a volume.

A library used by the api (content API) and, through ``serve``, by the node (mounts); it
imports only ``hutch.shared``.
"""
