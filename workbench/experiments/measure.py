"""Time and memory of a piece of work, for benchmarks and the comparison views.

Peak memory is the process's resident set size (CPU) sampled every few milliseconds, or
torch's peak allocation (CUDA), above what was in use when the measurement started.
"""

from __future__ import annotations

import threading
import time

import psutil
import torch


class Measure:
    """``with Measure(device) as m: ...`` then ``m.seconds`` and ``m.peak_mib``."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.seconds = 0.0
        self.peak_mib = 0.0

    def __enter__(self) -> Measure:
        self._process = psutil.Process()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._process.memory_info().rss
            self._peak = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._start = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self._process.memory_info().rss)
        self.seconds = time.perf_counter() - self._start
        self.peak_mib = max(0.0, (peak - self._base) / 2**20)
