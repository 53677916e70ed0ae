"""Progress display shared by long library work (latency table, search) and the CLI."""

from __future__ import annotations

from typing import Any


def bar_progress(
    console: Any, description: str = "{task.description}", extra: tuple[Any, ...] = ()
) -> Any:
    """A rich `Progress` with the columns every srsearch bar shows: description, bar, done/total,
    ``extra`` columns (e.g. a rate), elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


class ProgressBars:
    """One bar per stage (e.g. "export", "timing"), fed by on_progress(stage, done, total)."""

    def __init__(self, console: Any) -> None:
        self.progress = bar_progress(console, "{task.description:>6}")
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)
