"""Section-8 preparation rules on hand-made arrays (numpy only, no servers)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tessera_explore.encoder import granules as P
from tessera_explore.exceptions import EncoderError

UTC = dt.UTC


def test_band_order_and_resampling_rules():
    assert P.S2_BANDS == ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
    assert P.S2_BANDS_20M == {"B8A", "B05", "B06", "B07", "B11", "B12"}
    assert P.S2_RESAMPLING["SCL"] == "nearest"
    assert all(P.S2_RESAMPLING[b] == "bilinear" for b in P.S2_BANDS_20M)


def test_scl_classes():
    scl = np.arange(12, dtype=np.uint8)
    valid = P.scl_valid(scl)
    assert set(np.flatnonzero(~valid)) == {0, 1, 2, 3, 8, 9}
    assert valid[10] and valid[11]  # thin cirrus and snow count as valid


def test_pc_offset_rule():
    assert not P.needs_pc_offset(dt.datetime(2022, 1, 24, 23, 59, tzinfo=UTC))
    assert P.needs_pc_offset(dt.datetime(2022, 1, 25, 10, 30, tzinfo=UTC))
    assert P.needs_pc_offset(dt.datetime(2023, 6, 1))  # naive = UTC
    x = np.array([0, 1, 999, 1000, 1001, 11000], np.uint16)
    np.testing.assert_array_equal(P.remove_pc_offset(x), [0, 1, 999, 0, 1, 10000])
    assert P.remove_pc_offset(x).dtype == np.uint16


def test_s1_db_scaling():
    x = np.array([np.nan, -32768, -1, 0, 1e-3, 0.01, 0.05, 1.0, 1e8], np.float32)
    got = P.s1_to_int16(x)
    assert got.dtype == np.int16
    ref = np.zeros(x.shape, np.int16)
    for i, v in enumerate(x.astype(np.float64)):
        if v > 0:
            ref[i] = int(min(max((20 * np.log10(v) + 50) * 200, 0), 32767))
    np.testing.assert_array_equal(got, ref)
    assert got[6] == int((20 * np.log10(np.float64(np.float32(0.05))) + 50) * 200) == 4795
    assert got[7] == 10000 and got[8] == 32767 and (got[:4] == 0).all()


def _g2(id_, day, bands_val, scl, pc=False, hour=10):
    h, w = scl.shape
    bands = np.broadcast_to(np.asarray(bands_val, np.uint16)[:, None, None], (10, h, w)).copy()
    return P.S2Granule(id_, dt.datetime(2022, 1, 1, hour, tzinfo=UTC) + dt.timedelta(days=day - 1), bands, scl, pc)


def test_s2_mosaic_first_valid_and_cover_filter():
    h, w = 4, 5
    clear = np.full((h, w), 4, np.uint8)
    cloudy_left = clear.copy()
    cloudy_left[:, :2] = 9
    nodata = np.zeros((h, w), np.uint8)
    nearly = np.full((h, w), 8, np.uint8)
    nearly[0, 0] = 4  # 1 of 20 px = 5 %: kept; under 5 % would be dropped
    worse = np.full((h, w), 9, np.uint8)
    granules = [
        _g2("b", 10, range(100, 110), clear, hour=11),   # same date, later: used where "a" is cloudy
        _g2("a", 10, range(200, 210), cloudy_left),
        _g2("c", 20, range(300, 310), nodata),           # no data at all: dropped
        _g2("d", 30, range(1400, 1410), nearly, pc=True),
        _g2("e", 40, range(500, 510), worse),
    ]
    out = P.prepare_s2(granules, (h, w))
    assert list(out["doys"]) == [10, 30]
    assert [d for d, _ in out["dropped"]] == [dt.date(2022, 1, 20), dt.date(2022, 2, 9)]
    b = out["bands"]
    assert b.shape == (2, h, w, 10) and b.dtype == np.uint16
    np.testing.assert_array_equal(b[0, :, 2:], np.broadcast_to(np.arange(200, 210), (h, w - 2, 10)))
    np.testing.assert_array_equal(b[0, :, :2], np.broadcast_to(np.arange(100, 110), (h, 2, 10)))
    assert out["masks"][0].all()
    np.testing.assert_array_equal(b[1, 0, 0], np.arange(400, 410))  # offset removed
    assert out["masks"][1].sum() == 1 and out["cover"][1] == pytest.approx(0.05)


def test_s2_rejects_wrong_shapes():
    g = _g2("a", 10, range(10), np.full((3, 3), 4, np.uint8))
    with pytest.raises(EncoderError, match="do not fit"):
        P.prepare_s2([g], (4, 4))


def test_s1_ascending_descending_apart_and_mosaic():
    h, w = 3, 4
    t0 = dt.datetime(2022, 3, 1, 6, tzinfo=UTC)
    a1 = np.full((2, h, w), 0.1, np.float32)
    a1[:, :, 2:] = -32768  # no data on the right
    a2 = np.full((2, h, w), 0.2, np.float32)
    d1 = np.full((2, h, w), 0.05, np.float32)
    empty = np.zeros((2, h, w), np.float32)
    gr = [
        P.S1Granule("a2", t0 + dt.timedelta(seconds=30), "ascending", a2),
        P.S1Granule("a1", t0, "ascending", a1),
        P.S1Granule("d1", t0 + dt.timedelta(days=3), "descending", d1),
        P.S1Granule("d0", t0 + dt.timedelta(days=6), "descending", empty),
    ]
    out = P.prepare_s1(gr, (h, w))
    asc, asc_doy, _ = out["ascending"]
    desc, desc_doy, _ = out["descending"]
    assert asc.shape == (1, h, w, 2) and list(asc_doy) == [60]
    assert desc.shape == (1, h, w, 2) and list(desc_doy) == [63]  # the empty date is left out
    assert (asc[0, :, :2] == P.s1_to_int16(np.float32(0.1))).all()
    assert (asc[0, :, 2:] == P.s1_to_int16(np.float32(0.2))).all()
    assert (desc[0] == P.s1_to_int16(np.float32(0.05))).all()
    with pytest.raises(EncoderError, match="orbit_state"):
        P.prepare_s1([P.S1Granule("x", t0, "sideways", a1)], (h, w))


def test_mosaic_helper_and_day_of_year():
    stack = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    valid = np.array([[[0, 1], [0, 0]], [[1, 1], [0, 1]]], bool)
    m, anyv = P.mosaic_first_valid(stack, valid)
    np.testing.assert_array_equal(m[:, 0, 0], stack[1, :, 0, 0])
    np.testing.assert_array_equal(m[:, 0, 1], stack[0, :, 0, 1])
    np.testing.assert_array_equal(anyv, [[True, True], [False, True]])
    assert P.day_of_year(dt.datetime(2024, 12, 31, 23, tzinfo=UTC)) == 366
    assert P.day_of_year(dt.datetime(2022, 1, 2, 1, tzinfo=dt.timezone(dt.timedelta(hours=3)))) == 1


def test_former_names_still_work_with_a_warning():
    import importlib
    import sys

    import tessera_explore.encoder as enc
    from tessera_explore.encoder import area, granules, preprocess

    with pytest.warns(DeprecationWarning, match="granules"):
        assert enc.prepare is granules
    sys.modules.pop("tessera_explore.encoder.prepare", None)
    with pytest.warns(DeprecationWarning, match="granules"):
        shim = importlib.import_module("tessera_explore.encoder.prepare")
    assert shim.S2_BANDS is granules.S2_BANDS and shim.Prepared is granules.Prepared
    with pytest.warns(DeprecationWarning, match="area_inputs"):
        assert enc.prepare_area is area.area_inputs
    with pytest.warns(DeprecationWarning, match="N_S2_BANDS"):
        assert preprocess.S2_BANDS == preprocess.N_S2_BANDS == len(granules.S2_BANDS)
    with pytest.warns(DeprecationWarning, match="N_S1_BANDS"):
        assert preprocess.S1_BANDS == preprocess.N_S1_BANDS == len(granules.S1_BANDS)


def test_embed_options_and_keywords_are_one_set():
    from tessera_explore.encoder.area import EmbedOptions

    base = EmbedOptions(s1=False, max_pixels=10)
    merged = EmbedOptions.of(base, {"max_pixels": 20}, verb="embed_area")
    assert merged.s1 is False and merged.max_pixels == 20 and base.max_pixels == 10
    with pytest.raises(TypeError, match="unexpected keyword argument.*'s1_only'"):
        EmbedOptions.of(None, {"s1_only": True}, verb="embed_area")
    with pytest.raises(TypeError, match="options= must be an EmbedOptions"):
        EmbedOptions.of({"s1": False}, {}, verb="embed_area")
