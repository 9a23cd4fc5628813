"""``boltwatch alerts ...``: the alerts HTTP API from the command line.

List and show alerts, acknowledge and comment them, set and end silences — through the running
service's API (``alerts/api.py``), so the command works from any machine that reaches it. Plain
``urllib`` keeps this module light (``boltwatch --help`` imports it). Every expected failure (a
refused token, an unreachable API, an unknown alert) prints one line and exits with status 2.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Annotated, Any, Final, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["alerts_app"]

DEFAULT_URL: Final = "http://127.0.0.1:8080"
TIMEOUT_S: Final = 10.0
"""How long one request may take before the command gives up."""
_SEVERITY_STYLE: Final = {
    "info": "blue",
    "warning": "yellow",
    "major": "dark_orange",
    "critical": "bold red",
}

alerts_app = typer.Typer(
    help="Alerts of the running service (over its HTTP API): list, show, acknowledge, silence.",
    no_args_is_help=True,
)


def _out() -> Console:
    # Made per command, not at import: the width follows $COLUMNS of the moment.
    return Console(highlight=False, soft_wrap=True)


UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar="BOLTWATCH_API_URL", help="Base URL of the boltwatch API.", show_envvar=True
    ),
]
TokenOption = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="BOLTWATCH_API_TOKEN",
        help="API token (alerts.api_token of the service).",
        show_envvar=True,
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts.")]
ByOption = Annotated[str, typer.Option("--by", help="Your name (recorded with the change).")]


class _RequestError(Exception):
    """A request the command cannot complete: one line for the user, exit status 2."""


def _fail(message: str) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", markup=True
    )
    raise typer.Exit(2)


def _shown(url: str) -> str:
    """The URL without user:password@ (error messages must not leak credentials)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Api:
    """A tiny JSON client of the alerts API.

    Args:
        url: Base URL (``http://host:port``).
        token: Bearer token.
    """

    def __init__(self, url: str, token: str) -> None:
        if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
            _fail(f"--url: {url!r} is not an http:// or https:// URL")
        if not token.strip():
            _fail("--token: empty (set it or BOLTWATCH_API_TOKEN)")
        self.url = url.rstrip("/")
        self._token = token

    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:  # noqa: ANN401 - decoded JSON
        """One request; the decoded JSON answer.

        Raises:
            _RequestError: Refused token, unreachable API, an error answer, or not JSON.
        """
        target = self.url + path
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(target, data=data, method=method)  # noqa: S310 - scheme checked
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _RequestError(_http_message(exc)) from exc
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            raise _RequestError(
                f"cannot reach the alerts API at {_shown(self.url)} ({reason})"
            ) from exc
        except (TimeoutError, ConnectionError) as exc:
            raise _RequestError(
                f"the alerts API at {_shown(self.url)} did not answer ({exc})"
            ) from exc
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _RequestError(
                f"{_shown(target)} did not answer JSON: is it the boltwatch API?"
            ) from exc


def _http_message(exc: urllib.error.HTTPError) -> str:
    if exc.code == 401:
        return "the API refused the token (401)"
    try:
        message = str(json.loads(exc.read())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        message = exc.reason if isinstance(exc.reason, str) else "request failed"
    return message if exc.code == 404 else f"{message} ({exc.code})"


def _call(
    url: str,
    token: str,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    query: dict[str, str] | None = None,
) -> Any:  # noqa: ANN401 - decoded JSON
    try:
        return _Api(url, token).call(method, path, body=body, query=query)
    except _RequestError as exc:
        _fail(str(exc))


def _time(ms: int, *, short: bool = False) -> str:
    """Local ISO 8601 time of epoch ms, with its UTC offset ("" for 0 = never).

    ``short``: to the minute without the offset, for tables.
    """
    if not ms:
        return ""
    local = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone()
    if short:
        return local.strftime("%Y-%m-%d %H:%M")
    return local.isoformat(timespec="seconds")


def _severity(name: str) -> str:
    style = _SEVERITY_STYLE.get(name, "")
    return f"[{style}]{escape(name)}[/]" if style else escape(name)


def _print_json(data: Any) -> None:  # noqa: ANN401 - any JSON value
    sys.stdout.write(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _table(title: str, columns: tuple[str, ...], last: str) -> Table:
    """Light borders; every column folds, the last one takes the remaining width."""
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True)
    for col in columns:
        table.add_column(col, overflow="fold")
    table.add_column(last, overflow="fold", ratio=1)
    return table


def _alerts_table(alerts: list[dict[str, Any]]) -> Table:
    table = _table(
        f"alerts ({len(alerts)})",
        ("id", "severity", "state", "device", "site", "last event", "ack"),
        "what",
    )
    for a in alerts:
        state = a["state"] + (" (flapping)" if a.get("flapping") else "")
        table.add_row(
            str(a["id"]),
            _severity(a["severity"]),
            escape(state),
            escape(a["device_id"]),
            escape(a["site"]),
            _time(a["last_event_ms"], short=True),
            escape(a["ack_by"]) if a["acknowledged"] else "",
            f"[bold]{escape(a['kind'])}[/]: {escape(a['explanation'])}",
        )
    return table


def _silences_table(silences: list[dict[str, Any]], title: str) -> Table:
    table = _table(
        f"{title} ({len(silences)})",
        ("id", "starts", "ends", "device", "site", "kind", "author"),
        "reason",
    )
    for s in silences:
        table.add_row(
            str(s["id"]),
            _time(s["starts_ms"], short=True),
            _time(s["ends_ms"], short=True),
            escape(s["device_id"]),
            escape(s["site"]),
            escape(s["kind"]),
            escape(s["author"]),
            escape(s["reason"]),
        )
    return table


@alerts_app.command("list")
def alerts_list(
    *,
    state: Annotated[
        str | None, typer.Option(help="Only this state: pending, active or cleared.")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only this kind (loosening, no_data...).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 500,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption,
) -> None:
    """Alerts, newest activity first: severity, state, device, who acknowledged."""
    query = {
        "state": state or "",
        "site": site or "",
        "kind": kind or "",
        "device_id": device or "",
        "limit": str(limit),
    }
    answer = _call(url, token, "GET", "/api/alerts", query=query)
    if as_json:
        _print_json(answer)
        return
    _out().print(_alerts_table(answer["alerts"]))


@alerts_app.command("show")
def alerts_show(
    alert_id: Annotated[int, typer.Argument(metavar="ID", help="Alert id.")],
    *,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption,
) -> None:
    """One alert: its fields, comments and history."""
    a = _call(url, token, "GET", f"/api/alerts/{alert_id}")
    if as_json:
        _print_json(a)
        return
    out = _out()
    out.print(
        f"alert {a['id']}  {_severity(a['severity'])}  {escape(a['state'])}  "
        f"{escape(a['kind'])} on {escape(a['device_id'])}"
        + (f" ({escape(a['site'])})" if a["site"] else ""),
        markup=True,
    )
    out.print(f"  {escape(a['explanation'])}", markup=True)
    for label, key in (
        ("first event", "first_ms"),
        ("last event", "last_event_ms"),
        ("active since", "active_ms"),
        ("cleared", "cleared_ms"),
    ):
        if a[key]:
            out.print(f"  {label:<13} {_time(a[key])}")
    if a["acknowledged"]:
        out.print(f"  acknowledged  by {escape(a['ack_by'])} at {_time(a['ack_ms'])}", markup=True)
    if a.get("flapping"):
        out.print("  flapping      held active, notifications paused")
    for name, value in sorted(a.get("data", {}).items()):
        out.print(f"  {escape(name):<13} {value:g}", markup=True)
    for c in a.get("comments", []):
        out.print(
            f"  comment       {_time(c['ms'])} {escape(c['author'])}: {escape(c['text'])}",
            markup=True,
        )
    history = _table("history", ("time", "what"), "detail")
    for h in a.get("history", []):
        history.add_row(_time(h["ms"], short=True), escape(h["what"]), escape(h["detail"]))
    out.print(history)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[int, typer.Argument(metavar="ID", help="Alert id.")],
    *,
    by: ByOption,
    comment: Annotated[str, typer.Option(help="Why, or what happens next.")] = "",
    url: UrlOption = DEFAULT_URL,
    token: TokenOption,
) -> None:
    """Acknowledge an alert: no more repeats or escalation while it stays active."""
    body = {"by": by, "comment": comment} if comment else {"by": by}
    a = _call(url, token, "POST", f"/api/alerts/{alert_id}/ack", body=body)
    _out().print(f"alert {a['id']} acknowledged by {escape(a['ack_by'])}", markup=True)


@alerts_app.command("unack")
def alerts_unack(
    alert_id: Annotated[int, typer.Argument(metavar="ID", help="Alert id.")],
    *,
    by: ByOption,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption,
) -> None:
    """Take an acknowledgement back (repeats and escalation resume)."""
    a = _call(url, token, "POST", f"/api/alerts/{alert_id}/unack", body={"by": by})
    _out().print(f"alert {a['id']} no longer acknowledged")


@alerts_app.command("comment")
def alerts_comment(
    alert_id: Annotated[int, typer.Argument(metavar="ID", help="Alert id.")],
    *,
    by: ByOption,
    text: Annotated[str, typer.Option(help="The comment.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption,
) -> None:
    """Add a comment to an alert."""
    a = _call(url, token, "POST", f"/api/alerts/{alert_id}/comment", body={"by": by, "text": text})
    _out().print(f"alert {a['id']}: {len(a['comments'])} comment(s)")


@alerts_app.command("silence")
def alerts_silence(
    *,
    device: Annotated[str | None, typer.Option(help="Silence this device.")] = None,
    site: Annotated[str | None, typer.Option(help="Silence this site.")] = None,
    kind: Annotated[str | None, typer.Option(help="Silence this alert kind.")] = None,
    duration: Annotated[str, typer.Option(help="How long, from now: 30m, 2h, 1d.")],
    author: Annotated[str, typer.Option(help="Who sets it.")],
    reason: Annotated[str, typer.Option(help="Why (maintenance, known issue...).")],
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption,
) -> None:
    """Silence matching alerts for a while: they stay alerts, but nobody is notified."""
    if not (device or site or kind):
        _fail("give --device, --site or --kind (what to silence)")
    body: dict[str, Any] = {"author": author, "reason": reason, "duration": duration}
    body |= {k: v for k, v in (("device_id", device), ("site", site), ("kind", kind)) if v}
    s = _call(url, token, "POST", "/api/silences", body=body)
    if as_json:
        _print_json(s)
        return
    _out().print(f"silence {s['id']} until {_time(s['ends_ms'])}")


@alerts_app.command("unsilence")
def alerts_unsilence(
    silence_id: Annotated[int, typer.Argument(metavar="ID", help="Silence id.")],
    *,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption,
) -> None:
    """End a silence now."""
    s = _call(url, token, "DELETE", f"/api/silences/{silence_id}")
    _out().print(f"silence {s['id']} ended")


@alerts_app.command("silences")
def alerts_silences(
    *,
    all_: Annotated[
        bool, typer.Option("--all", help="Also ended and future ones (default: in force now).")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption,
) -> None:
    """Silences in force now (or all of them)."""
    query = {} if all_ else {"active": "true"}
    answer = _call(url, token, "GET", "/api/silences", query=query)
    if as_json:
        _print_json(answer)
        return
    _out().print(_silences_table(answer["silences"], "silences" if all_ else "silences in force"))
