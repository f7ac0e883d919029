"""The one image loading path: real DICOM files, synthetic files with known answers, and every error case."""

from __future__ import annotations

import re
import warnings
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


# ------------------------------------------------------------------- NRRD / MetaImage volumes (SimpleITK)

ITK_FORMATS = [".nrrd", ".nhdr", ".mha", ".mhd"]  # .nhdr and .mhd write their pixels to a separate .raw


def _lps_reference_volume() -> np.ndarray:
    """``[z (I->S), y (A->P), x (R->L)]`` with distinct slices: the reference the reader's slices are checked on."""
    vol = np.random.default_rng(3).integers(-1000, 3000, (7, 9, 11)).astype(np.int16)
    vol[:, 0, 0] = 3000  # row 0, column 0: anterior, patient's right -- the top left of a radiological view
    vol[:, -1, -1] = -1000
    return vol


def _write_itk(path: Path, array: np.ndarray, direction=None, compress: bool = False, is_vector: bool = False) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array, isVector=is_vector)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("suffix", ITK_FORMATS)
def test_itk_volume_slices_match_the_array_written(tmp_path, suffix, compress):
    vol = _lps_reference_volume()
    path = _write_itk(tmp_path / f"vol{suffix}", vol, compress=compress)  # identity direction: axes point L, P, S
    load = lambda **kw: LoadGrayscaleImage(None, percentiles=FULL_RANGE, **kw)(path)[0].numpy()
    middle = load()
    assert middle.shape == (9, 11)
    np.testing.assert_allclose(middle, minmax(vol[3]), atol=1e-6)  # n // 2 of 7 slices, counted from inferior
    np.testing.assert_allclose(load(frame="first"), minmax(vol[0]), atol=1e-6)
    np.testing.assert_allclose(load(frame_index=5), minmax(vol[5]), atol=1e-6)
    np.testing.assert_allclose(load(frame_index=-1), minmax(vol[6]), atol=1e-6)
    assert middle[0, 0] == 1.0 and middle[-1, -1] == 0.0  # anterior-right at the top left, not flipped
    with pytest.raises(ImageLoadError, match=rf"vol{re.escape(suffix)}: .*frame index 7 out of range for 7 frame"):
        load(frame_index=7)
    resized = LoadGrayscaleImage(32)(path)
    assert tuple(resized.shape) == (1, 32, 32) and resized.meta["filename_or_obj"] == str(path)


def test_itk_volume_is_reoriented_to_the_radiological_axial_view(tmp_path):
    ref = _lps_reference_volume().astype(np.float32)  # what an LPS-stored volume shows, slice by slice
    expected = load_grayscale(_write_itk(tmp_path / "lps.nrrd", ref), percentiles=FULL_RANGE)
    np.testing.assert_allclose(expected, minmax(ref[3]), atol=1e-6)
    # the same anatomy stored with every axis flipped (axes pointing R, A, I) ...
    flipped = _write_itk(tmp_path / "rai.mha", ref[::-1, ::-1, ::-1].copy(), direction=(-1, 0, 0, 0, -1, 0, 0, 0, -1))
    # ... and stored sagittally: index axis i points S, j points L, k points P (array order [k, j, i])
    permuted = _write_itk(tmp_path / "sag.nrrd", ref.transpose(1, 2, 0).copy(), direction=(0, 1, 0, 0, 0, 1, 1, 0, 0))
    for path in (flipped, permuted):
        np.testing.assert_allclose(load_grayscale(path, percentiles=FULL_RANGE), expected, atol=1e-6, err_msg=path.name)
    # and an independent path: nibabel writes the same anatomy as RAS+ NIfTI (x -> R, y -> A, z -> S)
    ras = ref[:, ::-1, ::-1].transpose(2, 1, 0)  # [x (L->R), y (P->A), z (I->S)]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(ras), np.eye(4)), tmp_path / "ras.nii.gz")
    np.testing.assert_allclose(load_grayscale(tmp_path / "ras.nii.gz", percentiles=FULL_RANGE), expected, atol=1e-6)


def test_itk_2d_image_as_stored_and_rgb(tmp_path):
    plane = np.linspace(0, 500, 6 * 10).reshape(6, 10).astype(np.float32)  # [y, x] = rows, columns
    grey = load_grayscale(_write_itk(tmp_path / "flat.mha", plane, direction=(-1, 0, 0, -1)), percentiles=FULL_RANGE)
    np.testing.assert_allclose(grey, minmax(plane), atol=1e-6)  # direction cosines of a 2-D image are not applied
    rgb = np.random.default_rng(4).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    colour = load_grayscale(_write_itk(tmp_path / "colour.nrrd", rgb, is_vector=True))
    np.testing.assert_allclose(colour, rgb @ BT601 / 255.0, atol=1e-6)
    with pytest.raises(ImageLoadError, match=r"flat\.mha: .*frame index 2 out of range for 1 frame"):
        load_grayscale(tmp_path / "flat.mha", frame=2)


def test_itk_4d_and_vector_images(tmp_path):
    import SimpleITK as sitk

    vol = _lps_reference_volume()
    one_time_point = sitk.JoinSeries([sitk.GetImageFromArray(vol)])
    sitk.WriteImage(one_time_point, str(tmp_path / "t1.nrrd"))
    np.testing.assert_allclose(load_grayscale(tmp_path / "t1.nrrd", percentiles=FULL_RANGE), minmax(vol[3]), atol=1e-6)
    series = sitk.JoinSeries([sitk.GetImageFromArray(vol)] * 2)
    sitk.WriteImage(series, str(tmp_path / "t2.nrrd"))
    with pytest.raises(ImageLoadError, match=r"t2\.nrrd: 4-D image of size \(11, 9, 7, 2\); expected a 2-D image or"):
        load_grayscale(tmp_path / "t2.nrrd")
    field = _write_itk(tmp_path / "field.mha", np.zeros((4, 5, 6, 3), np.float32), is_vector=True)
    with pytest.raises(ImageLoadError, match=r"field\.mha: 3 components per pixel .*expected one grey value"):
        load_grayscale(field)
    pair = _write_itk(tmp_path / "pair.mha", np.zeros((4, 5, 6, 2), np.uint8), is_vector=True)
    with pytest.raises(ImageLoadError, match=r"pair\.mha: 2 components per pixel"):
        load_grayscale(pair)


def test_itk_masked_nan_voxels_and_non_finite_slices(tmp_path):
    vol = _lps_reference_volume().astype(np.float32)
    vol[3, :4, :] = np.nan  # masked out voxels in the middle slice
    vol[0] = np.nan  # a slice entirely outside the mask
    vol[6, 2, 2] = np.inf
    path = _write_itk(tmp_path / "masked.nrrd", vol)
    grey = load_grayscale(path, percentiles=FULL_RANGE)
    assert np.all(grey[:4] == 0)  # shown as 0, and left out of the statistics:
    np.testing.assert_allclose(grey[4:], minmax(vol[3, 4:]), atol=1e-6)
    with pytest.raises(ImageLoadError, match=r"masked\.nrrd: all 99 pixel values of axial slice 0 of 7 are NaN"):
        load_grayscale(path, frame="first")
    with pytest.raises(ImageLoadError, match=r"masked\.nrrd: non-finite pixel values \(1 of 99 pixel values of axial "
                                             r"slice 6 of 7 are Inf\)"):
        load_grayscale(path, frame=-1)
    nib.save(nib.Nifti1Image(np.full((4, 5, 3), np.nan, np.float32), np.eye(4)), tmp_path / "void.nii.gz")
    with pytest.raises(ImageLoadError, match=r"void\.nii\.gz: all 20 pixel values of axial slice 1 of 3 are NaN"):
        load_grayscale(tmp_path / "void.nii.gz")


def test_itk_bad_files(tmp_path):
    vol = _lps_reference_volume()
    _write_itk(tmp_path / "lost.mhd", vol)
    (tmp_path / "lost.raw").unlink()
    _write_itk(tmp_path / "cut.mhd", vol)
    (tmp_path / "cut.raw").write_bytes((tmp_path / "cut.raw").read_bytes()[:100])
    _write_itk(tmp_path / "alone.mhd", vol)
    nrrd = _write_itk(tmp_path / "full.nrrd", vol).read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(nrrd[:-50])
    (tmp_path / "junk.nrrd").write_bytes(b"hello, not a volume")
    (tmp_path / "junk.mha").write_bytes(b"hello, not a volume")
    mha = _write_itk(tmp_path / "full.mha", vol, compress=True).read_bytes()
    (tmp_path / "cutz.mha").write_bytes(mha[:-50])
    cases = {
        "lost.mhd": r"lost\.mhd: the MetaImage header names the data file 'lost\.raw', which does not exist",
        "cut.mhd": r"cut\.mhd: truncated MetaImage data: cut\.raw holds 100 bytes of pixel data, the header "
                   r"\(DimSize 11 9 7, MET_SHORT\) needs 1386",
        "alone.raw": r"alone\.raw: a \.raw file holds the pixels of a MetaImage without its header; load the \.mhd",
        "cut.nrrd": r"cut\.nrrd: cannot read NRRD: truncated pixel data",
        "junk.nrrd": r"junk\.nrrd: cannot read NRRD: couldn't parse",
        "junk.mha": r"junk\.mha: not a MetaImage header",
        "cutz.mha": r"cutz\.mha: truncated MetaImage data: cutz\.mha holds \d+ bytes of pixel data, the header "
                    r"\(CompressedDataSize \d+\) needs",
    }
    for name, message in cases.items():
        with pytest.raises(ImageLoadError, match=message) as caught:
            load_grayscale(tmp_path / name)
        assert "\n" not in str(caught.value) and "0x" not in str(caught.value), name  # one line, no ITK noise


# ------------------------------------------------------------------------------ bad pixels and bad headers


def _frames_element(value: bytes):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    return RawDataElement(Tag(0x00280008), "IS", len(value), value, 0, False, True)


@pytest.mark.parametrize(
    "attrs, cause",
    [
        ({"RescaleSlope": "NaN", "RescaleIntercept": 0}, r"after RescaleSlope/Intercept \(RescaleSlope 'NaN'"),
        ({"RescaleSlope": 1, "RescaleIntercept": "-inf"}, r"after RescaleSlope/Intercept .*RescaleIntercept '-inf'"),
        ({"RescaleSlope": "inf", "RescaleIntercept": 0}, r"after RescaleSlope/Intercept \(RescaleSlope 'inf'"),
    ],
)
def test_dicom_non_finite_rescale_is_refused_not_black(tmp_path, attrs, cause):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: not a valid DS value
        path = write_dicom(tmp_path / "rescale.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), **attrs)
        with pytest.raises(ImageLoadError, match=rf"rescale\.dcm: non-finite pixel values \(NaN/Inf; .*\) {cause}"):
            load_grayscale(path)


def test_dicom_zero_rescale_slope_is_refused(tmp_path):
    path = write_dicom(tmp_path / "flat.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), RescaleSlope=0,
                       RescaleIntercept=-1024)
    with pytest.raises(ImageLoadError, match=r"flat\.dcm: RescaleSlope is 0, every pixel would become RescaleInter"):
        load_grayscale(path)


def _float_pixel_dicom(path: Path, values: np.ndarray) -> Path:
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 1, "MONOCHROME2"
    ds.FloatPixelData = values.astype(np.float32).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_float_pixel_data(tmp_path):
    values = np.linspace(-2.5, 7.0, 4 * 6).reshape(4, 6).astype(np.float32)
    path = _float_pixel_dicom(tmp_path / "map.dcm", values)
    np.testing.assert_allclose(load_grayscale(path, percentiles=FULL_RANGE), minmax(values), atol=1e-6)
    values[1, 2] = np.nan
    _float_pixel_dicom(tmp_path / "nanmap.dcm", values)
    with pytest.raises(ImageLoadError, match=r"nanmap\.dcm: non-finite pixel values \(1 of 24 pixel values are NaN\) "
                                             r"in the decoded pixel data"):
        load_grayscale(tmp_path / "nanmap.dcm")


def test_non_finite_arrays_are_refused_not_black(tmp_path):
    archive = tmp_path / "nanmnist.npz"  # MedMNIST layout, float images of NaN
    np.savez(archive, train_images=np.full((3, 8, 8), np.nan, np.float32), train_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(ImageLoadError, match=r"nanmnist\.npz#train_images/1: .*non-finite pixel values \(64 of 64 pixel "
                                             r"values are NaN\)"):
        load_grayscale(f"{archive}#train_images/1")
    np.save(tmp_path / "inf.npy", np.where(np.eye(6) > 0, np.inf, 1.0))
    with pytest.raises(ImageLoadError, match=r"inf\.npy: .*non-finite pixel values \(6 of 36 pixel values are Inf\)"):
        load_grayscale(tmp_path / "inf.npy")
    np.save(tmp_path / "rgbnan.npy", np.full((4, 4, 3), np.nan))
    with pytest.raises(ImageLoadError, match=r"rgbnan\.npy: .*non-finite pixel values"):
        load_grayscale(tmp_path / "rgbnan.npy")
    Image.fromarray(np.full((5, 7), np.nan, np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(ImageLoadError, match=r"nan\.tif: non-finite pixel values \(35 of 35 pixel values are NaN\)"):
        load_grayscale(tmp_path / "nan.tif")


@pytest.mark.parametrize("value", [b"ab", b"-2", b"1.5 ", b"1\\2 "])
def test_invalid_number_of_frames_names_file_and_value(tmp_path, value):
    path = write_dicom(tmp_path / "frames.dcm", np.zeros((4, 4), np.uint16))
    ds = pydicom.dcmread(path)
    ds[0x00280008] = _frames_element(value)
    ds.save_as(path)
    text = value.decode().strip().replace("\\", "\\\\")
    message = rf"frames\.dcm: invalid NumberOfFrames '{re.escape(text)}' \(expected "
    with pytest.raises(ImageLoadError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own "invalid IS value"
        load_grayscale(path)


def test_number_of_frames_zero_is_one_frame_as_pydicom_reads_it(tmp_path):
    pixels = np.arange(16, dtype=np.uint16).reshape(4, 4)
    path = write_dicom(tmp_path / "zero.dcm", pixels)
    ds = pydicom.dcmread(path)
    ds[0x00280008] = _frames_element(b"0 ")
    ds.save_as(path)
    with pytest.warns(UserWarning, match="assuming 1 frame"):
        np.testing.assert_allclose(load_grayscale(path, window="minmax", percentiles=FULL_RANGE), minmax(pixels), 1e-6)


@pytest.mark.parametrize("size", [132, 133, 140, 200, 300, 500, 800, 1000, 20000, 39205])
def test_truncated_dicom_is_named_truncated(dicom_dir, tmp_path, size):
    data = (dicom_dir / "pydicom_test_files" / "CT_small.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:size])
    with pytest.raises(ImageLoadError, match=rf"cut\.dcm: truncated DICOM file \({size} bytes\): the file ends "):
        load_grayscale(tmp_path / "cut.dcm")


def test_truncated_dicom_other_cuts(dicom_dir, tmp_path):
    data = (dicom_dir / "pydicom_test_files" / "CT_small.dcm").read_bytes()
    (tmp_path / "short.dcm").write_bytes(data[:100])  # inside the preamble: no DICM marker to go by
    with pytest.raises(ImageLoadError, match=r"short\.dcm: not a DICOM file, or a truncated one \(100 bytes"):
        load_grayscale(tmp_path / "short.dcm")
    (tmp_path / "meta.dcm").write_bytes(data[:354])  # cut at an element boundary of the header
    with pytest.raises(ImageLoadError, match=r"meta\.dcm: DICOM object has no Pixel Data and no SOP Class UID either, "
                                             r"an incomplete header \(truncated before its Pixel Data\?, 354 bytes\)"):
        load_grayscale(tmp_path / "meta.dcm")
    rle = (dicom_dir / "pydicom_test_files" / "MR_small_RLE.dcm").read_bytes()
    (tmp_path / "rle.dcm").write_bytes(rle[:4790])  # inside the encapsulated (undefined-length) Pixel Data
    message = r"rle\.dcm: truncated DICOM file \(4790 bytes\): the file ends inside an undefined-length element"
    with pytest.raises(ImageLoadError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: "End of file reached before delimiter"
        load_grayscale(tmp_path / "rle.dcm")


@pytest.mark.parametrize("name", ["empty.dcm", "empty.png", "empty.npy", "empty.nrrd", "empty.nii.gz", "empty"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ImageLoadError, match=rf"{re.escape(name)}: empty file \(0 bytes\)"):
        load_grayscale(tmp_path / name)


def test_array_channels_sizes_and_types(tmp_path):
    grey = np.random.default_rng(5).integers(0, 256, (12, 9, 1), dtype=np.uint8)
    np.save(tmp_path / "channel.npy", grey)
    np.testing.assert_allclose(load_grayscale(tmp_path / "channel.npy"), grey[..., 0] / 255.0, atol=1e-7)
    cases = {
        "two.npy": (np.zeros((12, 9, 2), np.float32), r"shape \(12, 9, 2\) has 2 channels per pixel; expected 1"),
        "none.npy": (np.zeros((0, 9), np.uint8), r"empty image \(shape \(0, 9\), no pixels\)"),
        "nostack.npy": (np.zeros((0, 8, 8), np.uint8), r"empty image \(shape \(0, 8, 8\)"),
        "complex.npy": (np.ones((4, 4), np.complex64), r"pixel type complex64 is not a real number"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(ImageLoadError, match=rf"{re.escape(name)}: .*{message}"):
            load_grayscale(tmp_path / name)
    archive = tmp_path / "items.npz"
    np.savez(archive, train_images=np.zeros((2, 0, 4), np.uint8))
    with pytest.raises(ImageLoadError, match=r"items\.npz#train_images/0: .*empty image"):
        load_grayscale(f"{archive}#train_images/0")


def test_explicit_frame_index_on_a_single_image_is_refused_for_every_format(tmp_path):
    image = np.arange(24, dtype=np.uint8).reshape(4, 6)
    np.save(tmp_path / "plane.npy", image)
    Image.fromarray(image).save(tmp_path / "plane.png")
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), tmp_path / "plane.nii")
    write_dicom(tmp_path / "plane.dcm", image.astype(np.uint16))
    for name in ("plane.npy", "plane.png", "plane.nii", "plane.dcm"):
        loader = LoadGrayscaleImage(None, frame_index=3)
        with pytest.raises(ImageLoadError, match=rf"{re.escape(name)}: .*frame index 3 out of range for 1 frame"):
            loader(tmp_path / name)
        for index in (0, -1):  # a single image is a stack of one
            assert tuple(LoadGrayscaleImage(None, frame_index=index)(tmp_path / name).shape) == (1, 4, 6), name
