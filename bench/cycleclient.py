"""Consult cycles over HTTP, in a process of its own: the load of ``python -m bench.cycles``.

``python -m bench.cycleclient CONFIG.json`` reads its configuration from that file and writes one
JSON document (the measurements) on stdout. The harness starts one or more of these processes
so that the clients' CPU is measured apart from the harness and the server.

A *cycle* is one consult from request to acknowledgement, each step depending on the previous
answer (so a Python client, not wrk):

1. ``POST /api/v1/consults`` with ``submit: true`` as a grassroots doctor (the ``two-step``
   variant: ``submit: false``, then ``POST /api/v1/consults/{id}/submit``);
2. ``POST /api/v1/consults/{id}/claim`` as a specialist of that centre;
3. ``POST /api/v1/consults/{id}/reports``: the draft report, structured for the centre;
4. ``POST /api/v1/reports/{id}/sign``;
5. the requesting doctor's feed (``GET /api/v1/events?after=``) delivers ``report.signed`` for
   this consult: one poller per doctor, shared by all that doctor's cycles in flight, as a
   station app polls once for all its cases; the step's latency is from the sign answer to the
   poll answer that carried the event (0 if a poll had already carried it);
6. ``POST /api/v1/events/ack`` with ``up_to`` the id of that event;
7. ``POST /api/v1/consults/{id}/acknowledge`` as the doctor.

Each of the ``cycles`` asyncio tasks runs cycles one after the other (a closed loop) with a fixed
doctor; centres, patients and specialists rotate. All tasks share one keep-alive
``aiohttp.ClientSession``. Times are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process
on the machine), so the harness's window applies here as is: a step counts in the window if its
answer arrived inside it, a cycle if its last step did. At the end of the window no new cycle
starts and the ones in flight finish (the drain), so that the server is not left with requests of
vanished clients.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp

CENTRES = ("ecg", "imaging", "consultation", "lab", "pathology")
#: Step names in the order of a cycle; ``create`` or ``create draft`` + ``submit`` first.
ONE_STEP = ("create", "claim", "report draft", "sign", "event fetched", "events ack", "acknowledge")
TWO_STEP = ("create draft", "submit", *ONE_STEP[1:])
POLL = "poll GET /events"
CYCLE = "whole cycle"
#: Error samples kept for the report.
ERROR_SAMPLES = 5

REPORTS: dict[str, dict[str, Any]] = {
    "ecg": {
        "kind": "ecg",
        "measurements": {
            "hr_bpm": 76,
            "pr_ms": 162,
            "qrs_ms": 94,
            "qt_ms": 384,
            "qtc_ms": 432,
            "qtc_formula": "bazett",
            "qrs_axis_deg": 45,
        },
        "rhythm_statements": ["窦性心律", "T 波低平（V4–V6）"],
        "findings": "窦性心律，心率 76 次/分。V4–V6 导联 T 波低平。",
        "impression": "窦性心律；ST-T 改变，请结合临床。",
        "recommendation": "复查心电图，必要时行动态心电图检查。",
    },
    "imaging": {
        "kind": "imaging",
        "modality": "DX",
        "body_part": "胸部",
        "technique": "后前位胸片",
        "findings": "右下肺见斑片状高密度影，边界模糊。",
        "impression": "右下肺炎，建议抗感染治疗后复查。",
        "recommendation": "两周后复查胸片。",
    },
    "consultation": {
        "kind": "consultation",
        "assessment": "高血压 3 级，很高危；血压控制不佳。",
        "plan": "调整降压方案：氨氯地平 5 mg 每日一次，两周后随访。",
        "findings": "血压 178/96 mmHg，心率 82 次/分。",
        "impression": "高血压 3 级。",
        "recommendation": "低盐饮食，家庭血压监测。",
    },
    "lab": {
        "kind": "lab",
        "results": [
            {
                "code": "GLU",
                "name": "葡萄糖",
                "value": "7.8",
                "unit": "mmol/L",
                "reference_range": "3.9–6.1",
                "flag": "high",
            },
            {
                "code": "K",
                "name": "钾",
                "value": "4.1",
                "unit": "mmol/L",
                "reference_range": "3.5–5.3",
                "flag": "normal",
            },
            {
                "code": "CREA",
                "name": "肌酐",
                "value": "88",
                "unit": "µmol/L",
                "reference_range": "57–111",
                "flag": "normal",
            },
        ],
        "impression": "空腹血糖升高。",
        "recommendation": "复查空腹血糖及糖化血红蛋白。",
    },
    "pathology": {
        "kind": "pathology",
        "specimen": "胃窦活检组织 2 块",
        "gross": "灰白色组织 2 块，直径 0.2 cm。",
        "microscopic": "胃窦黏膜慢性炎，固有层淋巴细胞浸润。",
        "diagnosis": "慢性非萎缩性胃炎。",
        "impression": "慢性非萎缩性胃炎。",
    },
}

QUESTIONS = {
    "ecg": "胸闷一周，心电图 ST-T 改变，请协助诊断",
    "imaging": "咳嗽发热三天，胸片示右下肺阴影，请协助诊断",
    "consultation": "血压控制不佳，请会诊调整用药",
    "lab": "空腹血糖偏高，请协助解读",
    "pathology": "胃镜活检，请出具病理诊断",
}


class CycleError(Exception):
    """A step answered with an unexpected status, or the connection failed."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step


@dataclass
class Tally:
    """What this process measured; samples are (answer time, latency in seconds)."""

    steps: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    errors: list[tuple[float, str]] = field(default_factory=list)
    cycles_started: int = 0
    #: Feed pages whose ``acked_id`` was lower than one this doctor had seen before.
    cursor_moved_back: int = 0


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
        self.session = session
        self.url = url
        self.tally = tally

    async def call(
        self,
        step: str,
        method: str,
        path: str,
        token: str,
        body: dict[str, Any] | None = None,
        expect: int = 200,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        try:
            async with self.session.request(
                method, self.url + path, json=body, headers=headers
            ) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CycleError(step, f"{type(exc).__name__}: {exc}") from None
        done = time.monotonic()
        if status != expect:
            raise CycleError(step, f"HTTP {status}: {data[:300].decode(errors='replace')}")
        self.tally.steps[step].append((done, done - started))
        return json.loads(data)


class Feed:
    """One doctor's event feed: one poller, shared by the doctor's cycles in flight."""

    def __init__(self, client: Client, doctor: dict[str, Any], cfg: dict[str, Any]) -> None:
        self.client = client
        self.token: str = doctor["token"]
        self.after: int = doctor["after"]
        self.interval: float = cfg["poll_interval_s"]
        self.limit: int = cfg["poll_limit"]
        self.mine: set[str] = set()  # consults of this doctor in flight
        self.signed: dict[str, tuple[int, float]] = {}  # seen before anyone waited for it
        self.waiters: dict[str, asyncio.Future[tuple[int, float]]] = {}
        self.wake = asyncio.Event()
        self.max_acked = 0

    async def wait_signed(self, consult_id: str) -> tuple[int, float]:
        """(event id, time the poll carrying it answered) of this consult's ``report.signed``."""
        if consult_id in self.signed:
            return self.signed.pop(consult_id)
        future: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        self.waiters[consult_id] = future
        self.wake.set()
        try:
            return await future
        finally:
            self.waiters.pop(consult_id, None)

    async def run(self) -> None:
        last = 0.0
        while True:
            while not self.waiters:
                self.wake.clear()
                await self.wake.wait()
            pause = last + self.interval - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            last = time.monotonic()
            try:
                page = await self.client.call(
                    POLL,
                    "GET",
                    f"/api/v1/events?after={self.after}&limit={self.limit}",
                    self.token,
                )
            except CycleError as exc:
                self.client.tally.errors.append((time.monotonic(), str(exc)))
                await asyncio.sleep(0.2)
                continue
            seen = time.monotonic()
            if page["acked_id"] < self.max_acked:
                self.client.tally.cursor_moved_back += 1
            self.max_acked = max(self.max_acked, page["acked_id"])
            for item in page["items"]:
                consult_id = item["consult_id"]
                if item["type"] != "report.signed" or consult_id not in self.mine:
                    continue
                # Popped now, not when the cycle resumes, so that no needless poll follows.
                future = self.waiters.pop(consult_id, None)
                if future is not None and not future.done():
                    future.set_result((item["id"], seen))
                else:
                    self.signed[consult_id] = (item["id"], seen)
            self.after = page["next_after"]


@dataclass
class Cast:
    """Who takes part: doctors (each with patients and a feed) and specialists per centre."""

    doctors: list[dict[str, Any]]
    feeds: dict[str, Feed]
    specialists: dict[str, itertools.cycle[dict[str, Any]]]


async def one_cycle(
    client: Client, cast: Cast, doctor: dict[str, Any], patient: str, centre: str, two_step: bool
) -> None:
    token = doctor["token"]
    feed = cast.feeds[doctor["username"]]
    specialist = next(cast.specialists[centre])
    started = time.monotonic()
    body = {
        "patient_id": patient,
        "centre": centre,
        "priority": "urgent" if centre in ("ecg", "lab") else "routine",
        "question": QUESTIONS[centre],
        "clinical_summary": "门诊患者，病史见附件。",
        "submit": not two_step,
    }
    consult = await client.call(
        "create draft" if two_step else "create", "POST", "/api/v1/consults", token, body, 201
    )
    cid = consult["id"]
    feed.mine.add(cid)
    try:
        if two_step:
            await client.call("submit", "POST", f"/api/v1/consults/{cid}/submit", token, {})
        await client.call("claim", "POST", f"/api/v1/consults/{cid}/claim", specialist["token"], {})
        report = await client.call(
            "report draft",
            "POST",
            f"/api/v1/consults/{cid}/reports",
            specialist["token"],
            {"content": REPORTS[centre]},
            201,
        )
        sign = f"/api/v1/reports/{report['id']}/sign"
        await client.call("sign", "POST", sign, specialist["token"])
        signed_at = time.monotonic()
        event_id, seen = await asyncio.wait_for(feed.wait_signed(cid), timeout=60)
        now = time.monotonic()
        client.tally.steps["event fetched"].append((now, max(seen - signed_at, 0.0)))
        await client.call("events ack", "POST", "/api/v1/events/ack", token, {"up_to": event_id})
        await client.call("acknowledge", "POST", f"/api/v1/consults/{cid}/acknowledge", token, {})
    except TimeoutError:
        raise CycleError("event fetched", "report.signed not in the feed after 60 s") from None
    finally:
        feed.mine.discard(cid)
        feed.signed.pop(cid, None)
    done = time.monotonic()
    client.tally.steps[CYCLE].append((done, done - started))


async def cycler(
    index: int, client: Client, cast: Cast, cfg: dict[str, Any], stop_at: float
) -> None:
    doctor = cast.doctors[index % len(cast.doctors)]
    patients = itertools.cycle(doctor["patients"][index % len(doctor["patients"]) :])
    for n in itertools.count(index):
        if time.monotonic() >= stop_at:
            return
        client.tally.cycles_started += 1
        try:
            await one_cycle(
                client,
                cast,
                doctor,
                next(patients),
                CENTRES[n % len(CENTRES)],
                cfg["variant"] == "two-step",
            )
        except CycleError as exc:
            client.tally.errors.append((time.monotonic(), str(exc)))
            await asyncio.sleep(0.2)


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = Client(session, cfg["url"], tally)
        doctors = cfg["doctors"]
        feeds = {d["username"]: Feed(client, d, cfg) for d in doctors}
        cast = Cast(
            doctors=doctors,
            feeds=feeds,
            specialists={c: itertools.cycle(s) for c, s in cfg["specialists"].items()},
        )
        delay = cfg["start_at"] - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        stop_at = cfg["start_at"] + cfg["warmup_s"] + cfg["window_s"]
        pollers = [asyncio.create_task(f.run()) for f in feeds.values()]
        first = cfg["first_cycle"]
        cyclers = [
            asyncio.create_task(cycler(first + i, client, cast, cfg, stop_at))
            for i in range(cfg["cycles"])
        ]
        _done, pending = await asyncio.wait(cyclers, timeout=stop_at - time.monotonic() + 90)
        for task in (*pending, *pollers):
            task.cancel()
        await asyncio.gather(*pending, *pollers, return_exceptions=True)
    window_start = cfg["start_at"] + cfg["warmup_s"]
    window_end = stop_at

    def when(t: float) -> str:
        return "warmup" if t < window_start else "window" if t <= window_end else "drain"

    errors: dict[str, int] = defaultdict(int)
    for t, _ in tally.errors:
        errors[when(t)] += 1
    return {
        "steps": {
            step: [lat for t, lat in samples if window_start <= t <= window_end]
            for step, samples in tally.steps.items()
        },
        "errors": dict(errors),
        "error_samples": [text for _, text in tally.errors[:ERROR_SAMPLES]],
        "cycles_started": tally.cycles_started,
        "cycles_completed": len(tally.steps.get(CYCLE, [])),
        "unfinished": len(pending),
        "cursor_moved_back": tally.cursor_moved_back,
        "after": {name: feed.after for name, feed in feeds.items()},
    }


async def sequential(cfg: dict[str, Any], cycles: int | None = None) -> dict[str, int]:
    """Cycles one after the other (one request in flight at a time, but the feed poller's).

    With ``cycles=None``, one per doctor, each to another centre: this primes a backend, checking
    that the journey works for everyone (patients visible, specialists able to claim) and leaving
    every doctor with an acknowledged feed cursor, as a station that has been in use has. Returns
    the doctors' feed positions. Raises :class:`CycleError` at the first failure."""
    tally = Tally()
    doctors = cfg["doctors"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        client = Client(session, cfg["url"], tally)
        feeds = {d["username"]: Feed(client, d, cfg) for d in doctors}
        cast = Cast(
            doctors=doctors,
            feeds=feeds,
            specialists={c: itertools.cycle(s) for c, s in cfg["specialists"].items()},
        )
        pollers = [asyncio.create_task(f.run()) for f in feeds.values()]
        try:
            for i in range(len(doctors) if cycles is None else cycles):
                doctor = doctors[i % len(doctors)]
                centre = CENTRES[(i + i // len(doctors)) % len(CENTRES)]
                patient = doctor["patients"][(i // len(doctors)) % len(doctor["patients"])]
                await one_cycle(client, cast, doctor, patient, centre, False)
                if tally.errors:
                    raise CycleError("poll", tally.errors[0][1])
        finally:
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
    return {name: feed.after for name, feed in feeds.items()}


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as fh:
        cfg = json.load(fh)
    result = asyncio.run(run(cfg))
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
