"""Garbage-collector settings for the long-running processes (API and worker)."""

from __future__ import annotations

import gc
import threading

# A referral allocates thousands of short-lived objects (pydantic models, Kafka records, SQL rows),
# so with the interpreter's thresholds (700, 10, 10) the collector runs very often, and its older
# generations' collections walk the whole start-up heap (modules, classes, compiled schemas). In a
# benchmark run each process spent 0.58-1.02 s in collections with the defaults, 0.20-0.30 s with
# these settings (bench/README.md, round 3). HUB_TUNE_GC=false keeps the defaults, to compare.
YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLDS = (20, 20)
FREEZE_AFTER_S = 5.0


def tune_gc(enabled: bool = True) -> None:
    """Collect less often, and, once start-up is over, leave its objects out of every collection.

    ``gc.freeze()`` moves every object alive at that moment into a permanent generation: the
    modules, classes and schemas loaded at start-up are never freed anyway, and no longer walked.
    Objects made later are collected as usual, reference cycles included.
    """
    if not enabled:  # the interpreter's own settings, to compare against
        return
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)

    def freeze() -> None:
        gc.collect()
        gc.freeze()

    timer = threading.Timer(FREEZE_AFTER_S, freeze)
    timer.daemon = True
    timer.start()
