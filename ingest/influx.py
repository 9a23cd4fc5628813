"""InfluxDB writer of the ingest service, with a durable on-disk spool.

Readings go to InfluxDB 2.x/3.x (or VictoriaMetrics, which accepts the same writes) through the
v2 write API, ``POST /api/v2/write?org=…&bucket=…&precision=ms``, as line protocol built in bulk
from :class:`~sensors.codec.ReadingColumns`.

Naming (also in ``docs/influxdb.md``)
-------------------------------------
One reading is one point:

* **measurement** = the device kind (``cbolt``, ``gateway``, ``printer3d``, ``laser_cutter``,
  ``cnc_mill``, ``vinyl_cutter``, ``embroidery``);
* **tags** ``device_id`` and ``site`` (sorted by key, as InfluxDB prefers);
* **fields** = the kind's numeric fields that the reading reported (a NaN, "not reported", is left
  out; so is ±inf, which the schemas cannot produce but line protocol cannot say), as floats in
  their unit (``preload_kn=61.8``), plus ``seq`` as an integer field (``seq=123i``): a reading
  whose every field is NaN is written with ``seq`` alone;
* **timestamp** = the reading's ``ts`` in epoch milliseconds (the write says ``precision=ms``).

``cbolt,device_id=bolt-0007,site=bridge-a seq=42i,preload_kn=61.8,temp_c=12.5 1772323500000``

VictoriaMetrics names each field ``{measurement}_{field}`` with the tags as labels:
``cbolt_preload_kn{device_id="bolt-0007",site="bridge-a"}``. Waveforms (``vib_ms2``) are not
written: a time series database is the wrong home for 64k samples per reading.

Tag values, the measurement and field keys are escaped as line protocol asks (``,``, ``=`` and
space get a backslash; a newline, tab or carriage return becomes ``\\n``, ``\\t``, ``\\r`` as
influxdb-client writes them). A backslash is written as it is. Site and device ids of the
telemetry contract (``[A-Za-z0-9_-]``) never need any of this.

Speed
-----
Line protocol is built per call over whole columns, not per point: each distinct value of a
column (a sensor's readings repeat at its resolution; sequence numbers repeat across devices) is
formatted once (``repr``, the shortest text that reads back as the same float) and gathered back
with numpy; timestamps are split into leading digits and a table of their last four; a batch's
body is then one ``str.join`` over the parts (0.7-1.4M smart-bolt readings/s here, against
24k/s through influxdb-client ``Point`` objects). Bodies are gzip'ed at level 1: level 9 (what
``gzip.compress`` and influxdb-client use) took 9 times the CPU for a body 20 % smaller
(79 MB of line protocol: 0.6 s to 15 %, 5.6 s to 12 %), and that CPU is shared with the database.
A call of several batches builds batch k+1 while a sender thread compresses and sends batch k.

HTTP
----
The request is influxdb-client's own v2 write call, :class:`influxdb_client.WriteService`
``post_write`` (the call its ``WriteApi`` makes in synchronous mode), not ``WriteApi`` itself,
because this writer needs three things ``WriteApi`` cannot give: a body it compressed itself
(``WriteApi`` gzips at level 9 and cannot be handed a compressed body), retries whose waits
go through an injected ``sleep`` (``WriteApi``'s synchronous retries are urllib3's, sleeping
inside urllib3), and the decision, per batch, between retrying, spooling and rejecting. The
client's retries are off (``retries=False``); this module does them.

Delivery
--------
:meth:`InfluxWriter.write` returns only when every point of the call is either accepted by the
server, or durably in the spool (fsync'ed), or in :attr:`WriteOutcome.rejected`: so ingest can
acknowledge the MQTT messages after it returns, and dead-letter the rejected batches.

* 429, 5xx and connection errors are retried, up to ``max_retries`` times, waiting
  ``backoff_base_s · 2^k`` (at most ``backoff_max_s``) or what the server's ``Retry-After`` says
  (seconds, or an HTTP date taken relative to the response's ``Date``). A ``Retry-After``
  longer than ``backoff_max_s`` is not slept through: the batch is spooled at once, and the spool
  is not tried again before that time.
* Any other 4xx is not retried: the batch goes to :attr:`WriteOutcome.rejected` with the status
  and the server's message (InfluxDB names the first bad line).
* When the retries are exhausted the batch is appended to the spool, and so is every later batch
  while the spool is not empty, so points reach the server in the order they were written.
  :meth:`InfluxWriter.drain_once` (cheap, never sleeps: ingest calls it periodically) and
  :meth:`InfluxWriter.drain` (sleeps between retries) send the spool oldest first and delete each
  file once the server accepted it.

A batch may reach the server twice (a timeout after the server stored it, a crash between a
spooled batch's acceptance and the removal of its file). InfluxDB overwrites a point with the
same measurement, tags, field and timestamp, so that is harmless there; VictoriaMetrics keeps
both samples unless started with ``-dedup.minScrapeInterval=1ms``.

Spool
-----
``spool_dir`` holds one file per batch, ``{sequence:016d}-{points}.lp``: the batch's line
protocol, uncompressed (readable with ``less``), written to a temporary name, fsync'ed, renamed,
then the directory fsync'ed. The sequence number only grows, so the order survives restarts; a
new writer on the same directory (after a crash or a restart) picks the spool up. A spooled batch
the server rejects later (4xx) is moved to ``spool_dir/rejected/`` and handed out by
:meth:`InfluxWriter.take_rejected`. A lock file keeps a second writer off a spool in use.

Threads
-------
An :class:`InfluxWriter` is used from one thread (ingest's InfluxDB worker): ``write``,
``drain``, ``drain_once``, ``take_rejected`` and ``close`` must not run concurrently. Only
:meth:`counters` and :meth:`backlog` may be called from another thread (e.g. the ``/metrics``
handler): they read integers. Inside a ``write`` of several batches, one sender thread of the
writer's own compresses and posts batch k (and sleeps between its retries) while the calling
thread builds batch k+1; it touches no state, and ``write`` returns only after it is done.
"""

from __future__ import annotations

import email.utils
import errno
import fcntl
import functools
import logging
import math
import os
import re
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService

from sensors.codec import ReadingColumns

__all__ = [
    "InfluxWriter",
    "RejectedBatch",
    "SpoolError",
    "WriteOutcome",
    "WriterCounters",
    "escape_key",
    "escape_measurement",
    "line_protocol",
]

log = logging.getLogger(__name__)

Objects = npt.NDArray[np.object_]

GZIP_LEVEL: Final = 1
"""zlib level of request bodies (see the module docstring)."""

_WRITE_SERVICE: Final[Any] = WriteService  # generated code without annotations

_ESCAPE_MEASUREMENT: Final = str.maketrans(
    {",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)
_ESCAPE_KEY: Final = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)
_NEEDS_ESCAPE: Final = re.compile(r"[,= \n\t\r]")
_SPOOL_NAME: Final = re.compile(r"^(\d{16})-(\d+)\.lp$")
_TMP_SUFFIX: Final = ".tmp"


class SpoolError(OSError):
    """The spool could not be written, read or locked (the path says which file)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"spool {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RejectedBatch:
    """A batch the server refused with a 4xx other than 429: ingest dead-letters it.

    Attributes:
        status: HTTP status (400 bad line protocol, 401/403 token, 404 bucket, 413 too large…).
        body: The server's answer (InfluxDB names the first bad line).
        lines: The batch's line protocol, uncompressed.
        points: Number of points (lines) in it.
    """

    status: int
    body: str
    lines: bytes
    points: int


@dataclass(slots=True)
class WriteOutcome:
    """What :meth:`InfluxWriter.write` did with the points of one call.

    Attributes:
        points_written: Accepted by the server.
        points_spooled: Appended (durably) to the spool, to be sent by ``drain``.
        rejected: Batches the server refused; not retried, not spooled.
        retries: Requests repeated after a 429, a 5xx or a connection error.
    """

    points_written: int = 0
    points_spooled: int = 0
    rejected: list[RejectedBatch] = field(default_factory=list)
    retries: int = 0

    @property
    def points_rejected(self) -> int:
        """Points in the rejected batches."""
        return sum(r.points for r in self.rejected)


@dataclass(slots=True)
class WriterCounters:
    """Totals since the writer was created, for ``/metrics``.

    Attributes:
        points_written: Accepted by the server (directly or from the spool).
        points_spooled: Appended to the spool.
        points_rejected: Refused by the server (4xx other than 429).
        retries: Requests repeated after a transient failure.
        spool_backlog_points: Points waiting in the spool now.
    """

    points_written: int = 0
    points_spooled: int = 0
    points_rejected: int = 0
    retries: int = 0
    spool_backlog_points: int = 0


# ---------------------------------------------------------------------------------------------
# Line protocol


def escape_measurement(name: str) -> str:
    """A measurement name escaped for line protocol."""
    return name.translate(_ESCAPE_MEASUREMENT)


def escape_key(text: str) -> str:
    """A tag key, tag value or field key escaped for line protocol."""
    return text.translate(_ESCAPE_KEY)


def _tokens(values: npt.NDArray[Any], fmt: Callable[[Any], str]) -> Objects:
    """``fmt`` of every value, calling ``fmt`` once per distinct value."""
    uniq, inverse = np.unique(values, return_inverse=True)
    table = np.empty(uniq.shape[0], dtype=object)
    table[:] = [fmt(v) for v in uniq.tolist()]
    out: Objects = table[inverse.reshape(-1)]
    return out


def _field_formatter(key: str) -> Callable[[float], str]:
    head = "," + escape_key(key) + "="

    def fmt(v: float) -> str:
        # NaN is "not reported"; an infinity has no line-protocol form: both leave the field out.
        return head + repr(v) if math.isfinite(v) else ""

    return fmt


def _seq_token(v: int) -> str:
    return f"{v}i"


_LOW_DIGITS: Final = 4
_LOW: Final = 10**_LOW_DIGITS


@functools.cache
def _low_digits() -> Objects:
    """``"0000\\n"`` … ``"9999\\n"``: the last four digits of a timestamp and the line's end."""
    table = np.empty(_LOW, dtype=object)
    table[:] = [f"{v:0{_LOW_DIGITS}d}\n" for v in range(_LOW)]
    return table


def _ts_columns(ts: npt.NDArray[np.int64]) -> tuple[Objects | str, Objects | str]:
    """`` {ts}\\n`` per row, as two columns: the leading digits and the last four.

    Timestamps are nearly all distinct, so formatting them one by one would cost as much as the
    rest of the line. Split as ``ts // 10⁴`` (few distinct values: a batch spans minutes to
    hours) and ``ts % 10⁴`` (zero-padded, from a table of 10 000 strings made once), each column
    is a gather. Timestamps below 10⁴ (no leading part) take the one-by-one path.
    """
    if int(ts.min()) < _LOW:
        return _tokens(ts, _ts_token), ""
    high, low = np.divmod(ts, _LOW)
    lo_h, hi_h = int(high.min()), int(high.max())
    if hi_h - lo_h < max(4096, high.shape[0]):
        span = np.empty(hi_h - lo_h + 1, dtype=object)
        span[:] = [f" {v}" for v in range(lo_h, hi_h + 1)]
        leading: Objects = span[high - lo_h]
    else:
        leading = _tokens(high, _ts_head)
    low_part: Objects = _low_digits()[low]
    return leading, low_part


def _ts_token(v: int) -> str:
    return f" {v}\n"


def _ts_head(v: int) -> str:
    return f" {v}"


def _escaped_column(col: Objects) -> Objects:
    """A column of tag values, escaped (the column itself when nothing needs escaping)."""
    values: list[str] = col.tolist()
    distinct = set(values)
    if _NEEDS_ESCAPE.search("".join(distinct)) is None:
        return col
    table = {v: escape_key(v) for v in distinct}
    out = np.empty(len(values), dtype=object)
    out[:] = [table[v] for v in values]
    return out


def _site_column(site: Objects) -> Objects | str:
    """``,site=S seq=`` per row: one string when the rows share a site (the usual case)."""
    first = site[0]
    if bool((site == first).all()):
        return f",site={escape_key(first)} seq="
    values: list[str] = site.tolist()
    table = {v: f",site={escape_key(v)} seq=" for v in set(values)}
    out = np.empty(len(values), dtype=object)
    out[:] = [table[v] for v in values]
    return out


def _parts(columns: ReadingColumns) -> Objects:
    """The line protocol of ``columns`` as a matrix of strings: row i joined is line i."""
    n = len(columns)
    fields = list(columns.values.items())
    parts = np.empty((n, 6 + len(fields)), dtype=object)
    parts[:, 0] = escape_measurement(str(columns.kind.value)) + ",device_id="
    parts[:, 1] = _escaped_column(columns.device_id)
    parts[:, 2] = _site_column(columns.site)
    parts[:, 3] = _tokens(columns.seq, _seq_token)
    for j, (key, values) in enumerate(fields, start=4):
        parts[:, j] = _tokens(values, _field_formatter(key))
    parts[:, -2], parts[:, -1] = _ts_columns(columns.ts_ms)
    return parts


def line_protocol(columns: ReadingColumns) -> str:
    """The line protocol of ``columns``: one line per reading, each ending with a newline.

    See the module docstring for the naming of measurement, tags and fields.
    """
    if not len(columns):
        return ""
    return "".join(_parts(columns).ravel().tolist())


def _batches(columns: Sequence[ReadingColumns], batch_points: int) -> Iterator[tuple[bytes, int]]:
    """Line protocol bodies of at most ``batch_points`` lines, in order, and their line counts.

    Kinds are packed together, so a call with several small kinds makes one request.
    """
    pending: list[str] = []
    count = 0
    for cols in columns:
        n = len(cols)
        if not n:
            continue
        parts = _parts(cols)
        start = 0
        while start < n:
            take = min(n - start, batch_points - count)
            chunk = parts[start : start + take].ravel().tolist()
            start += take
            if not count and take == batch_points:
                yield "".join(chunk).encode(), take
                continue
            pending.extend(chunk)
            count += take
            if count == batch_points:
                yield "".join(pending).encode(), count
                pending, count = [], 0
    if count:
        yield "".join(pending).encode(), count


# ---------------------------------------------------------------------------------------------
# Spool


@dataclass(frozen=True, slots=True)
class _SpoolFile:
    seq: int
    points: int
    path: Path


class _Spool:
    """Append-only directory of line-protocol files, oldest first (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rejected_dir = directory / "rejected"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock_path = directory / ".lock"
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(directory, f"cannot open: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise SpoolError(directory, "in use by another writer") from exc
            raise SpoolError(directory, f"cannot lock: {exc.strerror}") from exc
        self.files: deque[_SpoolFile] = deque()
        for path in sorted(directory.iterdir()):
            if path.name.endswith(_TMP_SUFFIX):
                # A write that never returned: its messages were not acknowledged, the broker
                # delivers them again.
                path.unlink()
                continue
            m = _SPOOL_NAME.match(path.name)
            if m is not None:
                self.files.append(_SpoolFile(int(m[1]), int(m[2]), path))
        self.next_seq = self.files[-1].seq + 1 if self.files else 0
        self.points = sum(f.points for f in self.files)
        self._dirty = False

    def __bool__(self) -> bool:
        return bool(self.files)

    def append(self, body: bytes, points: int) -> None:
        """Write one batch to its file (fsync'ed); :meth:`sync` makes the name durable."""
        name = f"{self.next_seq:016d}-{points}.lp"
        path = self.directory / name
        tmp = path.with_name(name + _TMP_SUFFIX)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.rename(path)
        except OSError as exc:
            raise SpoolError(path, f"cannot write: {exc.strerror}") from exc
        self.files.append(_SpoolFile(self.next_seq, points, path))
        self.next_seq += 1
        self.points += points
        self._dirty = True

    def sync(self) -> None:
        """fsync the directory, so the files appended since the last sync survive a crash."""
        if not self._dirty:
            return
        _fsync_dir(self.directory)
        self._dirty = False

    def read(self, f: _SpoolFile) -> bytes:
        try:
            return f.path.read_bytes()
        except OSError as exc:
            raise SpoolError(f.path, f"cannot read: {exc.strerror}") from exc

    def pop(self) -> _SpoolFile:
        """Forget the oldest file (sent): delete it."""
        f = self.files.popleft()
        self.points -= f.points
        try:
            # No directory fsync: if the removal is lost in a crash, the batch is sent again,
            # which the server takes as the same points.
            f.path.unlink()
        except OSError as exc:
            raise SpoolError(f.path, f"cannot delete: {exc.strerror}") from exc
        return f

    def reject(self) -> _SpoolFile:
        """Move the oldest file (refused by the server) to ``rejected/``."""
        f = self.files.popleft()
        self.points -= f.points
        try:
            self.rejected_dir.mkdir(exist_ok=True)
            f.path.rename(self.rejected_dir / f.path.name)
            _fsync_dir(self.rejected_dir)
            _fsync_dir(self.directory)
        except OSError as exc:
            raise SpoolError(f.path, f"cannot move to rejected/: {exc.strerror}") from exc
        return f

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The writer


@dataclass(frozen=True, slots=True)
class _Transient:
    """A failure worth retrying: the reason (for the log) and the server's Retry-After (s)."""

    reason: str
    retry_after_s: float | None = None


_Result: TypeAlias = _Transient | RejectedBatch | None


class InfluxWriter:
    """Writes reading columns to InfluxDB's v2 write API, spooling to disk while it is away.

    Args:
        url: Base URL of the server (``http://influx:8086``; VictoriaMetrics: ``http://vm:8428``).
        org: InfluxDB organisation (VictoriaMetrics ignores it).
        bucket: InfluxDB bucket (VictoriaMetrics ignores it).
        token: API token (``Authorization: Token …``); None sends no credentials.
        spool_dir: Directory of the durable spool (created if missing).
        batch_points: Points (lines) per request.
        gzip: Compress request bodies (gzip, level 1).
        timeout_s: Timeout of one request, seconds.
        max_retries: Retries of a batch after a 429, 5xx or connection error, before it is
            spooled.
        backoff_base_s: Wait before the first retry, seconds; doubled at each retry.
        backoff_max_s: Longest wait between retries, seconds; a longer ``Retry-After`` spools
            the batch at once.
        clock: Monotonic clock, seconds (schedules :meth:`drain_once` after a failure).
        sleep: Sleeps between retries, seconds.

    Raises:
        ValueError: An argument out of range (the message names it).
        SpoolError: ``spool_dir`` cannot be created, read or locked (another writer uses it).
    """

    def __init__(
        self,
        url: str,
        *,
        org: str,
        bucket: str,
        token: str | None = None,
        spool_dir: str | os.PathLike[str],
        batch_points: int = 5000,
        gzip: bool = True,
        timeout_s: float = 10,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, value, ok in (
            ("batch_points", batch_points, batch_points >= 1),
            ("timeout_s", timeout_s, timeout_s > 0),
            ("max_retries", max_retries, max_retries >= 0),
            ("backoff_base_s", backoff_base_s, backoff_base_s >= 0),
            ("backoff_max_s", backoff_max_s, backoff_max_s >= backoff_base_s),
        ):
            if not ok:
                raise ValueError(f"{name}: {value!r} is out of range")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: {url!r} must start with http:// or https://")
        self.url = url
        self.org = org
        self.bucket = bucket
        self.batch_points = batch_points
        self.gzip = gzip
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._sleep = sleep
        self._spool = _Spool(Path(spool_dir))
        self._client: Any = InfluxDBClient(
            url=url,
            token=token or "",  # empty: no Authorization header
            org=org,
            timeout=round(timeout_s * 1000),
            enable_gzip=False,  # bodies are compressed here, at a cheaper level
            retries=False,  # retries are this class's
        )
        self._service: Any = _WRITE_SERVICE(self._client.api_client)
        self._counters = WriterCounters(spool_backlog_points=self._spool.points)
        self._rejected: list[RejectedBatch] = []
        self._drain_failures = 0
        self._drain_not_before = -math.inf
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        if self._spool:
            log.info(
                "spool %s holds %d points in %d batches from before; drain() sends them",
                self._spool.directory,
                self._spool.points,
                len(self._spool.files),
            )

    # -- public API -----------------------------------------------------------------------------

    def write(self, columns: Sequence[ReadingColumns]) -> WriteOutcome:
        """Write readings; return when each point is written, spooled or rejected.

        While the spool holds anything, points go to the spool (behind what is there), so the
        server receives them in order once :meth:`drain` or :meth:`drain_once` empties it.

        Args:
            columns: Readings, one :class:`ReadingColumns` per kind (any number of rows).

        Returns:
            Points written, spooled, the rejected batches and the retries of this call.

        Raises:
            SpoolError: The spool could not be written: some points of the call may be
                written, the others are not; do not acknowledge the call's messages (writing
                them again is harmless).
        """
        self._check_open()
        outcome = WriteOutcome()
        total = sum(len(c) for c in columns)
        # A call of several batches formats batch k+1 here while batch k is compressed and sent
        # by the sender thread (zlib and the socket release the GIL): one request in flight at
        # a time, so the server still gets the batches in order.
        pipelined = total > self.batch_points
        inflight: Future[tuple[_Result, int]] | None = None
        inflight_batch = (b"", 0)
        try:
            for body, points in _batches(columns, self.batch_points):
                if inflight is not None:
                    self._settle(inflight.result(), *inflight_batch, outcome)
                    inflight = None
                if self._spool:
                    self._spool_batch(body, points, outcome)
                elif pipelined:
                    inflight = self._sender().submit(self._send, body, points, retry=True)
                    inflight_batch = (body, points)
                else:
                    self._settle(self._send(body, points, retry=True), body, points, outcome)
            if inflight is not None:
                self._settle(inflight.result(), *inflight_batch, outcome)
                inflight = None
        finally:
            if inflight is not None:
                # Leaving on an error: let the request in flight end before anything else.
                wait([inflight])
            self._spool.sync()
            self._counters.spool_backlog_points = self._spool.points
        return outcome

    def _settle(
        self, sent: tuple[_Result, int], body: bytes, points: int, outcome: WriteOutcome
    ) -> None:
        """Account for one batch :meth:`_send` dealt with; spool it if the server is away."""
        result, retries = sent
        outcome.retries += retries
        self._counters.retries += retries
        if result is None:
            outcome.points_written += points
            self._counters.points_written += points
        elif isinstance(result, RejectedBatch):
            self._counters.points_rejected += result.points
            outcome.rejected.append(result)
        else:
            self._schedule_drain(result)
            log.warning(
                "InfluxDB at %s unreachable (%s, %d retries): spooling to %s",
                self.url,
                result.reason,
                retries,
                self._spool.directory,
            )
            self._spool_batch(body, points, outcome)

    def _spool_batch(self, body: bytes, points: int, outcome: WriteOutcome) -> None:
        self._spool.append(body, points)
        outcome.points_spooled += points
        self._counters.points_spooled += points

    def _sender(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="influx-sender")
        return self._executor

    def drain_once(self, max_batches: int | None = None) -> int:
        """Try to send the spool, oldest first, one request per batch and no waiting.

        For a periodic call from ingest's worker: after a failure it does nothing until the
        backoff (or the server's ``Retry-After``) has passed on ``clock``.

        Args:
            max_batches: Send at most this many spooled batches (None: all).

        Returns:
            Points the server accepted.
        """
        self._check_open()
        if not self._spool or self._clock() < self._drain_not_before:
            return 0
        return self._drain(retry=False, max_batches=max_batches)

    def drain(self) -> int:
        """Send the whole spool, oldest first, retrying (and sleeping) as :meth:`write` does.

        Stops at the first batch that still fails after the retries (it stays in the spool).

        Returns:
            Points the server accepted.
        """
        self._check_open()
        return self._drain(retry=True, max_batches=None)

    def backlog(self) -> int:
        """Points waiting in the spool."""
        return self._spool.points

    def take_rejected(self) -> list[RejectedBatch]:
        """Spooled batches the server refused while draining (since the last call).

        Their files are kept in ``spool_dir/rejected/``; ingest dead-letters them.
        """
        taken, self._rejected = self._rejected, []
        return taken

    def counters(self) -> WriterCounters:
        """A copy of the counters (safe to call from any thread)."""
        return replace(self._counters)

    def close(self) -> None:
        """Close the HTTP connections and release the spool (whose files stay for later)."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._client.close()
        # The service holds the client's ApiClient too: drop it now, or its __del__ runs again
        # at interpreter shutdown, when urllib3 can no longer clear its pools.
        self._service = None
        self._client = None
        self._spool.close()

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("InfluxWriter is closed")

    def _drain(self, *, retry: bool, max_batches: int | None) -> int:
        sent = 0
        done = 0
        try:
            while self._spool and (max_batches is None or done < max_batches):
                f = self._spool.files[0]
                result, retries = self._send(self._spool.read(f), f.points, retry=retry)
                self._counters.retries += retries
                done += 1
                if result is None:
                    self._spool.pop()
                    sent += f.points
                    self._counters.points_written += f.points
                elif isinstance(result, RejectedBatch):
                    self._spool.reject()
                    self._counters.points_rejected += result.points
                    self._rejected.append(result)
                    log.error(
                        "InfluxDB refused spooled batch %s (%d points, HTTP %d): kept in %s",
                        f.path.name,
                        f.points,
                        result.status,
                        self._spool.rejected_dir,
                    )
                else:
                    self._schedule_drain(result)
                    break
            else:
                self._drain_failures = 0
                self._drain_not_before = -math.inf
        finally:
            self._counters.spool_backlog_points = self._spool.points
        if sent and not self._spool:
            log.info("spool drained: InfluxDB at %s has every point", self.url)
        return sent

    def _schedule_drain(self, failure: _Transient) -> None:
        """After a transient failure: no :meth:`drain_once` before the backoff has passed."""
        wait = self._backoff(self._drain_failures)
        if failure.retry_after_s is not None:
            wait = max(wait, failure.retry_after_s)
        self._drain_failures += 1
        self._drain_not_before = self._clock() + wait

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt, 64)))

    def _send(self, body: bytes, points: int, *, retry: bool) -> tuple[_Result, int]:
        """POST one batch, retrying transient failures when ``retry`` (sleeping between).

        Runs on the sender thread during a pipelined :meth:`write`: it touches no state.

        Returns:
            The last attempt's result, and the number of retries.
        """
        payload = zlib.compress(body, GZIP_LEVEL, wbits=31) if self.gzip else body
        attempt = 0
        while True:
            result = self._post(payload, body, points)
            if not isinstance(result, _Transient) or not retry or attempt >= self.max_retries:
                return result, attempt
            delay = self._backoff(attempt)
            if result.retry_after_s is not None:
                if result.retry_after_s > self.backoff_max_s:
                    return result, attempt
                delay = result.retry_after_s
            self._sleep(delay)
            attempt += 1

    def _post(self, payload: bytes, body: bytes, points: int) -> _Result:
        """One request: None when accepted, else what went wrong."""
        try:
            self._service.post_write(
                org=self.org,
                bucket=self.bucket,
                body=payload,
                precision="ms",
                content_encoding="gzip" if self.gzip else "identity",
                content_type="text/plain; charset=utf-8",
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            text = exc.body if isinstance(exc.body, str) else str(exc.reason or "")
            if status == 429 or status >= 500 or status == 0:
                headers: Any = exc.headers or {}
                return _Transient(
                    f"HTTP {status} {text[:200]}".strip(),
                    _retry_after_s(headers.get("Retry-After"), headers.get("Date")),
                )
            return RejectedBatch(status, text, body, points)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return _Transient(f"{type(exc).__name__}: {exc}")
        return None


def _retry_after_s(value: str | None, date: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date).

    An HTTP date is taken relative to the response's ``Date`` (the server's own clock) when there
    is one, else to this machine's clock. None when absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)
