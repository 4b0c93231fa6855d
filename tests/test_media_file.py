"""The recording file: frame times as a real call gives them, a recorder that dies, and the check
the server makes before it attaches a recording.

Tracks here are aiortc ``MediaStreamTrack``s that hand out PyAV frames with the times a test
gives them (as aiortc's receivers do, from RTP); the file is written by ``FileRecorder`` and read
back with PyAV's decoders.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from hypothesis import given
from hypothesis import strategies as st

from signalling.media import VIDEO_TIME_BASE, FileRecorder, Timeline
from signalling.mp4 import playable_length
from tests.mediafiles import decoded_frames

ROOT = Path(__file__).resolve().parent.parent


class Timed(MediaStreamTrack):
    """Frames at the given times (RTP clock: 90 kHz video, 48 kHz audio), then the end."""

    def __init__(
        self, kind: str, stamps: list[int | None], sizes: list[tuple[int, int]] | None = None
    ):
        super().__init__()
        self.kind = kind
        self.stamps = list(stamps)
        self.sizes = list(sizes or [(320, 240)] * len(stamps))

    async def recv(self) -> Any:
        if not self.stamps:
            self.stop()
            raise MediaStreamError
        await asyncio.sleep(0)
        pts = self.stamps.pop(0)
        frame: Any
        if self.kind == "video":
            width, height = self.sizes.pop(0)
            pixels = np.zeros((height, width, 3), np.uint8)  # a square moves across: no scene cut
            at = len(self.stamps) % (width - 16)
            pixels[height // 2 : height // 2 + 16, at : at + 16] = 200
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.time_base = VIDEO_TIME_BASE
        else:
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 960 * 2), np.int16), format="s16", layout="stereo"
            )
            frame.sample_rate = 48000
            frame.time_base = Fraction(1, 48000)
        frame.pts = pts
        return frame


async def record(path: Path, *tracks: Timed) -> FileRecorder:
    recorder = FileRecorder(path)
    for track in tracks:
        recorder.add(track, await track.recv())
    recorder.start()
    await asyncio.wait(recorder.tasks)  # every track ended
    await recorder.stop()
    return recorder


# -- frame times -------------------------------------------------------------------------------


def test_times_start_at_zero_and_keep_the_clock_s_spacing() -> None:
    timeline = Timeline(VIDEO_TIME_BASE, 3000)
    start = 4_000_000_000
    assert [timeline.place(start + i * 3003, VIDEO_TIME_BASE) for i in range(4)] == [
        0,
        3003,
        6006,
        9009,
    ]
    assert timeline.moved == 0


def test_frames_closer_than_one_tick_or_out_of_order_are_moved_after_the_last() -> None:
    timeline = Timeline(VIDEO_TIME_BASE, 3000)
    placed = [timeline.place(t, VIDEO_TIME_BASE) for t in (100, 3100, 3100, 3000, 6100)]
    assert placed == [0, 3000, 3001, 3002, 6000]
    assert timeline.moved == 2


def test_audio_that_overlaps_the_last_frame_starts_where_it_ended() -> None:
    timeline = Timeline(Fraction(1, 48000), 960)
    placed = [timeline.place(t, Fraction(1, 48000), 960) for t in (0, 960, 1500, 5000)]
    assert placed == [0, 960, 1920, 5000]  # a gap is kept: it is real time with no sound
    assert timeline.moved == 1


def test_a_clock_that_restarts_is_followed_from_the_last_frame() -> None:
    timeline = Timeline(VIDEO_TIME_BASE, 3000)
    first = [timeline.place(t, VIDEO_TIME_BASE) for t in (900_000, 903_000)]
    # The sender restarted: its clock is back near zero, two seconds before where it was.
    after = [timeline.place(t, VIDEO_TIME_BASE) for t in (720_000, 723_000)]
    assert first == [0, 3000]
    assert after == [3001, 6001]


def test_a_frame_without_a_time_follows_by_one_nominal_frame() -> None:
    timeline = Timeline(VIDEO_TIME_BASE, 3000)
    assert [timeline.place(t, None) for t in (None, None, 9000)] == [0, 3000, 9000]


def test_times_in_another_time_base_are_rescaled() -> None:
    timeline = Timeline(VIDEO_TIME_BASE, 3000)
    millis = Fraction(1, 1000)
    assert [timeline.place(t, millis) for t in (5000, 5033, 5066)] == [0, 2970, 5940]


@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 2**32)), st.integers(1, 2000)),
        min_size=1,
        max_size=60,
    )
)
def test_every_frame_starts_at_or_after_the_end_of_the_one_before(
    frames: list[tuple[int | None, int]],
) -> None:
    timeline = Timeline(Fraction(1, 48000), 960)
    end = 0
    for pts, length in frames:
        placed = timeline.place(pts, Fraction(1, 48000), length)
        assert placed >= end
        end = placed + length


# -- the file ----------------------------------------------------------------------------------


async def test_a_call_s_uneven_times_are_all_recorded(tmp_path: Path) -> None:
    """Two frames 1 ms apart (a burst after a stall), one that comes back in time, a change of
    size (the sender's low-bandwidth mode), and audio that overlaps itself: every frame is in
    the file, and the file plays. aiortc's MediaRecorder lost the rest of the video stream at
    the first of these, and the file with it (the muxer refused a repeated time, the flush at
    the end failed, and the index was never written)."""
    start = 1_234_567
    video_stamps: list[int | None] = [start + i * 3000 for i in range(30)]
    video_stamps += [start + 29 * 3000 + 90, start + 28 * 3000]
    video_stamps += [start + (32 + i) * 3000 for i in range(30)]
    sizes = [(320, 240)] * 40 + [(160, 120)] * 22
    audio_stamps: list[int | None] = [i * 960 for i in range(50)]
    audio_stamps += [(40 + i) * 960 for i in range(50)]
    path = tmp_path / "call.mp4"

    recorder = await record(path, Timed("video", video_stamps, sizes), Timed("audio", audio_stamps))

    assert recorder.refused == 0
    assert recorder.moved > 0
    assert playable_length(path) == path.stat().st_size
    frames = await asyncio.to_thread(decoded_frames, path)
    assert frames["video"] == [62]
    # 100 frames of 960 samples in frames of 1024, plus the encoder's priming frame.
    assert frames["audio"][0] >= 100 * 960 // 1024


async def test_two_members_make_two_video_streams(tmp_path: Path) -> None:
    path = tmp_path / "two.mp4"
    await record(
        path,
        Timed("video", [i * 3000 for i in range(20)]),
        Timed("video", [7 + i * 3000 for i in range(25)], [(640, 480)] * 25),
    )
    with av.open(str(path)) as container:
        sizes = [(s.codec_context.width, s.codec_context.height) for s in container.streams.video]
    assert sizes == [(320, 240), (640, 480)]
    assert (await asyncio.to_thread(decoded_frames, path))["video"] == [20, 25]


DIES = textwrap.dedent(
    """
    import asyncio, os, sys
    sys.path.insert(0, {root!r})
    from tests.test_media_file import Timed
    from signalling.media import FileRecorder

    async def main():
        recorder = FileRecorder(sys.argv[1])
        frames = int(sys.argv[2])
        video = Timed("video", [i * 3000 for i in range(frames)])
        audio = Timed("audio", [i * 960 for i in range(frames * 5 // 3)])
        for track in (video, audio):
            recorder.add(track, await track.recv())
        recorder.start()
        await asyncio.wait(recorder.tasks)
        os._exit(9)  # no stop, no close: as if killed

    asyncio.run(main())
    """
)


def _dies_after(path: Path, frames: int) -> None:
    script = DIES.format(root=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script, str(path), str(frames)], timeout=120)
    assert done.returncode == 9


async def test_a_recorder_that_dies_leaves_what_it_recorded_up_to_its_last_fragment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "died.mp4"
    await asyncio.to_thread(_dies_after, path, 200)  # 6.7 s of video; a fragment every 2 s
    assert playable_length(path) == path.stat().st_size
    frames = await asyncio.to_thread(decoded_frames, path)
    assert 120 <= frames["video"][0] < 200
    assert frames["audio"][0] > 0


async def test_a_recorder_that_dies_before_its_first_fragment_leaves_nothing_to_attach(
    tmp_path: Path,
) -> None:
    path = tmp_path / "early.mp4"
    await asyncio.to_thread(_dies_after, path, 20)
    assert path.stat().st_size > 0  # the header is there
    assert playable_length(path) == 0


# -- what the server attaches ------------------------------------------------------------------


def _plain_mp4(path: Path, frames: int) -> None:
    container = av.open(str(path), mode="w", format="mp4")
    stream: Any = container.add_stream("mpeg4", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()


def test_a_complete_plain_mp4_plays_whole(tmp_path: Path) -> None:
    path = tmp_path / "plain.mp4"
    _plain_mp4(path, 10)
    assert playable_length(path) == path.stat().st_size


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not an mp4 file at all",
        b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",  # a header and nothing else
        b"\x00\x00\x00\x08moov\x00\x00\x00\x08mdat",  # an index and empty media
        b"\x00\x00\x00\x08moov\x00\x00\x01\x00mdat" + b"\x00" * 16,  # media cut short
        b"\x00\x00\x00\x08moov\x00\x00\x00\x01mdat" + b"\x00" * 8,  # a 64-bit size that lies
        b"\x00\x00\x00\x10mdat" + b"\x01" * 8,  # media without an index
    ],
)
def test_files_that_do_not_play_have_nothing_that_plays(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    assert playable_length(path) == 0


def test_a_fragmented_file_cut_mid_fragment_keeps_its_complete_fragments(tmp_path: Path) -> None:
    path = tmp_path / "whole.mp4"
    asyncio.run(record(path, Timed("video", [i * 3000 for i in range(150)])))
    whole = path.read_bytes()
    last_media = whole.rindex(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: last_media + 100])  # into the last fragment's media
    length = playable_length(cut)
    assert length == whole.rindex(b"moof") - 4  # up to the last complete fragment
    cut.write_bytes(whole[:length])
    assert 0 < decoded_frames(cut)["video"][0] < 150
