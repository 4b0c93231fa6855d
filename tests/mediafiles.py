"""What a recording holds, read back with PyAV's decoders (for the recording tests)."""

from __future__ import annotations

from pathlib import Path

import av


def decoded_frames(path: Path) -> dict[str, list[int]]:
    """Per kind of stream ("video", "audio"), the frames each stream of the file decodes to."""
    with av.open(str(path)) as container:
        counts = {s.index: 0 for s in container.streams}
        for packet in container.demux(*container.streams):
            counts[packet.stream.index] += len(packet.decode())
        kinds: dict[str, list[int]] = {}
        for stream in container.streams:
            kinds.setdefault(stream.type, []).append(counts[stream.index])
        return kinds
