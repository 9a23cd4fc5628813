"""The stop's hard deadline: a stop stuck past it is logged, with where it is stuck, and ended."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from boltwatch.run import StopDeadline

_STUCK = textwrap.dedent(
    """
    import asyncio, logging, threading, time
    from boltwatch.run import StopDeadline

    logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")

    async def hang_forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        asyncio.create_task(hang_forever(), name="stuck-task")
        deadline = StopDeadline(0.5)
        deadline.start()
        deadline.phase = "committing what was received"
        threading.Thread(target=time.sleep, args=(30,), name="busy-store", daemon=True).start()
        await asyncio.sleep(30)  # the stop never ends by itself

    asyncio.run(main())
    """
)


def test_a_stop_stuck_past_the_deadline_is_logged_and_ended() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _STUCK], capture_output=True, text=True, timeout=25, check=False
    )
    assert proc.returncode == 1, proc.stderr
    log = proc.stderr
    assert "stop still running after 0.5 s (committing what was received); exiting anyway" in log
    assert "task stuck-task at hang_forever > Event.wait (locks.py:" in log
    assert "thread busy-store" in log


def test_a_cancelled_deadline_does_nothing() -> None:
    deadline = StopDeadline(0.05)
    assert deadline.remaining_s() == 0.05
    deadline.start()
    deadline.start()  # counting from the first call
    assert deadline.remaining_s() <= 0.05
    deadline.cancel()
    # The timer thread ends without exiting the process (this test would not finish otherwise).
    assert deadline._timer is not None
    deadline._timer.join(1.0)
    assert not deadline._timer.is_alive()
