"""The Numba downsampling kernel equals its NumPy reference (the executable spec)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from csp.native import downsample2x
from csp.native.reference import downsample2x_reference


@st.composite
def images(draw):
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    shape = (draw(st.integers(1, 70)), draw(st.integers(1, 70)), draw(st.integers(1, 5)))
    kind = draw(st.sampled_from(["random", "zero", "max"]))
    if kind == "zero":
        return np.zeros(shape, dtype)
    if kind == "max":
        return np.full(shape, np.iinfo(dtype).max, dtype)
    return draw(hnp.arrays(dtype, shape))


@settings(max_examples=150, deadline=None)
@given(img=images(), view=st.booleans())
def test_numba_equals_reference(img, view):
    if view and img.shape[1] > 2:
        img = img[:, ::2]  # non-contiguous
    np.testing.assert_array_equal(downsample2x(img), downsample2x_reference(img))


@settings(max_examples=60, deadline=None)
@given(img=images(), band=st.integers(1, 12))
def test_even_bands_equal_whole_image(img, band):
    """Downsampling even-height bands one by one equals downsampling the whole image."""
    step = 2 * band
    parts = [downsample2x(img[y:y + step]) for y in range(0, img.shape[0], step)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=0), downsample2x_reference(img))


def test_hand_computed_3x3():
    src = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8)[:, :, None]
    want = np.array([[(1 + 2 + 4 + 5 + 2) // 4, (3 + 6 + 1) // 2], [(7 + 8 + 1) // 2, 9]], np.uint8)
    np.testing.assert_array_equal(downsample2x(src)[:, :, 0], want)
    np.testing.assert_array_equal(downsample2x_reference(src)[:, :, 0], want)


def test_rounding_half_up_and_uint16_no_overflow():
    src = np.array([[[0], [1]], [[0], [1]]], np.uint8)  # mean 0.5 -> 1
    assert downsample2x(src)[0, 0, 0] == 1
    big = np.full((2, 2, 1), 65535, np.uint16)
    assert downsample2x(big)[0, 0, 0] == 65535


def test_bad_input():
    with pytest.raises(ValueError):
        downsample2x(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        downsample2x(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        downsample2x(np.zeros((4, 4, 3), np.uint8), out=np.zeros((3, 3, 3), np.uint8))


@settings(max_examples=100, deadline=None)
@given(img=images(), sat=st.integers(0, 80), white=st.integers(0, 256))
def test_tissue_mask_numba_equals_reference(img, sat, white):
    from csp.native import tissue_mask
    from csp.native.reference import tissue_mask_reference

    if img.dtype != np.uint8:
        img = (img >> 8).astype(np.uint8)
    np.testing.assert_array_equal(tissue_mask(img, sat, white), tissue_mask_reference(img, sat, white))


def test_tissue_mask_hand_cases():
    from csp.native import tissue_mask

    px = np.array([[[255, 255, 255], [200, 120, 180], [100, 100, 100], [240, 225, 238]]], np.uint8)
    np.testing.assert_array_equal(tissue_mask(px)[0], [0, 1, 0, 0])  # white, pink, grey, pale (spread 15)
