"""The call's quality monitor (web/src/call/quality.ts) on a clock and a connection the test
controls: bundled with the web app's own bundler (rolldown) and run in Node, sample by sample.

Chromium's own statistics are what the browser tests (test_video_modes, test_video_reconnect)
feed it; here each rule is checked alone: three poor samples in a row step down, to the mildest
mode they ask for; nothing is judged while the estimate warms up, in the 10 s after ICE comes
back from an outage, or in the 30 s after the user chose a mode.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
ROLLDOWN = WEB / "node_modules" / ".bin" / "rolldown"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not ROLLDOWN.exists(),
    reason="needs node and the web app's node_modules (make web)",
)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[object]]]:
    bundle = tmp_path_factory.mktemp("quality") / "quality.mjs"
    subprocess.run(
        [
            str(ROLLDOWN),
            "src/call/quality.ts",
            "--format",
            "esm",
            "--platform",
            "node",
            "-o",
            str(bundle),
        ],
        cwd=WEB,
        check=True,
        capture_output=True,
        timeout=120,
    )
    script = Path(__file__).with_name("quality_monitor.mjs")
    done = subprocess.run(
        ["node", str(script), str(bundle)], check=True, capture_output=True, text=True, timeout=60
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return {line["name"]: line["downs"] for line in lines}


def test_three_poor_samples_step_down_to_the_mode_they_ask_for(
    outcomes: dict[str, list[list[object]]],
) -> None:
    assert outcomes["lossy after warm-up"] == [[7, "low"]]
    assert outcomes["starved after warm-up"] == [[7, "audio"]]


def test_nothing_is_judged_while_the_estimate_warms_up(
    outcomes: dict[str, list[list[object]]],
) -> None:
    assert outcomes["lossy during warm-up"] == []


def test_poor_samples_must_come_in_a_row(outcomes: dict[str, list[list[object]]]) -> None:
    assert outcomes["two poor samples are not a run"] == []


def test_an_outage_is_not_judged_as_a_poor_network(
    outcomes: dict[str, list[list[object]]],
) -> None:
    """ICE is back at sample 8. The four starved samples then would take the call to 仅语音 for
    good (the monitor never steps up); they fall in the 10 s hold, which ends at sample 13. The
    lossy run from 12 on is judged from 13: 低带宽 at 15."""
    assert outcomes["back from an outage"] == [[15, "low"]]


def test_the_user_s_choice_is_left_alone_for_30_seconds(
    outcomes: dict[str, list[list[object]]],
) -> None:
    # Chosen at sample 6 (after five good ones): samples 6 to 20 are 30 s; the run ends at 14.
    assert outcomes["the user chose"] == []
