"""The one image loading path: real DICOM files, synthetic files with known answers, and every error case."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import CTImageStorage, generate_uid

from monai_modan.data.readers import (
    FramePolicy,
    ImageLoadError,
    LoadGrayscaleImage,
    LoadGrayscaleImaged,
    WindowPolicy,
    _npz_array,
    dicom_to_grayscale,
    load_grayscale,
)

BT601 = np.array([0.299, 0.587, 0.114])
FULL_RANGE = (0.0, 100.0)  # percentiles that make robust min-max a plain min-max, for exact oracles


# ------------------------------------------------------------------------------------------------ helpers


def minmax(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return (a - a.min()) / (a.max() - a.min())


def dicom_linear_window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window, output scaled to [0, 1] (independent of pydicom)."""
    return np.clip((np.asarray(x, np.float64) - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **attrs) -> Path:
    """A minimal CT-like DICOM file (Explicit VR Little Endian) with the given pixels and attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.set_pixel_data(pixels, photometric, bits)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def real_dicom_files(dicom_dir: Path) -> list[Path]:
    return sorted(p for p in dicom_dir.rglob("*") if p.is_file() and p.suffix != ".csv")


# ------------------------------------------------------------------------------------------ real DICOM data


def test_every_real_dicom_file_loads(dicom_dir):
    files = real_dicom_files(dicom_dir)
    assert len(files) == 40
    loader = LoadGrayscaleImage(spatial_size=64)
    for path in files:
        image = loader(path)
        assert isinstance(image, MetaTensor) and image.dtype == torch.float32, path
        assert tuple(image.shape) == (1, 64, 64), path
        assert torch.isfinite(image).all(), path
        assert image.min() >= 0 and image.max() <= 1, path
        assert image.std() > 0.01, f"{path}: (nearly) constant"
        assert image.meta["filename_or_obj"] == str(path)


def test_orientation_matches_pixel_array_not_transposed(dicom_dir):
    path = dicom_dir / "pydicom_test_files" / "MR_small.dcm"
    pixels = pydicom.dcmread(path).pixel_array
    assert not np.array_equal(pixels, pixels.T)  # the check below can tell the two orientations apart
    image = LoadGrayscaleImage(spatial_size=None, window="minmax", percentiles=FULL_RANGE)(path)
    assert tuple(image.shape) == (1, 64, 64)
    np.testing.assert_allclose(image[0].numpy(), minmax(pixels), atol=1e-6)
    assert not np.allclose(image[0].numpy(), minmax(pixels.T), atol=0.05)


def test_non_square_synthetic_dicom_keeps_rows_and_columns(tmp_path):
    pixels = np.full((20, 30), 100, np.uint16)
    pixels[:4, :6] = 4000  # bright top-left corner
    path = write_dicom(tmp_path / "corner.dcm", pixels)
    native = load_grayscale(path)
    assert native.shape == (20, 30)
    assert native[:4, :6].min() == 1.0 and native[4:, 6:].max() == 0.0
    resized = LoadGrayscaleImage(spatial_size=(40, 60))(path)[0]
    assert tuple(resized.shape) == (40, 60)
    assert resized[0, 0] == 1.0 and resized[-1, -1] == 0.0
    # no suffix at all: recognised by the "DICM" preamble
    for name in ("corner", "1.2.840.10008.5"):  # no suffix / a UID as file name: recognised by content
        (tmp_path / name).write_bytes(path.read_bytes())
        np.testing.assert_array_equal(load_grayscale(tmp_path / name), native)


def test_monochrome1_is_inverted_synthetic(tmp_path):
    pixels = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 10
    mono2 = write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2")
    mono1 = write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")
    for window in WindowPolicy:
        dark, bright = load_grayscale(mono2, window=window), load_grayscale(mono1, window=window)
        np.testing.assert_allclose(bright, 1.0 - dark, atol=1e-6)
    windowed = dict(WindowCenter=800, WindowWidth=1000)
    dark = load_grayscale(write_dicom(tmp_path / "w2.dcm", pixels, "MONOCHROME2", **windowed))
    bright = load_grayscale(write_dicom(tmp_path / "w1.dcm", pixels, "MONOCHROME1", **windowed))
    np.testing.assert_allclose(dark, dicom_linear_window(pixels, 800, 1000), atol=1e-6)  # window, then invert
    np.testing.assert_allclose(bright, 1.0 - dark, atol=1e-6)


@pytest.mark.parametrize(
    "relative", ["pydicom_data/RG1_J2KI.dcm", "pydicom_test_files/dicomdirtests/77654033/CR1/6154"]
)
def test_monochrome1_real_radiographs(dicom_dir, relative):
    ds = pydicom.dcmread(dicom_dir / relative)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    values = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    shown = dicom_linear_window(values, float(ds.WindowCenter), float(ds.WindowWidth))
    grey = dicom_to_grayscale(ds)
    assert grey.shape == ds.pixel_array.shape and grey.dtype == np.float32
    np.testing.assert_allclose(grey, 1.0 - shown, atol=1e-5)
    assert np.abs(grey - shown).mean() > 0.1  # really inverted, not a near-symmetric accident


def test_rescale_and_window_synthetic_ct(tmp_path):
    hu = np.linspace(-1000, 1000, 100).reshape(10, 10)
    hu.flat[:3] = [40, -1000, 1000]
    stored = np.rint((hu + 1024) / 2).astype(np.int16)  # HU = 2 * stored - 1024
    path = write_dicom(
        tmp_path / "ct.dcm", stored, bits=16, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400
    )
    grey = load_grayscale(path)
    assert grey.flat[0] == pytest.approx(0.5, abs=2e-3)  # the window centre is mid-grey
    assert grey.flat[1] == 0.0 and grey.flat[2] == 1.0
    assert np.all(grey[hu < -160] == 0) and np.all(grey[hu > 240] == 1)
    np.testing.assert_allclose(grey, dicom_linear_window(2.0 * stored - 1024, 40, 400), atol=1e-6)
    fixed = load_grayscale(path, window="fixed", fixed_window=(0, 2000))  # the whole -1000..1000 HU range
    np.testing.assert_allclose(fixed, np.clip((2.0 * stored - 1024 + 1000) / 2000, 0, 1), atol=1e-6)
    np.testing.assert_allclose(load_grayscale(path, window="minmax", percentiles=FULL_RANGE), minmax(stored), 1e-6)


def test_voi_lut_sequence_preferred_over_window(tmp_path):
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    lut = (np.sqrt(np.arange(256) / 255) * 255).astype(int)  # a gamma-like VOI LUT
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 8])  # LUT Descriptor: entries, first mapped value, bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    path = write_dicom(tmp_path / "lut.dcm", pixels, bits=8, WindowCenter=10, WindowWidth=4, VOILUTSequence=[item])
    np.testing.assert_allclose(load_grayscale(path), lut[pixels] / lut.max(), atol=1e-6)


def test_enhanced_multiframe_window_from_functional_groups(dicom_dir):
    ds = pydicom.dcmread(dicom_dir / "pydicom_data" / "eCT_Supplemental.dcm")
    assert "WindowCenter" not in ds and "RescaleIntercept" not in ds  # only in the functional groups
    hu = ds.pixel_array[1].astype(np.float64) - 1024  # middle of 2 frames = index 1
    np.testing.assert_allclose(dicom_to_grayscale(ds), dicom_linear_window(hu, 49, 102), atol=1e-6)


def test_rgb_ultrasound_to_luma(dicom_dir):
    path = dicom_dir / "pydicom_data" / "US1_UNCR.dcm"
    rgb = pydicom.dcmread(path).pixel_array
    assert rgb.shape == (480, 640, 3)
    np.testing.assert_allclose(load_grayscale(path), rgb @ BT601 / 255.0, atol=1e-6)


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm"])
def test_palette_colour_to_luma(dicom_dir, name):
    ds = pydicom.dcmread(dicom_dir / "pydicom_data" / name)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    rgb = apply_color_lut(ds.pixel_array, ds)
    grey = dicom_to_grayscale(ds)
    assert grey.shape == ds.pixel_array.shape
    np.testing.assert_allclose(grey, rgb @ BT601 / 65535.0, atol=1e-6)  # 16-bit palette entries
    del ds.RedPaletteColorLookupTableDescriptor  # a broken palette
    with pytest.raises(ImageLoadError, match=rf"{name}: cannot convert PALETTE COLOR pixel data to grey"):
        dicom_to_grayscale(ds)


def test_ybr_multiframe_to_luma(dicom_dir):
    ds = pydicom.dcmread(dicom_dir / "pydicom_test_files" / "examples_ybr_color.dcm")
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and int(ds.NumberOfFrames) == 30
    rgb = ds.pixel_array[15]  # pydicom converts YBR to RGB; middle of 30 frames
    np.testing.assert_allclose(dicom_to_grayscale(ds), rgb @ BT601 / 255.0, atol=1e-6)


def test_multiframe_frame_selection(dicom_dir):
    path = dicom_dir / "pydicom_data" / "emri_small.dcm"
    frames = pydicom.dcmread(path).pixel_array
    assert frames.shape == (10, 64, 64)
    load = lambda **kw: LoadGrayscaleImage(None, window="minmax", percentiles=FULL_RANGE, **kw)(path)[0].numpy()
    middle, first = load(), load(frame="first")
    assert not np.allclose(middle, first, atol=0.05)
    np.testing.assert_allclose(middle, minmax(frames[5]), atol=1e-6)
    np.testing.assert_allclose(first, minmax(frames[0]), atol=1e-6)
    np.testing.assert_allclose(load(frame_index=3), minmax(frames[3]), atol=1e-6)
    np.testing.assert_allclose(load(frame_index=-1), minmax(frames[9]), atol=1e-6)
    with pytest.raises(ImageLoadError, match=r"emri_small\.dcm: frame index 10 out of range for 10 frame"):
        load(frame_index=10)
    assert FramePolicy("middle") is FramePolicy.MIDDLE


# ----------------------------------------------------------------------------------------- other formats


def test_png_8_bit_is_scaled_by_range_not_minmax(tmp_path):
    dark = (np.arange(20 * 30) % 51).astype(np.uint8).reshape(20, 30)  # 0..50: a dark picture
    Image.fromarray(dark).save(tmp_path / "dark.png")
    grey = load_grayscale(tmp_path / "dark.png")
    np.testing.assert_allclose(grey, dark / 255.0, atol=1e-7)
    assert grey.max() < 0.2


def test_png_16_bit(tmp_path):
    pixels = (np.arange(24 * 16) * 150).astype(np.uint16).reshape(24, 16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    np.testing.assert_allclose(load_grayscale(tmp_path / "deep.png"), pixels / 65535.0, atol=1e-7)


def test_rgb_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    np.testing.assert_allclose(load_grayscale(tmp_path / "colour.png"), rgb @ BT601 / 255.0, atol=1e-6)
    ramp = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.jpg", quality=95)
    np.testing.assert_allclose(load_grayscale(tmp_path / "ramp.jpg"), ramp / 255.0, atol=0.03)


def test_jpeg_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((16, 32), np.uint8)
    pixels[:, :8] = 255  # bright left band
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: display rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    grey = load_grayscale(tmp_path / "rotated.jpg")
    assert grey.shape == (32, 16)
    assert grey[:8].mean() > 0.9 and grey[8:].mean() < 0.1  # the left band is now at the top


def _bright_corner_volume() -> np.ndarray:
    volume = np.zeros((6, 8, 5), np.float32)  # (x, y, z) in RAS+: x -> patient right, y -> anterior
    volume[:, :, 2] = 1.0
    volume[5, 7, 2] = 10.0  # right-anterior voxel of the middle axial slice
    volume[0, 0, 2] = 5.0
    return volume


def test_nifti_volume_middle_axial_slice_radiological(tmp_path):
    volume = _bright_corner_volume()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "ras.nii.gz")
    grey = load_grayscale(tmp_path / "ras.nii.gz", percentiles=FULL_RANGE)
    assert grey.shape == (8, 6)  # rows = anterior-posterior, columns = right-left
    assert grey[0, 0] == 1.0  # right-anterior: top (anterior) left (patient's right)
    assert grey[-1, -1] == pytest.approx(4 / 9)  # left-posterior at the bottom right
    # the same anatomy stored L->R / P->A flipped (an LPS-like affine) displays identically
    lps = nib.Nifti1Image(volume[::-1, ::-1].copy(), np.diag([-1.0, -1.0, 1.0, 1.0]))
    nib.save(lps, tmp_path / "lps.nii")
    np.testing.assert_array_equal(load_grayscale(tmp_path / "lps.nii", percentiles=FULL_RANGE), grey)


def test_nifti_2d_is_taken_as_stored(tmp_path):
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "flat.nii")
    np.testing.assert_allclose(load_grayscale(tmp_path / "flat.nii", percentiles=FULL_RANGE), minmax(image), 1e-6)


def test_npy_stack_and_plain(tmp_path):
    stack = np.random.default_rng(1).integers(0, 256, (7, 16, 12), dtype=np.uint8)  # MRNet-like (S, H, W)
    np.save(tmp_path / "exam.npy", stack)
    np.testing.assert_allclose(load_grayscale(tmp_path / "exam.npy"), stack[3] / 255.0, atol=1e-7)
    np.testing.assert_allclose(load_grayscale(tmp_path / "exam.npy", frame="first"), stack[0] / 255.0, atol=1e-7)
    plane = np.linspace(-3, 5, 20 * 10).reshape(20, 10)
    np.save(tmp_path / "float.npy", plane)
    np.testing.assert_allclose(load_grayscale(tmp_path / "float.npy", percentiles=FULL_RANGE), minmax(plane), 1e-6)


def test_npz_member_references(medmnist_dir):
    breast = medmnist_dir / "breastmnist.npz"
    images = np.load(breast)["train_images"]
    grey = load_grayscale(f"{breast}#train_images/12")
    np.testing.assert_allclose(grey, images[12] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(load_grayscale(f"{breast}#train/12"), grey)  # records.py short form
    before = _npz_array.cache_info().hits
    load_grayscale(f"{breast}#train_images/13")
    assert _npz_array.cache_info().hits == before + 1  # the archive is not re-read per item

    volumes = np.load(medmnist_dir / "adrenalmnist3d.npz")["val_images"]  # (N, 28, 28, 28) masks
    image = LoadGrayscaleImage(None)(f"{medmnist_dir / 'adrenalmnist3d.npz'}#val_images/4")
    np.testing.assert_allclose(image[0].numpy(), volumes[4, 14] / 255.0, atol=1e-7)
    assert image.std() > 0

    retina = np.load(medmnist_dir / "retinamnist.npz")["test_images"]  # (N, 28, 28, 3)
    grey = load_grayscale(f"{medmnist_dir / 'retinamnist.npz'}#test_images/3")
    np.testing.assert_allclose(grey, retina[3] @ BT601 / 255.0, atol=1e-6)


# ----------------------------------------------------------------------------------- resizing and twins


def test_resize_exact_size_area_downsampling_and_upsampling(tmp_path):
    board = (np.indices((128, 96)).sum(0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard
    Image.fromarray(board).save(tmp_path / "board.png")
    down = LoadGrayscaleImage((64, 48))(tmp_path / "board.png")
    np.testing.assert_allclose(down.numpy(), 0.5, atol=1e-6)  # area averaging: no aliasing
    Image.fromarray(np.full((100, 200), 128, np.uint8)).save(tmp_path / "flat.png")
    flat = LoadGrayscaleImage(64)(tmp_path / "flat.png")
    np.testing.assert_allclose(flat.numpy(), 128 / 255.0, atol=1e-6)  # no darkened border
    Image.fromarray(board[:16, :16]).save(tmp_path / "small.png")
    up = LoadGrayscaleImage(64)(tmp_path / "small.png")
    assert tuple(up.shape) == (1, 64, 64) and up.min() >= 0 and up.max() <= 1
    assert tuple(up.meta["spatial_shape"]) == (16, 16)


def test_dictionary_twin(dicom_dir, tmp_path):
    path = str(dicom_dir / "pydicom_test_files" / "CT_small.dcm")
    items = [{"image": path, "label": [1, 0]}, {"image": path, "label": [0, 1]}]
    loader = LoadGrayscaleImaged(keys="image", spatial_size=32)
    out = loader(items[0])
    assert tuple(out["image"].shape) == (1, 32, 32) and out["label"] == [1, 0]
    assert out["image"].meta["filename_or_obj"] == path
    assert items[0]["image"] == path  # the input dictionary is not modified
    torch.testing.assert_close(out["image"].as_tensor(), LoadGrayscaleImage(32)(path).as_tensor())
    batch = list_data_collate([loader(item) for item in items])
    assert tuple(batch["image"].shape) == (2, 1, 32, 32)
    assert "mask" not in LoadGrayscaleImaged(["image", "mask"], allow_missing_keys=True)(items[0])
    with pytest.raises(KeyError):
        LoadGrayscaleImaged(["image", "mask"])(items[0])


# -------------------------------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nothere\.dcm: file not found"):
        LoadGrayscaleImage()(tmp_path / "nothere.dcm")


def test_missing_codec_is_reported_clearly(dicom_dir, monkeypatch):
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder

    # what pydicom does when neither pylibjpeg-libjpeg nor gdcm is installed
    monkeypatch.setattr(JPEGLSLosslessDecoder, "_available", {})
    monkeypatch.setattr(
        JPEGLSLosslessDecoder, "_unavailable", {"gdcm": ("gdcm",), "pylibjpeg": ("pylibjpeg", "pylibjpeg-libjpeg")}
    )
    path = dicom_dir / "pydicom_test_files" / "MR_small_jpeg_ls_lossless.dcm"
    with pytest.raises(ImageLoadError) as caught:
        load_grayscale(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot decode pixel data (JPEG-LS Lossless Image Compression)")
    assert "pylibjpeg-libjpeg" in message and "gdcm" in message


def test_undecodable_pixels_never_leak_patient_data(tmp_path):
    path = write_dicom(tmp_path / "short.dcm", np.zeros((8, 8), np.uint16), PatientName="Doe^Jane", PatientID="P123")
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:10]  # truncated payload
    ds.save_as(path)
    with pytest.raises(ImageLoadError, match=r"short\.dcm: cannot decode pixel data \(Explicit VR Little") as caught:
        load_grayscale(path)
    assert "Doe" not in str(caught.value) and "P123" not in str(caught.value)


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(write_dicom(tmp_path / "x.dcm", np.zeros((4, 4), np.uint16)))
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(ImageLoadError, match=r"nopixels\.dcm: DICOM object has no Pixel Data"):
        load_grayscale(tmp_path / "nopixels.dcm")


def test_corrupt_png(tmp_path):
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:200])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for name in ("cut.png", "junk.png"):
        with pytest.raises(ImageLoadError, match=rf"{name}: cannot decode image"):
            load_grayscale(tmp_path / name)


def test_unsupported_suffix(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageLoadError, match=r"notes\.txt: unsupported image format '\.txt'"):
        load_grayscale(tmp_path / "notes.txt")


def test_bad_npz_references(tmp_path):
    archive = tmp_path / "set.npz"
    np.savez(archive, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros((3, 1), np.uint8))
    cases = {
        f"{archive}#test_images/0": r"no array 'test_images' in the archive \(it holds train_images, train_labels\)",
        f"{archive}#train_images/3": r"bad NPZ member 'train_images/3': frame index 3 out of range for 3",
        f"{archive}#train_images/x": r"bad NPZ member 'train_images/x'",
        f"{tmp_path / 'absent.npz'}#train_images/0": r"file not found",
        str(archive): r"set\.npz: an NPZ archive needs a member reference",
    }
    for reference, message in cases.items():
        with pytest.raises(ImageLoadError, match=message):
            load_grayscale(reference)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="spatial_size"):
        LoadGrayscaleImage(spatial_size=(64, 64, 64))
    with pytest.raises(ValueError, match="percentiles"):
        LoadGrayscaleImage(percentiles=(50, 10))
    with pytest.raises(ValueError):
        LoadGrayscaleImage(frame="max_intensity")
