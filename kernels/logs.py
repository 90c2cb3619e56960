"""The pack's logger and its one warn-once, in the bottom layer so kernels, the core and the nodes share them.

A fallback or a borrowed default is said once per process and reason, never silently and never once per call.
"""
from __future__ import annotations

import logging

log = logging.getLogger("dit_accel")
_said: set[str] = set()


def warn_once(key: str, message: str, *args, said: set[str] | None = None) -> bool:
    """Log `message % args` as a warning the first time `key` comes up in this process; True when it logged.

    Keys name the situation, not the text (e.g. "sparse-fallback:<reason>"), so one reason is said once however
    its message is worded. `said`: a narrower scope's own set of keys (a sampling run's), instead of the process's."""
    said = _said if said is None else said
    if key in said:
        return False
    said.add(key)
    log.warning(message, *args)
    return True


def forget_warnings(prefix: str = "") -> None:
    """Let warnings whose key starts with `prefix` be said again (tests; every warning with no prefix)."""
    for key in [k for k in _said if k.startswith(prefix)]:
        _said.discard(key)
