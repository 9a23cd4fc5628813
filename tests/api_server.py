"""A real uvicorn server for the alerts API, in a background thread (shared by API tests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request

from starlette.types import ASGIApp

from alerts.api import serve_api
from tests.integration.conftest import free_port

__all__ = ["ApiServer"]


class ApiServer:
    """``serve_api`` in a background thread with its own event loop; stopped by cancelling."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.error: BaseException | None = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(serve_api(self.app, "127.0.0.1", self.port))
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        except OSError as exc:
            self.error = exc

    def __enter__(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/healthz", timeout=1) as r,  # noqa: S310
            ):
                if r.status == 200:
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"the API did not start on {self.url}: {self.error}")

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None
        assert self._task is not None
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
