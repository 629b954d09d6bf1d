"""The one pixel reader: every transfer syntax a clinic may send gives the same counts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from bone_age.data.dicom import (
    DicomReadError,
    header_views,
    pixel_counts,
    read_dataset,
    read_view,
    view_from_text,
)
from bone_age.phantom import generate_cohort
from tests.conftest import SHARED_DICOM, needs_real_dicom


@pytest.fixture(scope="module")
def two_frame(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    generate_cohort(out, subjects=1, seed=3, workers=1, progress=False)
    return next((out / "dicom").glob("*.dcm"))


def _both(path: Path) -> np.ndarray:
    ds = read_dataset(path)
    return np.stack([read_view(path, v, ds) for v in ("anterior", "posterior")])


def _implicit(ds):
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian


def _deflate(ds):
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian


ENCODINGS = {
    "implicit": (_implicit, ImplicitVRLittleEndian),
    "deflate": (_deflate, DeflatedExplicitVRLittleEndian),
    "rle": (lambda ds: ds.compress(RLELossless), RLELossless),
    "jpeg-ls": (lambda ds: ds.compress(JPEGLSLossless), JPEGLSLossless),
    "jpeg2000": (lambda ds: ds.compress(JPEG2000Lossless), JPEG2000Lossless),
}


@pytest.mark.parametrize("name", ENCODINGS)
def test_lossless_transfer_syntaxes_give_identical_counts(name, two_frame, tmp_path):
    encode, syntax = ENCODINGS[name]
    ds = pydicom.dcmread(two_frame)
    encode(ds)
    out = tmp_path / f"{name}.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert read_dataset(out).file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(_both(out), _both(two_frame))


def test_big_endian_gives_identical_counts(two_frame, tmp_path):
    ds = pydicom.dcmread(two_frame)
    ds.PixelData = ds.pixel_array.astype(">u2").tobytes()  # pydicom does not swap OW for us
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    out = tmp_path / "be.dcm"
    pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    assert np.array_equal(_both(out), _both(two_frame))


def test_jpeg_baseline_decodes_close_to_its_8_bit_source(two_frame, tmp_path):
    ds = pydicom.dcmread(two_frame)
    frames = np.round(ds.pixel_array * (255 / ds.pixel_array.max())).astype(np.uint8)

    def jpeg(frame: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=95)
        return buf.getvalue()

    ds.PixelData = encapsulate([jpeg(f) for f in frames])
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = tmp_path / "jpeg.dcm"
    ds.save_as(out, enforce_file_format=True)
    got = _both(out)
    assert got.shape == frames.shape and np.abs(got - frames).max() <= 16  # lossy


def test_signed_pixels_with_rescale_give_the_counts(two_frame, tmp_path):
    ds = pydicom.dcmread(two_frame)
    counts = ds.pixel_array.astype(np.int32)
    ds.PixelRepresentation = 1
    ds.PixelData = (counts - 1000).astype("<i2").tobytes()  # negative stored values
    ds.RescaleIntercept, ds.RescaleSlope = "1000", "1"
    out = tmp_path / "signed.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert np.array_equal(_both(out), _both(two_frame))


def test_monochrome1_counts_are_kept_and_inverted_storage_is_undone(two_frame, tmp_path):
    ref = _both(two_frame)
    assert ref.min() == 0  # a whole-body scan has empty background
    ds = pydicom.dcmread(two_frame)
    ds.PhotometricInterpretation = "MONOCHROME1"  # "display high counts dark": values are counts
    ds.save_as(tmp_path / "m1.dcm", enforce_file_format=True)
    assert np.array_equal(_both(tmp_path / "m1.dcm"), ref)
    # A sender that stored the display values instead (background at the top of the range).
    ds.PixelData = (ds.pixel_array.max() - ds.pixel_array).astype("<u2").tobytes()
    ds.save_as(tmp_path / "m1_inv.dcm", enforce_file_format=True)
    assert np.array_equal(_both(tmp_path / "m1_inv.dcm"), ref)


def test_colour_image_is_refused(two_frame, tmp_path):
    ds = pydicom.dcmread(two_frame)
    ds.NumberOfFrames = 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((1024, 256, 3), np.uint8).tobytes()
    ds.save_as(tmp_path / "rgb.dcm", enforce_file_format=True)
    with pytest.raises(DicomReadError, match="rgb.dcm: colour image"):
        read_view(tmp_path / "rgb.dcm", "anterior")


def test_view_words_in_text_headers():
    assert view_from_text("WB ANT") == "anterior" and view_from_text("Posterior") == "posterior"
    assert view_from_text("WB ANT POST") is None
    ds = pydicom.Dataset()
    ds.SeriesDescription, ds.ImageComments = "Whole body ANT", "POSTERIOR right half"
    assert header_views(ds) == {"anterior", "posterior"}


REAL = ("NM1_UNC", "NM1_RLE", "NM1_JPLL", "NM1_JLSL", "NM1_J2KR")


@needs_real_dicom
def test_real_scan_counts_in_every_syntax():
    counts = {name: pixel_counts(read_dataset(SHARED_DICOM / name)) for name in REAL}
    ref = counts["NM1_UNC"]
    assert ref.shape == (1, 1024, 256) and ref.min() >= 0  # signed storage, non-negative counts
    for name in REAL:
        assert np.array_equal(counts[name], ref), name
