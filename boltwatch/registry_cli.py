"""``boltwatch registry import|export|history``: the registry kept in the store, and its audit.

* ``import FILE --author NAME`` validates a registry TOML file and makes it the registry in
  force in the store's ``registry.db`` (:class:`sensors.registry_store.RegistryStore`); it
  prints what changed (added, changed, removed, entity by entity) or that nothing did: importing
  the same file again is a no-op.
* ``export [--out FILE]`` writes the registry in force as TOML (comments are not kept).
* ``history [--table T] [--key K]`` lists who changed what and when.

``boltwatch run`` uses the registry in force in its store when the config names no registry
file (``[registry] path``; a file named there wins), and applies a newer one within seconds
while it runs. Every expected failure is one line and exit status 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["registry_export", "registry_history", "registry_import"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

StoreOption = Annotated[Path, typer.Option("--store", help="Folder of the embedded store.")]


@contextmanager
def _errors() -> Iterator[None]:
    from sensors.errors import RegistryError

    try:
        yield
    except RegistryError as exc:
        err.print(f"error: {escape(str(exc))}")
        raise typer.Exit(2) from None


def registry_import(
    path: Annotated[Path, typer.Argument(help="Registry TOML file.")],
    author: Annotated[str, typer.Option(help="Who makes the change (kept in the history).")],
    store: StoreOption = Path("./boltwatch-data"),
) -> None:
    """Make a registry file the registry in force in the store (validated first); print what
    changed. Importing the same file again changes nothing."""
    from sensors.registry import load_registry
    from sensors.registry_store import RegistryStore

    with _errors():
        registry = load_registry(path)
        with RegistryStore(store) as db:
            version, changes = db.put(registry, author=author, source=f"import {path}")
    if not changes:
        out.print(f"registry unchanged (version {version}): {path} is the registry in force")
        return
    counts = {w: sum(1 for c in changes if c.what == w) for w in ("added", "changed", "removed")}
    for c in changes:
        out.print(f"  {c}", markup=False)
    summary = ", ".join(f"{n} {w}" for w, n in counts.items() if n)
    out.print(f"registry version {version} in force: {summary}")


def registry_export(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="TOML file to write (default: stdout).")
    ] = None,
    store: StoreOption = Path("./boltwatch-data"),
) -> None:
    """Write the registry in force as TOML (what `boltwatch registry import` reads)."""
    from sensors.registry_store import RegistryStore, to_toml

    with RegistryStore(store) as db:
        registry = db.current()
        versions = db.versions()
    if registry is None:
        err.print(f"error: --store: {store} holds no registry yet (boltwatch registry import)")
        raise typer.Exit(2)
    v = versions[-1]
    when = datetime.fromtimestamp(v.ms / 1000, UTC).isoformat(timespec="seconds")
    text = f"# boltwatch registry, version {v.version} ({when}, by {v.author}: {v.source})\n"
    text += to_toml(registry.file)
    if out_file is None:
        typer.echo(text, nl=False)
    else:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"registry version {v.version} written to {out_file}")


def registry_history(
    store: StoreOption = Path("./boltwatch-data"),
    table: Annotated[
        str | None, typer.Option(help="Only this table (joints, machines...).")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only this entity (its id).")] = None,
) -> None:
    """Who changed what in the registry, and when (oldest first)."""
    from sensors.registry_store import RegistryStore

    with RegistryStore(store) as db:
        changes = db.history(table, key)
    if not changes:
        out.print("no change recorded")
        return
    t = Table(title=f"registry history ({len(changes)})")
    for col in ("version", "when", "author", "what", "table", "key"):
        t.add_column(col, overflow="fold")
    for c in changes:
        when = datetime.fromtimestamp(c.ms / 1000, UTC).isoformat(timespec="seconds")
        t.add_row(str(c.version), when, c.author, c.what, c.table, c.key)
    out.print(t)
