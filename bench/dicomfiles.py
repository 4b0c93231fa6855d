"""The files of ``bench.dicom``: templates whose UIDs are replaced per instance, and STOW bodies.

Each template is a whole Part-10 file written once with placeholder values of fixed length (the
Study, Series and SOP Instance UIDs, 64 characters each, and a 12-character Patient ID); a fresh
instance is the template with those byte strings replaced by new values of the same length, so
every length in the file stays right and making an instance costs a ``bytes.replace``.

* ``ct-small``: pydicom's bundled ``CT_small.dcm`` (128×128, 16-bit, 39 KB);
* ``ct512``: a 512×512 16-bit CT slice (``bench.render.ct_slice``, 513 KB), for the rendered
  frame and the many-instance 1 GB STOW;
* ``multiframe``: 512×512 16-bit multi-frame secondary capture (``--frames``, 300 by default:
  150 MB), streamed from disk: only its header (before the pixel data) is held in memory.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from bench.render import ct_dataset, ct_slice

#: pydicom's UID root (what ``generate_uid`` uses); 26 characters.
ROOT = "1.2.826.0.1.3680043.8.498."
UID_LENGTH = 64
PLACEHOLDER_STUDY = ROOT + "1" * (UID_LENGTH - len(ROOT))
PLACEHOLDER_SERIES = ROOT + "2" * (UID_LENGTH - len(ROOT))
PLACEHOLDER_SOP = ROOT + "3" * (UID_LENGTH - len(ROOT))
PLACEHOLDER_PATIENT = "PATIENTXXXXX"  # 12 characters
BOUNDARY = "huizhen-bench-6c1f0e9a2b"
MULTIPART_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
SECONDARY_CAPTURE_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
_CHUNK = 1 << 20


class Uids:
    """Fresh UIDs of exactly 64 characters: the root, a kind digit, a per-run random number and
    a counter (no component has a leading zero)."""

    def __init__(self) -> None:
        self.run = secrets.randbelow(9 * 10**11) + 10**11  # 12 digits
        self.counter = count(1)

    def new(self, kind: int) -> str:
        uid = f"{ROOT}{kind}{self.run}{next(self.counter):025d}"
        assert len(uid) == UID_LENGTH
        return uid


def patient_id(number: int) -> str:
    return f"BENCH{number:07d}"


@dataclass(frozen=True, slots=True)
class Template:
    """A Part-10 file with placeholder values: ``head`` in memory, and ``tail_path``/``tail_size``
    the bytes after it on disk (the pixel data of a large file), streamed when sent."""

    name: str
    head: bytes
    tail_path: Path | None = None
    tail_offset: int = 0
    tail_size: int = 0

    @property
    def size(self) -> int:
        return len(self.head) + self.tail_size

    def instance(self, study: str, series: str, sop: str, patient: str) -> bytes:
        """The head of a fresh instance (the whole file when there is no tail)."""
        return (
            self.head.replace(PLACEHOLDER_STUDY.encode(), study.encode())
            .replace(PLACEHOLDER_SERIES.encode(), series.encode())
            .replace(PLACEHOLDER_SOP.encode(), sop.encode())
            .replace(PLACEHOLDER_PATIENT.encode(), patient.encode())
        )

    def tail_chunks(self) -> Iterator[bytes]:
        if self.tail_path is None:
            return
        with self.tail_path.open("rb") as fh:
            fh.seek(self.tail_offset)
            left = self.tail_size
            while left > 0:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    raise RuntimeError("the template file is shorter than it was")
                left -= len(chunk)
                yield chunk


def _placeholders(ds: Dataset) -> Dataset:
    ds.StudyInstanceUID = PLACEHOLDER_STUDY
    ds.SeriesInstanceUID = PLACEHOLDER_SERIES
    ds.SOPInstanceUID = PLACEHOLDER_SOP
    ds.file_meta.MediaStorageSOPInstanceUID = UID(PLACEHOLDER_SOP)
    ds.PatientID = PLACEHOLDER_PATIENT
    return ds


def _whole(name: str, ds: Dataset, path: Path) -> Template:
    _placeholders(ds).save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    for placeholder in (PLACEHOLDER_STUDY, PLACEHOLDER_SERIES, PLACEHOLDER_SOP):
        if placeholder.encode() not in data:
            raise RuntimeError(f"{name}: placeholder missing after writing")
    return Template(name, data)


def ct_small(workdir: Path) -> Template:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return _whole("ct-small", dcmread(path), workdir / "ct-small.dcm")


def ct512(workdir: Path) -> Template:
    return _whole("ct512", ct_dataset(ct_slice()), workdir / "ct512.dcm")


def multiframe(workdir: Path, frames: int) -> Template:
    """A 512×512 16-bit multi-frame file of ``frames`` frames, on disk; its head in memory."""
    slice_ = ct_slice()
    ds = _placeholders(ct_dataset(slice_))
    ds.file_meta.MediaStorageSOPClassUID = UID(SECONDARY_CAPTURE_WORD)
    ds.SOPClassUID = SECONDARY_CAPTURE_WORD
    ds.Modality = "OT"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 40
    ds.BitsStored, ds.HighBit = 16, 15
    stack = np.stack([np.roll(slice_, 3 * k, axis=1) for k in range(frames)])
    ds.PixelData = stack.tobytes()
    ds["PixelData"].VR = "OW"
    del stack
    path = workdir / "multiframe.dcm"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    pixel_bytes = len(ds.PixelData)
    del ds
    size = path.stat().st_size
    head_size = size - pixel_bytes
    with path.open("rb") as fh:
        head = fh.read(head_size)
    if PLACEHOLDER_SOP.encode() not in head:
        raise RuntimeError("multiframe: placeholder missing from the head")
    return Template("multiframe", head, path, head_size, pixel_bytes)


# -- STOW bodies --------------------------------------------------------------------------


@dataclass(slots=True)
class Instance:
    """One instance to send: its head (the fresh bytes) and the template whose tail follows."""

    template: Template
    head: bytes
    study: str
    series: str
    sop: str

    @property
    def size(self) -> int:
        return len(self.head) + self.template.tail_size


@dataclass(slots=True)
class Maker:
    """Fresh instances of templates, in studies and series chosen by the caller."""

    uids: Uids = field(default_factory=Uids)

    def study(self) -> str:
        return self.uids.new(1)

    def series(self) -> str:
        return self.uids.new(2)

    def make(
        self,
        template: Template,
        *,
        study: str | None = None,
        series: str | None = None,
        patient: str = "BENCH0000000",
    ) -> Instance:
        study = study or self.study()
        series = series or self.series()
        sop = self.uids.new(3)
        return Instance(
            template, template.instance(study, series, sop, patient), study, series, sop
        )


_PART_HEAD = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
_CLOSE = f"--{BOUNDARY}--\r\n".encode()


def body_size(instances: Sequence[Instance]) -> int:
    return sum(len(_PART_HEAD) + inst.size + 2 for inst in instances) + len(_CLOSE)


def body_bytes(instances: Sequence[Instance]) -> bytes:
    """A whole multipart/related body in memory (instances without a tail only)."""
    out = bytearray()
    for inst in instances:
        if inst.template.tail_path is not None:
            raise ValueError("stream instances with a tail: body_stream")
        out += _PART_HEAD + inst.head + b"\r\n"
    out += _CLOSE
    return bytes(out)


async def body_stream(instances: Iterator[Instance]) -> AsyncIterator[bytes]:
    """The multipart/related body, part by part; each part's tail read from disk in 1 MiB
    chunks (the client never holds a large instance whole)."""
    for inst in instances:
        yield _PART_HEAD + inst.head
        for chunk in inst.template.tail_chunks():
            yield chunk
        yield b"\r\n"
    yield _CLOSE
