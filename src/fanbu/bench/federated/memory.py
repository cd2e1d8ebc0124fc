"""Peak memory of a run: this process and every process it started (Flower's Ray workers)."""

from __future__ import annotations

import os
import threading
from typing import Self


class PeakMemory:
    """The largest summed resident memory of this process and its descendants, sampled every 0.2 s."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def measure(self) -> None:
        """Take one sample now."""
        import psutil

        me = psutil.Process(os.getpid())
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a process that ended between the listing and the reading
                continue
        self.mb = max(self.mb, total / 2**20)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.measure()
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.measure()
