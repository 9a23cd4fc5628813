"""``boltwatch store``: bring an embedded store to this release's layout.

``migrate`` opens the store (the schema steps run), seals every UTC day older than the tail into
compressed chunks (the step ``boltwatch run`` otherwise does a bounded piece of every minute),
then ``VACUUM``\\s the file so that the space comes back. It takes the store's lock: never while a
``boltwatch run`` uses the folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

store_app = typer.Typer(
    help="The embedded store: migrate a store written by an earlier release.",
    no_args_is_help=True,
)

_STEP = 200_000  # readings sealed between two progress lines


def _size(folder: Path) -> int:
    """Bytes of the database and its WAL."""
    total = 0
    for name in ("boltwatch.sqlite3", "boltwatch.sqlite3-wal"):
        try:
            total += os.stat(folder / name).st_size
        except OSError:
            continue
    return total


@store_app.command("migrate")
def migrate(
    store: Annotated[Path, typer.Option("--store", help="Folder of the embedded store.")] = Path(
        "./boltwatch-data"
    ),
    tail_days: Annotated[
        int,
        typer.Option(min=1, max=3650, help="Days kept as rows: as store.tail_days in your config."),
    ] = 1,
    vacuum: Annotated[
        bool, typer.Option(help="VACUUM at the end: the file shrinks (needs its size free).")
    ] = True,
) -> None:
    """Migrate a store to this release's layout: schema, sealed chunks, then VACUUM."""
    from boltwatch.store_lock import StoreLock
    from ingest.store import Store, StoreError

    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not (store / "boltwatch.sqlite3").is_file():
        err.print(f"error: --store: {escape(str(store))} holds no boltwatch store")
        raise typer.Exit(2)
    before = _size(store)
    started = time.monotonic()
    try:
        with StoreLock(store), Store(store, tail_days=tail_days) as db:
            total = db.stats().readings
            out.print(f"{store}: {total:,} readings, {before / 1e6:,.1f} MB", markup=False)
            moved = chunks = 0
            now_ms = int(time.time() * 1000)
            while True:
                step = db.seal(now_ms=now_ms, max_readings=_STEP)
                moved += step.readings
                chunks += step.chunks
                if step.readings:
                    out.print(
                        f"  sealed {moved:,} readings into {chunks:,} chunks "
                        f"({time.monotonic() - started:.0f} s)",
                        markup=False,
                    )
                if step.done:
                    break
            if vacuum:
                out.print("  vacuuming", markup=False)
                db.compact()
    except StoreError as exc:
        err.print(f"error: --store: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    after = _size(store)
    per = f", {after / total:,.1f} bytes per reading" if total else ""
    out.print(
        f"done: {moved:,} readings sealed, {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB{per}",
        markup=False,
    )
