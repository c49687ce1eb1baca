"""The local store under DEVBOX_HOME: JSON record files, the write lock, and the sealing key
(files.py), and the PyNaCl sealing itself (sealing.py)."""

from __future__ import annotations

from devbox_cli.store.files import KEY_FILE, Store, default_home, utc_now

__all__ = ["KEY_FILE", "Store", "default_home", "utc_now"]
