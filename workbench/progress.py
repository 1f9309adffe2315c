"""One progress protocol for all long work: ``progress(stage, done, total, record)``.

- ``stage``: what is running, in words a progress bar can show (``"steps"`` of a fit, the
  method being evaluated, ``"antonym 10-shot ICL"`` in a grid, ``"antonym -> country_capital"``
  in a transfer matrix);
- ``done`` / ``total``: units finished and expected (training steps, queries, cells), counted
  over the whole call, so a bar never runs backwards between stages;
- ``record``: the numbers of the latest unit (a step's losses, the running answer metrics of an
  evaluation), possibly empty.

Fits (:meth:`workbench.methods.Method.fit`), evaluation, grids, method comparisons and
transfer matrices all report through it; the CLI's tqdm bars, the app's ``st.progress`` and
the background fit jobs' event queue all read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Progress = Callable[[str, int, int, Mapping[str, float]], None]  # (stage, done, total, record)


def shifted(progress: Progress | None, base: int, total: int, prefix: str = "") -> Progress | None:
    """``progress`` of one part as progress of the whole: ``done`` moves up by ``base``,
    ``total`` is the whole's, and the part's stage reads after ``prefix``."""
    if progress is None:
        return None

    def report(stage: str, done: int, _total: int, record: Mapping[str, float]) -> None:
        progress(f"{prefix}{stage}", base + done, total, record)

    return report
