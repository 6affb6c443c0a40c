"""Live progress for batch conversion (rich): slides done/failed, MB/s, ETA, and a final summary."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


class BatchDisplay:
    """Progress bar on a terminal; one line per finished slide otherwise (logs, CI)."""

    def __init__(self, jobs: Sequence[Any], *, enabled: bool = True) -> None:
        self.jobs = jobs
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.done = self.failed = self.skipped = 0
        self.bytes_in = 0
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> BatchDisplay:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]converting"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=self.console)
            self._progress.start()
            self._task = self._progress.add_task("slides", total=len(self.jobs), status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _status(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return (f"done {self.done}  skipped {self.skipped}  failed {self.failed}  "
                f"{self.bytes_in / 1e6 / dt:.1f} MB/s")

    def event(self, kind: str, job: Any, outcome: Any) -> None:
        """Callback for :func:`csp.conversion.batch.run_batch`."""
        if kind != "end" or outcome is None:
            return
        with self._lock:
            if outcome.status == "failed":
                self.failed += 1
            elif outcome.status == "skipped":
                self.skipped += 1
            else:
                self.done += 1
            self.bytes_in += outcome.bytes_in
            if self._progress is not None:
                self._progress.update(self._task, advance=1, status=self._status())
            elif self.enabled:
                n = self.done + self.failed + self.skipped
                print(f"[{n}/{len(self.jobs)}] {outcome.status:8} {job.source}"
                      + (f"  ({outcome.seconds:.1f} s)" if outcome.seconds else ""), file=sys.stderr)

    def summary(self, result: Any) -> None:
        """Table of every slide and a totals line."""
        if not self.enabled:
            return
        table = Table(title=f"{len(result.outcomes)} slide(s) in {result.seconds:.1f} s")
        for col in ("source", "status", "verified", "MB in", "MB out", "ratio", "s"):
            table.add_column(col, justify="right" if col not in ("source", "status", "verified") else "left")
        for o in result.outcomes:
            ratio = f"{o.bytes_out / o.bytes_in:.3f}" if o.bytes_in else "-"
            table.add_row(o.source, o.status, "verified" if o.verified else "-", f"{o.bytes_in / 1e6:.2f}", f"{o.bytes_out / 1e6:.2f}", ratio,
                          f"{o.seconds:.1f}")
        Console(width=max(120, Console().width)).print(table)
