"""Received WebRTC tracks written into one recording file, and the check that a file plays.

``FileRecorder`` is like aiortc's MediaRecorder, made for a recording that must survive what a
real call does to timestamps and to the process that writes it:

- Each video stream takes its size from a first frame before anything is written (PyAV writes
  the header, for every stream at once, with the first packet); later frames of another size (a
  low-bandwidth mode) are scaled to it.
- Frame times come from the track's own clock (RTP), rebased to zero, in a time base as fine as
  that clock (1/90000 for video), and are made strictly increasing (``Timeline``). Two frames
  closer than a frame period, a frame that comes back in time, or audio that overlaps the last
  frame would otherwise give the MP4 muxer a repeated or decreasing timestamp; it refuses the
  packet, and aiortc's MediaRecorder then loses the rest of that stream and the file's index.
- A packet the muxer still refuses is counted and dropped; the stream goes on.
- The file is fragmented MP4 (a fragment every keyframe, two seconds apart, or every two seconds
  for audio alone): if the recorder dies before it finishes, what it wrote up to the last
  fragment still plays. ``stop`` flushes the encoders and closes the file whatever fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

#: Video time base: RTP's video clock, so that no two distinct frame times collapse into one.
VIDEO_TIME_BASE = Fraction(1, 90000)
#: Nominal frame rate (the encoder's rate control and a frame without a time use it).
FRAME_RATE = 30
#: A keyframe, and so a fragment, every two seconds.
KEYFRAME_EVERY = 2 * FRAME_RATE
#: A clock that jumps back by more than this (a sender that restarted) is followed from there.
MAX_STEP_BACK = Fraction(1)

#: The recorder encodes beside the server: ``veryfast`` takes half the CPU of x264's default
#: preset. The cap keeps a noisy camera from filling the disk; a WebRTC camera sends about as
#: much (``python -m bench.recorder``, docs/benchmarks.md).
H264_OPTIONS = {"preset": "veryfast", "maxrate": "1M", "bufsize": "2M"}

MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": "2000000",  # microseconds: the limit for audio alone
    "flush_packets": "1",  # each fragment reaches the file when it is complete
}


@dataclass
class Timeline:
    """Times of one stream's frames, in its time base: from the track's clock, rebased to zero,
    strictly increasing, each frame at or after the end of the one before.

    A frame with no time follows the last by one nominal frame (or at its end, if later). A
    frame that starts before the last one ended is moved to its end; one that goes back by more
    than ``MAX_STEP_BACK`` means the sender's clock restarted, and times are counted on from the
    last frame."""

    time_base: Fraction
    #: The nominal length of one frame, in the time base.
    nominal: int
    origin: int | None = None
    last: int | None = None
    #: Where the last frame ended (video: one tick after it; audio: after its samples).
    end: int = 0
    #: Frames moved to keep the times increasing.
    moved: int = 0

    def place(self, pts: int | None, time_base: Fraction | None, length: int = 1) -> int:
        t = None if pts is None else _rescale(pts, time_base or self.time_base, self.time_base)
        if self.last is None:
            self.origin = t if t is not None else 0
            placed = 0
        elif t is None:
            placed = max(self.last + self.nominal, self.end)
        else:
            assert self.origin is not None
            placed = t - self.origin
            if placed < self.last - int(MAX_STEP_BACK / self.time_base):
                self.origin = t - self.end  # the sender's clock restarted
                placed = self.end
            if placed < self.end:
                self.moved += 1
                placed = self.end
        self.last, self.end = placed, placed + max(length, 1)
        return placed


def _rescale(pts: int, source: Fraction, target: Fraction) -> int:
    if source == target:
        return pts
    return round(pts * source / target)


@dataclass
class _Entry:
    track: MediaStreamTrack
    stream: Any
    first: Any
    timeline: Timeline


class FileRecorder:
    """Received tracks into one file: H.264 video and AAC audio in fragmented MP4, one stream
    per track. ``add`` each track with its first frame, ``start``, and ``stop`` at the end."""

    def __init__(self, path: str | Path) -> None:
        self.container = av.open(str(path), mode="w", format="mp4", options=MP4_OPTIONS)
        self.entries: list[_Entry] = []
        self.tasks: list[asyncio.Task[None]] = []
        #: Packets the muxer refused (dropped; the stream went on).
        self.refused = 0
        self._closed = False

    def add(self, track: MediaStreamTrack, first: Any) -> None:
        stream: Any
        if track.kind == "video":
            stream = self.container.add_stream("libx264", rate=FRAME_RATE)
            stream.pix_fmt = "yuv420p"
            stream.width, stream.height = first.width, first.height
            stream.codec_context.time_base = VIDEO_TIME_BASE
            stream.codec_context.gop_size = KEYFRAME_EVERY
            stream.codec_context.options = H264_OPTIONS
            timeline = Timeline(VIDEO_TIME_BASE, int(1 / (FRAME_RATE * VIDEO_TIME_BASE)))
        else:
            rate = first.sample_rate or 48000
            stream = self.container.add_stream("aac", rate=rate)
            timeline = Timeline(Fraction(1, rate), first.samples or 960)
        self.entries.append(_Entry(track, stream, first, timeline))

    @property
    def moved(self) -> int:
        """Frames whose time was moved to keep the stream's times increasing."""
        return sum(e.timeline.moved for e in self.entries)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(entry)) for entry in self.entries]

    def write(self, entry: _Entry, frame: Any) -> None:
        """Encode one frame at its place on the stream's timeline, and mux what comes out."""
        stream, timeline = entry.stream, entry.timeline
        if entry.track.kind == "video":
            pts = timeline.place(frame.pts, frame.time_base)
            if (frame.width, frame.height) != (stream.width, stream.height):
                frame = frame.reformat(width=stream.width, height=stream.height)
        else:
            pts = timeline.place(frame.pts, frame.time_base, frame.samples)
        frame.pts, frame.time_base = pts, timeline.time_base
        self._mux(stream.encode(frame))

    def _mux(self, packets: list[Any]) -> None:
        for packet in packets:
            try:
                self.container.mux(packet)
            except (av.error.FFmpegError, ValueError) as exc:
                self.refused += 1
                if self.refused == 1:
                    log.warning("recording: the muxer refused a packet (%s); dropped", exc)

    async def _run(self, entry: _Entry) -> None:
        frame = entry.first
        while True:
            self.write(entry, frame)
            try:
                frame = await entry.track.recv()
            except MediaStreamError:
                return

    async def stop(self) -> None:
        """Stop reading, flush every encoder, and close the file (even if a flush fails)."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:
                    log.exception("recording: a stream failed")
        try:
            for entry in self.entries:
                try:
                    self._mux(entry.stream.encode(None))
                except (av.error.FFmpegError, ValueError):
                    log.exception("recording: flushing a %s stream failed", entry.track.kind)
        finally:
            self.close()
        if self.refused or self.moved:
            log.info("recording: %d frames retimed, %d packets refused", self.moved, self.refused)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.container.close()
