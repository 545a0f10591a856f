"""``area.stitch``: per-block results placed on the area's grid, one loop for every verb."""

import numpy as np

from tessera_explore.classify.area import Block, stitch


class _G:
    shape = (5, 7)


def _blk(r0, r1, c0, c1):
    n = (r1 - r0) * (c1 - c0)
    return Block(slice(r0, r1), slice(c0, c1), np.ones((n, 3), np.int8), np.ones(n, np.float32))


def test_stitch_places_blocks_and_fills_the_rest():
    pieces = [_blk(0, 2, 0, 4), _blk(2, 5, 4, 7)]

    def fn(b):
        h, w = b.shape
        flat = np.arange(h * w, dtype=np.float32) + 100 * b.rows.start
        return flat, np.stack([flat, -flat]), flat.astype(np.uint8)

    one, two, small = stitch(_G(), pieces, fn, (np.nan, 0.0, 255))
    assert one.shape == (5, 7) and two.shape == (2, 5, 7) and small.dtype == np.uint8
    assert np.array_equal(one[:2, :4], np.arange(8, dtype=np.float32).reshape(2, 4))
    assert np.array_equal(one[2:, 4:], (np.arange(9, dtype=np.float32) + 200).reshape(3, 3))
    assert np.isnan(one[:2, 4:]).all() and np.isnan(one[2:, :4]).all()
    assert np.array_equal(two[1], np.where(np.isnan(one), 0.0, -one))
    assert (small[2:, :4] == 255).all()


def test_stitch_reshapes_a_whole_area_block_without_copying():
    whole = _blk(0, 5, 0, 7)
    flat = np.arange(35, dtype=np.float32)
    (out,) = stitch(_G(), [whole], lambda b: (flat,), (np.nan,))
    assert np.shares_memory(out, flat) and out.shape == (5, 7)


def test_stitch_takes_aligned_pairs_located_by_the_first():
    a, b = _blk(0, 5, 0, 3), _blk(0, 5, 0, 3)
    (out,) = stitch(_G(), [(a, b)], lambda pair: (np.full(15, 2.0, np.float32),), (np.nan,))
    assert (out[:, :3] == 2).all() and np.isnan(out[:, 3:]).all()
