"""What recording a call costs: ``python -m bench.recorder``.

``signalling.media.FileRecorder`` writes a call of ``--members`` participants, each sending
``--seconds`` of 640×480 camera video at 30 frames/s and 48 kHz stereo audio in 20 ms frames,
as the recorder process receives them from aiortc. The camera picture is a textured scene that
pans and has sensor noise, so that the encoder has real work (a flat test card costs next to
nothing). Reported: CPU seconds per second of call (the share of one core the recorder's
encoding takes), and the file's size per minute. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from signalling.media import VIDEO_TIME_BASE, FileRecorder

WIDTH, HEIGHT, RATE = 640, 480, 30
AUDIO_RATE, AUDIO_FRAME = 48000, 960


class Camera(MediaStreamTrack):
    """``seconds`` of a panning, noisy scene, with RTP-like times."""

    kind = "video"

    def __init__(self, seconds: float, seed: int) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        scene = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 4, 3), dtype=np.uint8)
        self.scene = np.kron(scene, np.ones((8, 8, 1), dtype=np.uint8))  # 8×8 blocks, 2× wide
        self.rng = rng
        self.frames = int(seconds * RATE)
        self.sent = 0

    async def recv(self) -> Any:
        if self.sent >= self.frames:
            self.stop()
            raise MediaStreamError
        shift = (self.sent * 2) % WIDTH
        picture = self.scene[:, shift : shift + WIDTH]
        noise = self.rng.integers(0, 3, picture.shape, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture + noise, format="rgb24")
        frame.pts, frame.time_base = self.sent * 3000, VIDEO_TIME_BASE
        self.sent += 1
        await asyncio.sleep(0)
        return frame


class Microphone(MediaStreamTrack):
    kind = "audio"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.frames = int(seconds * AUDIO_RATE / AUDIO_FRAME)
        self.sent = 0

    async def recv(self) -> Any:
        if self.sent >= self.frames:
            self.stop()
            raise MediaStreamError
        t = (np.arange(AUDIO_FRAME) + self.sent * AUDIO_FRAME) / AUDIO_RATE
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        samples = np.repeat(tone, 2).reshape(1, -1)  # packed stereo
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate, frame.time_base = AUDIO_RATE, Fraction(1, AUDIO_RATE)
        frame.pts = self.sent * AUDIO_FRAME
        self.sent += 1
        await asyncio.sleep(0)
        return frame


async def record(path: Path, members: int, seconds: float) -> tuple[float, float]:
    """CPU and wall seconds to write the call."""
    tracks: list[MediaStreamTrack] = []
    for member in range(members):
        tracks += [Camera(seconds, member), Microphone(seconds)]
    recorder = FileRecorder(path)
    for track in tracks:
        recorder.add(track, await track.recv())
    cpu, wall = time.process_time(), time.perf_counter()
    recorder.start()
    await asyncio.wait(recorder.tasks)
    await recorder.stop()
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recorder", description=__doc__)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "call.mp4"
        cpu, wall = asyncio.run(record(path, args.members, args.seconds))
        size = path.stat().st_size
    print(
        f"{args.members} members, {args.seconds:g} s of call: "
        f"{cpu / args.seconds:.2f} CPU s per s of call ({cpu:.1f} s CPU, {wall:.1f} s wall), "
        f"{size / args.seconds * 60 / 1e6:.1f} MB per minute"
    )


if __name__ == "__main__":
    main()
