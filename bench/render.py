"""Time to serve one 512×512 16-bit CT frame: ``python -m bench.render``.

A synthetic CT slice (a water-filled body with bone, air and noise; Rescale Intercept -1024,
window 40/400) is written as Explicit VR Little Endian, and, for comparison, RLE Lossless and
JPEG 2000 Lossless. For each file the median wall time, in one thread, of:

* ``read_frame``: the frame's bytes as stored (what WADO-RS ``/frames/1`` sends);
* ``decode_frame``: those bytes decoded to a numpy array;
* ``render JPEG`` / ``render PNG``: the ``rendered`` resource with the file's window;
* ``thumbnail``: the 128×128 JPEG.

Each includes opening and parsing the file (no cache), as a request would. Not a test: nothing
is asserted; the figures depend on the machine and on the codecs installed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from imaging.frames import decode_frame, read_frame
from imaging.render import render, thumbnail

SIDE = 512


def ct_slice(seed: int = 1) -> np.ndarray[Any, np.dtype[np.uint16]]:
    """Stored values (HU + 1024) of a round body of water with a spine, lungs and noise."""
    y, x = np.mgrid[:SIDE, :SIDE]
    r = np.hypot(x - SIDE / 2, y - SIDE / 2)
    hu = np.full((SIDE, SIDE), -1000.0)
    hu[r < SIDE * 0.42] = 40.0
    for cx in (0.33, 0.67):
        hu[np.hypot(x - SIDE * cx, y - SIDE * 0.45) < SIDE * 0.12] = -850.0
    hu[np.hypot(x - SIDE / 2, y - SIDE * 0.72) < SIDE * 0.05] = 900.0
    hu += np.random.default_rng(seed).normal(0, 12, hu.shape)
    stored: np.ndarray[Any, np.dtype[np.uint16]] = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
    return stored


def ct_dataset(pixels: np.ndarray[Any, Any]) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def write_files(root: Path) -> dict[str, Path]:
    pixels = ct_slice()
    files: dict[str, Path] = {}
    for name, syntax in [
        ("native", ExplicitVRLittleEndian),
        ("RLE", RLELossless),
        ("JPEG 2000", JPEG2000Lossless),
    ]:
        ds = ct_dataset(pixels)
        if syntax != ExplicitVRLittleEndian:
            try:
                ds.compress(UID(syntax), pixels)
            except (RuntimeError, ImportError) as exc:  # no encoder installed for it
                print(f"{name}: skipped ({type(exc).__name__}: no encoder)")
                continue
        path = root / f"ct-{name.replace(' ', '')}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files[name] = path
    return files


def median_ms(call: Callable[[], object], runs: int) -> float:
    call()  # warm: imports, plugin discovery, page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30, help="timed runs per figure (default 30)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp))
        steps: list[tuple[str, Callable[[Path], object]]] = [
            ("read_frame", lambda path: read_frame(path, 1)),
            ("decode_frame", lambda path: decode_frame(path, 1)),
            ("render JPEG", lambda path: render(path, 1)),
            ("render PNG", lambda path: render(path, 1, media_type="image/png")),
            ("thumbnail", thumbnail),
        ]
        print(f"512×512 16-bit CT, median of {args.runs} runs, ms (one thread)")
        print(f"{'':14}" + "".join(f"{name:>12}" for name in files))
        for label, step in steps:
            row = [median_ms(partial(step, path), args.runs) for path in files.values()]
            print(f"{label:14}" + "".join(f"{ms:12.2f}" for ms in row))
        sizes = {name: path.stat().st_size for name, path in files.items()}
        print(f"{'file KiB':14}" + "".join(f"{size / 1024:12.0f}" for size in sizes.values()))
        jpeg, png = render(files["native"], 1), render(files["native"], 1, media_type="image/png")
        print(f"rendered sizes: JPEG {len(jpeg) / 1024:.0f} KiB, PNG {len(png) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
