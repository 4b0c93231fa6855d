"""``huizhen serve`` for ``bench.realtime``, with its collections timed (``bench.gcwatch``).

``HZBENCH_GC=none`` measures the server as it was before its garbage-collection settings: no
``gc.freeze()`` after start-up, Python's default thresholds. Anything else serves as shipped.
"""

from __future__ import annotations

import gc
import os

from aiohttp import web

from bench import gcwatch
from server import cli


async def _leave_heap(app: web.Application) -> None:
    gc.set_threshold(700, 10, 10)


def main() -> int:
    gcwatch.install()
    if os.environ.get("HZBENCH_GC") == "none":
        cli._freeze_heap = _leave_heap
    return cli.main(["serve"])


if __name__ == "__main__":
    raise SystemExit(main())
