"""The upstream prepared-data folder: write, read, embed into the embeddings schema."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from affine import Affine

from tessera_explore._schema import validate
from tessera_explore.encoder import embed_dpixel, embed_pixels, load_encoder, read_dpixel, write_dpixel
from tessera_explore.exceptions import EncoderError

H, W = 6, 5
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_800_000.0)


@pytest.fixture
def folder(tmp_path, make_series):
    d = make_series(H * W, t2=12, ta=5, td=4)
    roi = np.ones((H, W), np.uint8)
    roi[0, 0] = 0
    path = write_dpixel(
        tmp_path / "dpixel",
        bands=d["s2"].reshape(12, H, W, 10),
        masks=d["s2_mask"].reshape(12, H, W),
        doys=d["s2_doy"],
        sar_ascending=d["s1_asc"].reshape(5, H, W, 2),
        sar_ascending_doy=d["s1_asc_doy"],
        sar_descending=d["s1_desc"].reshape(4, H, W, 2),
        sar_descending_doy=d["s1_desc_doy"],
        crs="EPSG:32630",
        transform=TRANSFORM,
        roi=roi,
        year=2024,
    )
    return path, d


def test_write_read_round_trip(folder):
    path, d = folder
    names = sorted(p.name for p in path.iterdir())
    assert names == sorted(
        ["bands.npy", "masks.npy", "doys.npy", "sar_ascending.npy", "sar_ascending_doy.npy",
         "sar_descending.npy", "sar_descending_doy.npy", "roi.tiff"]
    )
    dp = read_dpixel(path)
    assert dp.bands.dtype == np.uint16 and dp.bands.shape == (12, H, W, 10)
    assert dp.masks.dtype == np.uint8 and dp.sar_ascending.dtype == np.int16
    assert dp.year == 2024 and dp.shape == (H, W) and dp.crs.to_epsg() == 32630
    np.testing.assert_array_equal(dp.pixel_arrays()["s2"], d["s2"])
    np.testing.assert_array_equal(dp.pixel_arrays()["s1_desc"], d["s1_desc"])


def test_embed_dpixel_schema_and_values(folder, tiny, save_checkpoint):
    path, d = folder
    model = tiny("v2")
    da = embed_dpixel(path, model, progress=False)
    validate(da)
    assert da.shape == (128, H, W) and da.dtype == np.float32
    assert da.attrs["model_generation"] == "v2" and da.attrs["source"] == str(path)
    assert da.attrs["dataset_version"] == "live-v2" and int(da.year) == 2024
    assert da.rio.crs.to_epsg() == 32630
    assert da.x.values[0] == 500_005.0 and da.y.values[0] == 5_799_995.0
    assert np.isnan(da.values[:, 0, 0]).all()  # outside the ROI
    flat = embed_pixels(model, **d, progress=False)
    np.testing.assert_allclose(da.values.reshape(128, -1).T[1:], flat[1:], atol=1e-5)
    # a checkpoint path works too, and v1.0 keeps its generation
    v10 = embed_dpixel(path, save_checkpoint(tiny("v1.0"), "v1-qat"), progress=False)
    assert v10.attrs["model_generation"] == "v1.0"


def test_embed_dpixel_opens_like_precomputed_tiles(folder, tiny, tmp_path):
    path, _ = folder
    da = embed_dpixel(path, tiny("v2"), progress=False)
    out = tmp_path / "e.tif"
    da.rio.to_raster(out)
    import rioxarray

    back = rioxarray.open_rasterio(out)
    assert back.shape == (128, H, W) and back.rio.crs.to_epsg() == 32630


def test_subfolder_layout_and_missing_pieces(folder, tmp_path, tiny):
    path, _ = folder
    alt = tmp_path / "alt"
    (alt / "s2").mkdir(parents=True)
    (alt / "s1").mkdir()
    for name in ("bands.npy", "masks.npy", "doys.npy"):
        shutil.copy(path / name, alt / "s2" / name)
    for name in ("sar_ascending.npy", "sar_ascending_doy.npy", "sar_descending.npy", "sar_descending_doy.npy"):
        shutil.copy(path / name, alt / "s1" / name)
    shutil.copy(path / "roi.tiff", alt / "roi.tiff")
    assert read_dpixel(alt).bands.shape == (12, H, W, 10)
    (alt / "roi.tiff").unlink()
    with pytest.raises(EncoderError, match="roi.tiff"):
        read_dpixel(alt)
    (path / "masks.npy").unlink()
    with pytest.raises(EncoderError, match="masks.npy"):
        read_dpixel(path)


def test_year_required_and_shapes_checked(tmp_path, tiny):
    empty_s1 = dict(crs="EPSG:32630", transform=TRANSFORM)
    p = write_dpixel(tmp_path / "noyear", bands=np.ones((2, 3, 3, 10)), masks=np.ones((2, 3, 3)),
                     doys=[5, 9], **empty_s1)
    with pytest.raises(EncoderError, match="year"):
        embed_dpixel(p, tiny("v2"), progress=False)
    da = embed_dpixel(p, tiny("v2"), year=2021, progress=False)  # no SAR at all
    assert int(da.year) == 2021 and np.isfinite(da.values).all()
    with pytest.raises(EncoderError, match="10"):
        write_dpixel(tmp_path / "bad", bands=np.ones((2, 3, 3, 11)), masks=np.ones((2, 3, 3)), doys=[5, 9], **empty_s1)
    np.save(p / "doys.npy", np.array([5, 400], np.uint16))
    with pytest.raises(EncoderError, match="outside 1..366"):
        embed_dpixel(p, tiny("v2"), year=2021, progress=False)


def test_importing_the_encoder_package_is_light():
    code = "import sys, tessera_explore.encoder as e; e.__all__; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_name_for_embed_dpixel_needs_explicit_download(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_EXPLORE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(Exception, match="download"):
        embed_dpixel(folder[0], "v2-small", progress=False)
    assert callable(load_encoder)
