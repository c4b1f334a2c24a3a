"""Garbage-collector settings for the long-running processes (API and worker)."""

from __future__ import annotations

import gc
import os
import threading

# A referral allocates tens of thousands of short-lived objects (pydantic models, Kafka records,
# SQL rows), so the collector's default first threshold (700 allocations) runs a young collection
# every few hundred microseconds and an old one every few milliseconds, each old one walking the
# whole heap of imported modules and compiled schemas. bench/README.md has the figures.
YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLDS = (20, 20)
FREEZE_AFTER_S = 5.0


def tune_gc() -> None:
    """Collect less often, and, once start-up is over, leave its objects out of every collection.

    ``gc.freeze()`` moves every object alive at that moment into a permanent generation: the
    modules, classes and schemas loaded at start-up are never freed anyway, and no longer walked.
    Objects made later are collected as usual, reference cycles included.
    """
    if os.environ.get("QIXIN_GC_DEFAULTS"):  # compare against the interpreter's own settings
        return
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)

    def freeze() -> None:
        gc.collect()
        gc.freeze()

    timer = threading.Timer(FREEZE_AFTER_S, freeze)
    timer.daemon = True
    timer.start()
