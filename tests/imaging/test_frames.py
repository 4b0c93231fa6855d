"""Frames read as stored and decoded, cross-checked against pydicom reading whole files."""

from __future__ import annotations

import struct
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames, parse_fragments

from imaging.frames import (
    FrameError,
    decode_frame,
    frame_count,
    open_pixels,
    read_frame,
    read_frames,
)
from tests.imaging.dicomfiles import build, bundled
from tests.imaging.pixelfiles import (
    image_dataset,
    write_encapsulated,
    write_large,
    write_large_deflated,
    write_native,
)

T = TypeVar("T")

# pydicom's bundled files (offline, in its wheel) that these tests read: name, frames.
BUNDLED = [
    ("CT_small.dcm", 1),  # Explicit VR Little Endian, 16-bit signed
    ("MR_small.dcm", 1),
    ("MR_small_implicit.dcm", 1),  # Implicit VR Little Endian
    ("MR_small_bigendian.dcm", 1),  # Explicit VR Big Endian (retired), 16-bit
    ("SC_rgb_small_odd_big_endian.dcm", 1),  # big endian, 8-bit RGB in OW words, odd length
    ("ExplVR_BigEnd.dcm", 1),
    ("image_dfl.dcm", 1),  # Deflated Explicit VR Little Endian
    ("rtdose.dcm", 15),  # native multi-frame, 32-bit
    ("SC_ybr_full_422_uncompressed.dcm", 1),  # native YBR_FULL_422: 2 bytes a pixel
    ("examples_palette.dcm", 1),
    ("MR_small_RLE.dcm", 1),  # RLE, with a Basic Offset Table
    ("SC_rgb_rle_2frame.dcm", 2),
    ("SC_rgb_rle_16bit_2frame.dcm", 2),
    ("rtdose_rle.dcm", 15),  # RLE multi-frame, empty Basic Offset Table
    ("JPEG2000.dcm", 1),
    ("MR_small_jp2klossless.dcm", 1),
    ("SC_rgb_gdcm_KY.dcm", 1),  # JPEG 2000, RGB
    ("JPGExtended.dcm", 1),  # 12-bit JPEG (libjpeg)
    ("SC_rgb_jpeg_dcmtk.dcm", 1),  # JPEG baseline, YBR_FULL
    ("SC_rgb_jpeg_gdcm.dcm", 1),  # JPEG lossless SV1
    ("examples_ybr_color.dcm", 30),  # JPEG baseline multi-frame with a Basic Offset Table
    ("MR_small_jpeg_ls_lossless.dcm", 1),
    ("JPEGLSNearLossless_16.dcm", 1),
]


def _reference_frames(path: Path, frames: int) -> list[bytes] | None:
    """Each frame's bytes as pydicom finds them, for little endian files."""
    ds = dcmread(path)
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=frames))
    if not ts.is_little_endian:
        return None
    size = len(ds.PixelData) // frames
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(frames)]


def _fragments(pixel_data: bytes) -> int:
    """How many fragments follow the Basic Offset Table."""
    (bot_length,) = struct.unpack("<I", pixel_data[4:8])
    return int(parse_fragments(pixel_data[8 + bot_length :])[0])


def _as_frames(array: np.ndarray[Any, Any], frames: int) -> list[np.ndarray[Any, Any]]:
    return [array] if frames == 1 else list(array)


@pytest.mark.parametrize(("name", "frames"), BUNDLED)
def test_bundled_frames_match_pydicom(name: str, frames: int) -> None:
    path = bundled(name)
    ds = dcmread(path)
    assert frame_count(path) == frames
    references = _reference_frames(path, frames)
    pixels = _as_frames(ds.pixel_array, frames)
    read = list(read_frames(path, range(1, frames + 1)))
    for number, frame in enumerate(read, start=1):
        assert frame.number == number
        assert frame.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
        assert (frame.rows, frame.columns) == (ds.Rows, ds.Columns)
        assert frame.samples_per_pixel == ds.SamplesPerPixel
        assert frame.bits_allocated == ds.BitsAllocated
        assert frame.photometric_interpretation == ds.PhotometricInterpretation
        if references is not None:
            assert frame.data == references[number - 1]
    for number in sorted({1, frames}):
        decoded = decode_frame(path, number)
        assert decoded.shape == pixels[number - 1].shape
        assert decoded.dtype == pixels[number - 1].dtype
        assert np.array_equal(decoded, pixels[number - 1])


def test_frame_properties_and_media_types() -> None:
    ct = read_frame(bundled("CT_small.dcm"), 1)
    assert (ct.rows, ct.columns, ct.samples_per_pixel, ct.bits_allocated) == (128, 128, 1, 16)
    assert ct.photometric_interpretation == "MONOCHROME2"
    assert not ct.encapsulated
    assert len(ct.data) == 128 * 128 * 2
    assert ct.media_type == "application/octet-stream"
    expected = {
        "SC_rgb_jpeg_dcmtk.dcm": "image/jpeg",
        "MR_small_jpeg_ls_lossless.dcm": "image/jls",
        "JPEG2000.dcm": "image/jp2",
        "MR_small_RLE.dcm": "image/dicom-rle",
    }
    for name, media_type in expected.items():
        frame = read_frame(bundled(name), 1)
        assert frame.encapsulated
        assert frame.media_type == media_type


@pytest.mark.parametrize(("fragments", "has_bot"), [(3, False), (3, True), (1, False)])
def test_several_fragments_per_frame(tmp_path: Path, fragments: int, has_bot: bool) -> None:
    """Frames split over fragments are joined: by the Basic Offset Table, else by markers."""
    source = bundled("examples_ybr_color.dcm")
    ds = dcmread(source)
    originals = list(generate_frames(ds.PixelData, number_of_frames=30))[:4]
    ds.NumberOfFrames = 4
    path = write_encapsulated(
        tmp_path / "split.dcm", ds, originals, fragments_per_frame=fragments, has_bot=has_bot
    )
    stored = dcmread(path)
    items = _fragments(stored.PixelData)
    assert items == 4 * fragments  # really split
    assert [read_frame(path, n).data for n in range(1, 5)] == originals
    reference = stored.pixel_array
    assert np.array_equal(decode_frame(path, 3), reference[2])


def test_single_frame_in_several_fragments(tmp_path: Path) -> None:
    ds = dcmread(bundled("JPEG2000.dcm"))
    (codestream,) = generate_frames(ds.PixelData, number_of_frames=1)
    path = write_encapsulated(tmp_path / "one.dcm", ds, [codestream], fragments_per_frame=5)
    assert _fragments(dcmread(path).PixelData) == 5
    assert read_frame(path, 1).data == codestream
    assert np.array_equal(decode_frame(path, 1), ds.pixel_array)


def test_offset_tables_are_followed(tmp_path: Path) -> None:
    """The tables, not a walk, place the frames: swapped entries swap the frames served."""
    frames = [bytes([n]) * 64 for n in range(1, 4)]
    ds = image_dataset(8, 8, frames=3, bits=8, transfer_syntax="1.2.840.10008.1.2.5")
    path = write_encapsulated(tmp_path / "eot.dcm", ds, frames, extended=True)
    assert [read_frame(path, n).data for n in (1, 2, 3)] == frames
    swapped = dcmread(path)
    offsets = list(struct.unpack("<3Q", swapped.ExtendedOffsetTable))
    offsets[0], offsets[1] = offsets[1], offsets[0]
    swapped.ExtendedOffsetTable = struct.pack("<3Q", *offsets)
    swapped.save_as(tmp_path / "eot-swapped.dcm")
    assert read_frame(tmp_path / "eot-swapped.dcm", 1).data == frames[1]

    # Two fragments a frame and no codestream markers: only the Basic Offset Table can group
    # them; without it the frames are refused rather than guessed.
    for has_bot in (True, False):
        ds = image_dataset(8, 8, frames=3, bits=8, transfer_syntax="1.2.840.10008.1.2.5")
        path = write_encapsulated(
            tmp_path / f"bot-{has_bot}.dcm", ds, frames, fragments_per_frame=2, has_bot=has_bot
        )
        assert _fragments(dcmread(path).PixelData) == 6
        if has_bot:
            assert [read_frame(path, n).data for n in (1, 2, 3)] == frames
        else:
            with pytest.raises(FrameError) as caught:
                read_frame(path, 2)
            assert caught.value.code == "unsupported"


def test_one_bit_frames_not_on_byte_boundaries(tmp_path: Path) -> None:
    pixels = np.random.default_rng(7).integers(0, 2, size=(3, 5, 5), dtype=np.uint8)
    packed = np.packbits(pixels.ravel(), bitorder="little").tobytes()  # 75 bits
    ds = image_dataset(5, 5, frames=3, bits=1)
    path = write_native(tmp_path / "bits.dcm", ds, packed)
    for number in (1, 2, 3):
        frame = read_frame(path, number)
        assert len(frame.data) == 4  # 25 bits, realigned to start on a byte
        assert np.array_equal(decode_frame(path, number), pixels[number - 1])
    assert np.array_equal(decode_frame(path, 2), dcmread(path).pixel_array[1])


def test_deflated_multi_frame(tmp_path: Path) -> None:
    ds = image_dataset(16, 16, frames=4)
    path = write_large_deflated(tmp_path / "dfl.dcm", ds, 4, lambda n: bytes([n]) * 512)
    assert dcmread(path).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    assert read_frame(path, 4).data == bytes([4]) * 512
    assert read_frame(path, 1).data == bytes([1]) * 512
    assert np.array_equal(decode_frame(path, 3), dcmread(path).pixel_array[2])


def test_implicit_vr_under_an_explicit_transfer_syntax() -> None:
    """SC_rgb_jpeg.dcm claims JPEG Baseline (explicit VR) but is written in implicit VR."""
    path = bundled("SC_rgb_jpeg.dcm")
    with pytest.warns(UserWarning, match="Expected explicit VR"):
        ds = dcmread(path)
    with pytest.warns(UserWarning, match="Expected explicit VR"):
        frame = read_frame(path, 1)
    assert frame.encapsulated
    (reference,) = generate_frames(ds.PixelData, number_of_frames=1)
    assert frame.data == reference
    with pytest.warns(UserWarning, match="Expected explicit VR"):
        decoded = decode_frame(path, 1)
    assert np.array_equal(decoded, ds.pixel_array)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test-SR.dcm", "waveform_ecg.dcm"])
def test_no_pixel_data(name: str) -> None:
    for call in (lambda p: frame_count(p), lambda p: read_frame(p, 1)):
        with pytest.raises(FrameError) as caught:
            call(bundled(name))
        assert caught.value.code == "no-pixel-data"
        assert caught.value.status == 404


def test_no_pixel_data_in_a_built_file(tmp_path: Path) -> None:
    path = tmp_path / "sc.dcm"
    path.write_bytes(build())
    with pytest.raises(FrameError, match="no-pixel-data"):
        decode_frame(path, 1)


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("CT_small.dcm", 0),
        ("CT_small.dcm", 2),
        ("CT_small.dcm", -1),
        ("rtdose.dcm", 16),
        ("rtdose_rle.dcm", 16),
        ("MR_small_RLE.dcm", 2),
    ],
)
def test_no_such_frame(name: str, number: int) -> None:
    with pytest.raises(FrameError) as caught:
        read_frame(bundled(name), number)
    assert caught.value.code == "no-such-frame"
    assert caught.value.status == 404
    with pytest.raises(FrameError, match="no-such-frame"):
        decode_frame(bundled(name), number)


def test_frame_number_must_be_an_integer() -> None:
    with open_pixels(bundled("CT_small.dcm")) as source:
        for bad in (True, 1.0, "1"):
            with pytest.raises(FrameError, match="no-such-frame"):
                source.read(bad)  # type: ignore[arg-type]


def test_truncated_pixel_data_is_malformed() -> None:
    with pytest.raises(FrameError) as caught:
        read_frame(bundled("MR_truncated.dcm"), 1)
    assert caught.value.code == "malformed"


def test_video_frames_are_unsupported(tmp_path: Path) -> None:
    ds = image_dataset(8, 8, frames=2, bits=8, transfer_syntax="1.2.840.10008.1.2.4.102")
    path = write_encapsulated(tmp_path / "video.dcm", ds, [b"\0\0\1\xb3" * 8], has_bot=False)
    assert frame_count(path) == 2
    with pytest.raises(FrameError) as caught:
        read_frame(path, 1)
    assert caught.value.code == "unsupported"


def test_undecodable_transfer_syntax_is_unsupported(tmp_path: Path) -> None:
    """A frame pydicom has no decoder for is still served as stored, and refused decoded."""
    # pydicom 3.0 writes no transfer syntax it does not know: write MPEG-2, then make it JPEG XL.
    ds = image_dataset(8, 8, bits=8, transfer_syntax="1.2.840.10008.1.2.4.100")
    path = write_encapsulated(tmp_path / "jxl.dcm", ds, [b"\xff\x0a" * 8])
    data = path.read_bytes().replace(b"1.2.840.10008.1.2.4.100", b"1.2.840.10008.1.2.4.110")
    path.write_bytes(data)
    assert read_frame(path, 1).data == b"\xff\x0a" * 8
    assert read_frame(path, 1).media_type == "image/jxl"
    with pytest.raises(FrameError) as caught:
        decode_frame(path, 1)
    assert caught.value.code == "unsupported"


def test_twelve_bit_jpeg_without_the_gpl_decoder_is_unsupported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pylibjpeg-libjpeg is an opt-in extra (GPL-3.0): without it a 12-bit JPEG Extended frame is
    a clear 406, not a decoding failure; the frame as stored is still served."""
    monkeypatch.setitem(sys.modules, "libjpeg", None)  # as if the extra were not installed
    path = bundled("JPGExtended.dcm")
    with pytest.raises(FrameError) as caught:
        decode_frame(path, 1)
    assert (caught.value.code, caught.value.status) == ("unsupported", 406)
    assert "codecs-gpl" in caught.value.message
    assert next(iter(read_frames(path, [1]))).data  # the codestream itself


def test_corrupt_codestream_is_malformed(tmp_path: Path) -> None:
    ds = dcmread(bundled("SC_rgb_jpeg_dcmtk.dcm"))
    path = write_encapsulated(tmp_path / "bad.dcm", ds, [b"\xff\xd8\xff\xe0" + b"\x00" * 60])
    with pytest.raises(FrameError) as caught:
        decode_frame(path, 1)
    assert caught.value.code == "malformed"


def test_fewer_fragments_than_frames_is_malformed(tmp_path: Path) -> None:
    ds = image_dataset(8, 8, frames=3, bits=8, transfer_syntax="1.2.840.10008.1.2.5")
    path = write_encapsulated(tmp_path / "few.dcm", ds, [b"ab", b"cd"], has_bot=False)
    with pytest.raises(FrameError, match="malformed"):
        read_frame(path, 3)


def test_deflated_garbage_is_malformed(tmp_path: Path) -> None:
    ds = image_dataset(8, 8)
    path = write_large_deflated(tmp_path / "dfl.dcm", ds, 1, lambda n: b"\0" * 128)
    data = bytearray(path.read_bytes())
    header_end = data.index(b"1.2.840.10008.1.2.1.99") + 22
    noise = zlib.compress(np.random.default_rng(3).bytes(4096))[2:]
    path.write_bytes(bytes(data[:header_end]) + noise)
    with pytest.raises(FrameError) as caught:
        read_frame(path, 1)
    assert caught.value.code in ("malformed", "no-pixel-data")


# -- memory -------------------------------------------------------------------------------------

FRAME_SIDE = 1024
FRAME_BYTES = FRAME_SIDE * FRAME_SIDE * 2  # 2 MiB
LARGE_FRAMES = 50  # 100 MiB of pixel data


def _pattern(number: int) -> bytes:
    return bytes([number]) * FRAME_BYTES


@pytest.fixture(scope="module")
def large_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("large")
    files = {
        "native": write_large(
            root / "native.dcm",
            image_dataset(FRAME_SIDE, FRAME_SIDE, frames=LARGE_FRAMES),
            LARGE_FRAMES,
            _pattern,
        ),
        "encapsulated": write_large(
            root / "encapsulated.dcm",
            image_dataset(
                FRAME_SIDE,
                FRAME_SIDE,
                frames=LARGE_FRAMES,
                transfer_syntax="1.2.840.10008.1.2.5",
            ),
            LARGE_FRAMES,
            _pattern,
            encapsulated=True,
        ),
        "deflated": write_large_deflated(
            root / "deflated.dcm",
            image_dataset(FRAME_SIDE, FRAME_SIDE, frames=LARGE_FRAMES),
            LARGE_FRAMES,
            _pattern,
        ),
    }
    yield files
    for path in files.values():
        path.unlink()


def _peak(call: Callable[[], T]) -> tuple[T, int]:
    """The call's result and the most memory it held at once (tracemalloc, numpy included)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak - before


@pytest.mark.parametrize("kind", ["native", "encapsulated", "deflated"])
def test_memory_does_not_grow_with_the_file(large_files: dict[str, Path], kind: str) -> None:
    path = large_files[kind]
    if kind != "deflated":
        assert path.stat().st_size >= 100 * 1024 * 1024
    for number in (1, LARGE_FRAMES // 2, LARGE_FRAMES):
        frame, peak = _peak(lambda n=number: read_frame(path, n))  # type: ignore[misc]
        assert frame.data == _pattern(number)
        assert peak < 3 * FRAME_BYTES, f"frame {number}: {peak} bytes at peak"


def test_decoding_memory_does_not_grow_with_the_file(large_files: dict[str, Path]) -> None:
    pixels, peak = _peak(lambda: decode_frame(large_files["native"], LARGE_FRAMES))
    assert pixels.shape == (FRAME_SIDE, FRAME_SIDE)
    assert int(pixels[0, 0]) == LARGE_FRAMES * 257
    assert peak < 3 * FRAME_BYTES, f"{peak} bytes at peak"
