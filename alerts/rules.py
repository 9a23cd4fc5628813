"""Alert rules in TOML: which events become which alerts, and who hears about them.

```toml
[defaults]
for = "0s"              # pending this long before active (a condition must persist)
clear_after = "30m"     # cleared once the detector has not reported it for this long
repeat_interval = "4h"  # re-notify an unacknowledged active alert this often
group_wait = "10s"      # collect alerts of one group this long into one notification
flap_window = "1h"      # more than flap_max activations within flap_window = flapping
flap_max = 4

[[rules]]               # first match wins; events matching no rule use the defaults
kinds = ["loosening"]
min_severity = "warning"   # events below are ignored
severity = "major"         # optional: override the detector's severity (escalation still raises it)
for = "0s"
clear_after = "24h"

[[routes]]              # first match wins (unless continue = true)
site = ""               # empty: any
kinds = []              # empty: any
min_severity = "major"
receivers = ["oncall-webhook", "manager-email"]   # escalation chain
escalate_after = "30m"  # not acknowledged by then: the next receiver is notified too
group_by = "joint"      # joint, site or device: one notification per group
continue = false

[[inhibit]]             # an active source alert suppresses notifications of matching targets
source_min_severity = "critical"
target_max_severity = "warning"
equal = "device"        # same device (or "site")

[[silences]]            # maintenance windows known in advance (also settable over the API)
site = "bridge-b"
starts = "2026-03-10T08:00:00Z"
ends = "2026-03-10T17:00:00Z"
author = "ops"
reason = "retightening campaign"

[[receivers]]           # one channel each; see alerts/channels/samples/
name = "oncall-webhook"
channel = "webhook"
url = "https://example.org/hook"
```

Every error names its key (``routes[1].receivers``).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from alerts.errors import RuleError
from detection.events import Severity

__all__ = [
    "DEFAULT_RULES_TOML",
    "Defaults",
    "InhibitRule",
    "ReceiverSpec",
    "Route",
    "Rule",
    "Rules",
    "SilenceSpec",
    "load_rules",
    "parse_duration_s",
    "parse_rules",
]

DEFAULT_RULES_TOML: Final = """
[defaults]
for = "0s"
clear_after = "30m"
repeat_interval = "4h"
group_wait = "5s"

[[rules]]
kinds = ["no_data"]
for = "5m"

[[routes]]
receivers = ["console"]

[[inhibit]]
source_min_severity = "critical"
target_max_severity = "warning"
equal = "device"

[[inhibit]]
source_kinds = ["no_data"]
source_device_kinds = ["gateway"]
target_kinds = ["no_data"]
equal = "site"

[[receivers]]
name = "console"
channel = "console"
"""
"""Rules used when none are configured: everything to the console."""

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, None: 1.0}


def parse_duration_s(value: object, key: str) -> float:
    """``"90s"``, ``"5m"``, ``"2h"``, ``"1d"`` or a number of seconds.

    Raises:
        RuleError: Not a duration.
    """
    if isinstance(value, bool):
        raise RuleError(key, f"{value!r} is not a duration")
    seconds: float | None = None
    if isinstance(value, int | float):
        if value < 0:
            raise RuleError(key, "must not be negative")
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond the float range
            seconds = math.inf
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds is None:
        raise RuleError(key, f"{value!r} is not a duration like 90s, 5m, 2h, 1d")
    # NaN and infinity (or "1e400"-sized numbers) would overflow every time computed from them.
    if not math.isfinite(seconds):
        raise RuleError(key, "must be a finite number of seconds")
    return seconds


@dataclass(frozen=True, slots=True)
class Defaults:
    """Timing defaults (seconds)."""

    for_s: float = 0.0
    clear_after_s: float = 1800.0
    repeat_interval_s: float = 4 * 3600.0
    group_wait_s: float = 5.0
    flap_window_s: float = 3600.0
    flap_max: int = 4


@dataclass(frozen=True, slots=True)
class Rule:
    """Which events become alerts, and how."""

    kinds: tuple[str, ...] = ()
    min_severity: Severity = Severity.INFO
    severity: Severity | None = None
    for_s: float = 0.0
    clear_after_s: float = 1800.0

    def matches(self, kind: str) -> bool:
        """Whether the rule applies to this event kind."""
        return not self.kinds or kind in self.kinds


@dataclass(frozen=True, slots=True)
class Route:
    """Who hears about which alerts."""

    receivers: tuple[str, ...]
    site: str = ""
    kinds: tuple[str, ...] = ()
    min_severity: Severity = Severity.INFO
    escalate_after_s: float = 0.0
    group_by: str = "joint"
    repeat_interval_s: float = 4 * 3600.0
    continue_: bool = False

    def matches(self, site: str, kind: str, severity: Severity) -> bool:
        """Whether an alert with these properties goes this way."""
        return (
            (not self.site or self.site == site)
            and (not self.kinds or kind in self.kinds)
            and severity >= self.min_severity
        )


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """An active source alert suppresses notifications of target alerts sharing ``equal``."""

    equal: str = "device"
    source_kinds: tuple[str, ...] = ()
    source_device_kinds: tuple[str, ...] = ()
    source_min_severity: Severity = Severity.INFO
    target_kinds: tuple[str, ...] = ()
    target_max_severity: Severity = Severity.CRITICAL


@dataclass(frozen=True, slots=True)
class SilenceSpec:
    """A silence from the rules file (times in epoch ms)."""

    starts_ms: int
    ends_ms: int
    author: str
    reason: str
    device_id: str = ""
    site: str = ""
    kind: str = ""


@dataclass(frozen=True, slots=True)
class ReceiverSpec:
    """A receiver: a name, a channel kind and the channel's options."""

    name: str
    channel: str
    options: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""


_MEMO_MAX: Final = 100_000
"""Answers :class:`Rules` remembers (sites, kinds and severities; beyond, it just computes)."""


@dataclass(frozen=True, slots=True)
class Rules:
    """Parsed alert rules."""

    defaults: Defaults = field(default_factory=Defaults)
    rules: tuple[Rule, ...] = ()
    routes: tuple[Route, ...] = ()
    inhibit: tuple[InhibitRule, ...] = ()
    silences: tuple[SilenceSpec, ...] = ()
    receivers: tuple[ReceiverSpec, ...] = ()
    _rule_memo: dict[str, Rule] = field(default_factory=dict, init=False, repr=False, compare=False)
    _route_memo: dict[tuple[str, str, Severity], tuple[Route, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def rule_for(self, kind: str) -> Rule:
        """The first rule matching the kind, or one made of the defaults (remembered per kind:
        the alert path asks for every event)."""
        found = self._rule_memo.get(kind)
        if found is None:
            found = next((r for r in self.rules if r.matches(kind)), None)
            if found is None:
                d = self.defaults
                found = Rule(for_s=d.for_s, clear_after_s=d.clear_after_s)
            if len(self._rule_memo) < _MEMO_MAX:
                self._rule_memo[kind] = found
        return found

    def routes_for(self, site: str, kind: str, severity: Severity) -> list[Route]:
        """Matching routes, in order, honouring ``continue`` (remembered per site, kind and
        severity)."""
        key = (site, kind, severity)
        found = self._route_memo.get(key)
        if found is None:
            out: list[Route] = []
            for r in self.routes:
                if r.matches(site, kind, severity):
                    out.append(r)
                    if not r.continue_:
                        break
            found = tuple(out)
            if len(self._route_memo) < _MEMO_MAX:
                self._route_memo[key] = found
        return list(found)


def _table(data: Mapping[str, Any], name: str, key: str) -> list[Mapping[str, Any]]:
    items = data.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise RuleError(key, f"[[{name}]] must be an array of tables")
    return items


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], key: str) -> None:
    for k in table:
        if k not in allowed:
            raise RuleError(f"{key}.{k}", f"unknown key; known: {', '.join(allowed)}")


def _str_list(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(key, "must be a list of strings")
    return tuple(value)


def _sev(value: object, key: str) -> Severity:
    if not isinstance(value, str):
        raise RuleError(key, "must be a severity name")
    try:
        return Severity.parse(value)
    except ValueError as exc:
        raise RuleError(key, str(exc)) from None


def _time_ms(value: object, key: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise RuleError(key, "needs a UTC offset (2026-03-10T08:00:00Z)")
        return round(value.timestamp() * 1000)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise RuleError(key, f"{value!r} is not an RFC 3339 time") from None
        if dt.tzinfo is None:
            raise RuleError(key, "needs a UTC offset (2026-03-10T08:00:00Z)")
        return round(dt.timestamp() * 1000)
    raise RuleError(key, "must be a time")


_DEFAULT_KEYS: Final = (
    "for",
    "clear_after",
    "repeat_interval",
    "group_wait",
    "flap_window",
    "flap_max",
)
_RULE_KEYS: Final = ("kinds", "min_severity", "severity", "for", "clear_after")
_ROUTE_KEYS: Final = (
    "receivers",
    "site",
    "kinds",
    "min_severity",
    "escalate_after",
    "group_by",
    "repeat_interval",
    "continue",
)
_INHIBIT_KEYS: Final = (
    "equal",
    "source_kinds",
    "source_device_kinds",
    "source_min_severity",
    "target_kinds",
    "target_max_severity",
)
_SILENCE_KEYS: Final = ("device_id", "site", "kind", "starts", "ends", "author", "reason")


def parse_rules(data: Mapping[str, Any]) -> Rules:  # noqa: PLR0912, PLR0915 - one section after another
    """Rules from parsed TOML.

    Raises:
        RuleError: Naming the offending key.
    """
    _check_keys(data, ("defaults", "rules", "routes", "inhibit", "silences", "receivers"), "")
    raw_d = data.get("defaults", {})
    if not isinstance(raw_d, dict):
        raise RuleError("defaults", "must be a table")
    _check_keys(raw_d, _DEFAULT_KEYS, "defaults")
    flap_max = raw_d.get("flap_max", 4)
    if not isinstance(flap_max, int) or flap_max < 1:
        raise RuleError("defaults.flap_max", "must be an integer >= 1")
    d = Defaults(
        for_s=parse_duration_s(raw_d.get("for", 0), "defaults.for"),
        clear_after_s=parse_duration_s(raw_d.get("clear_after", 1800), "defaults.clear_after"),
        repeat_interval_s=parse_duration_s(
            raw_d.get("repeat_interval", 4 * 3600), "defaults.repeat_interval"
        ),
        group_wait_s=parse_duration_s(raw_d.get("group_wait", 5), "defaults.group_wait"),
        flap_window_s=parse_duration_s(raw_d.get("flap_window", 3600), "defaults.flap_window"),
        flap_max=flap_max,
    )
    rules = []
    for i, r in enumerate(_table(data, "rules", "rules")):
        key = f"rules[{i}]"
        _check_keys(r, _RULE_KEYS, key)
        rules.append(
            Rule(
                kinds=_str_list(r.get("kinds", []), f"{key}.kinds"),
                min_severity=_sev(r.get("min_severity", "info"), f"{key}.min_severity"),
                severity=_sev(r["severity"], f"{key}.severity") if "severity" in r else None,
                for_s=parse_duration_s(r.get("for", d.for_s), f"{key}.for"),
                clear_after_s=parse_duration_s(
                    r.get("clear_after", d.clear_after_s), f"{key}.clear_after"
                ),
            )
        )
    receivers = []
    names: set[str] = set()
    for i, r in enumerate(_table(data, "receivers", "receivers")):
        key = f"receivers[{i}]"
        name, channel = r.get("name"), r.get("channel")
        if not isinstance(name, str) or not name:
            raise RuleError(f"{key}.name", "every receiver needs a name")
        if name in names:
            raise RuleError(f"{key}.name", f"receiver {name!r} is defined twice")
        if not isinstance(channel, str):
            raise RuleError(f"{key}.channel", "every receiver needs a channel kind")
        names.add(name)
        options = {k: v for k, v in r.items() if k not in ("name", "channel")}
        receivers.append(ReceiverSpec(name, channel, options, key))
    routes = []
    for i, r in enumerate(_table(data, "routes", "routes")):
        key = f"routes[{i}]"
        _check_keys(r, _ROUTE_KEYS, key)
        recv = _str_list(r.get("receivers", []), f"{key}.receivers")
        if not recv:
            raise RuleError(f"{key}.receivers", "a route needs at least one receiver")
        for name in recv:
            if name not in names:
                raise RuleError(f"{key}.receivers", f"no receiver named {name!r}")
        group_by = r.get("group_by", "joint")
        if group_by not in ("joint", "site", "device"):
            raise RuleError(f"{key}.group_by", "must be joint, site or device")
        routes.append(
            Route(
                receivers=recv,
                site=str(r.get("site", "")),
                kinds=_str_list(r.get("kinds", []), f"{key}.kinds"),
                min_severity=_sev(r.get("min_severity", "info"), f"{key}.min_severity"),
                escalate_after_s=parse_duration_s(
                    r.get("escalate_after", 0), f"{key}.escalate_after"
                ),
                group_by=group_by,
                repeat_interval_s=parse_duration_s(
                    r.get("repeat_interval", d.repeat_interval_s), f"{key}.repeat_interval"
                ),
                continue_=bool(r.get("continue", False)),
            )
        )
    inhibit = []
    for i, r in enumerate(_table(data, "inhibit", "inhibit")):
        key = f"inhibit[{i}]"
        _check_keys(r, _INHIBIT_KEYS, key)
        equal = r.get("equal", "device")
        if equal not in ("device", "site"):
            raise RuleError(f"{key}.equal", "must be device or site")
        inhibit.append(
            InhibitRule(
                equal=equal,
                source_kinds=_str_list(r.get("source_kinds", []), f"{key}.source_kinds"),
                source_device_kinds=_str_list(
                    r.get("source_device_kinds", []), f"{key}.source_device_kinds"
                ),
                source_min_severity=_sev(
                    r.get("source_min_severity", "info"), f"{key}.source_min_severity"
                ),
                target_kinds=_str_list(r.get("target_kinds", []), f"{key}.target_kinds"),
                target_max_severity=_sev(
                    r.get("target_max_severity", "critical"), f"{key}.target_max_severity"
                ),
            )
        )
    silences = []
    for i, r in enumerate(_table(data, "silences", "silences")):
        key = f"silences[{i}]"
        _check_keys(r, _SILENCE_KEYS, key)
        for need in ("starts", "ends", "author", "reason"):
            if need not in r:
                raise RuleError(f"{key}.{need}", "required")
        if not any(r.get(k) for k in ("device_id", "site", "kind")):
            raise RuleError(key, "a silence needs at least one of device_id, site, kind")
        s = SilenceSpec(
            starts_ms=_time_ms(r["starts"], f"{key}.starts"),
            ends_ms=_time_ms(r["ends"], f"{key}.ends"),
            author=str(r["author"]),
            reason=str(r["reason"]),
            device_id=str(r.get("device_id", "")),
            site=str(r.get("site", "")),
            kind=str(r.get("kind", "")),
        )
        if s.ends_ms <= s.starts_ms:
            raise RuleError(f"{key}.ends", "must be after starts")
        silences.append(s)
    return Rules(d, tuple(rules), tuple(routes), tuple(inhibit), tuple(silences), tuple(receivers))


def load_rules(path: str | Path | None) -> Rules:
    """Rules from a TOML file, or :data:`DEFAULT_RULES_TOML` when ``path`` is None.

    Raises:
        RuleError: Unreadable file, bad TOML, or a bad key (named).
    """
    if path is None:
        return parse_rules(tomllib.loads(DEFAULT_RULES_TOML))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError("alerts.rules", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError("alerts.rules", f"{path}: {exc}") from None
    return parse_rules(data)
