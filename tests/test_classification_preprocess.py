"""Pre-processing, checked against arrays worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from graphrun_agents.classification.preprocess import Preprocessor, PreprocessSpec, check_against_model
from graphrun_agents.errors import FrameFormatError, PreprocessConfigError


def run(image: np.ndarray, **spec: object) -> np.ndarray:
    return Preprocessor(PreprocessSpec(**spec))(image)


def test_a_mono_frame_is_scaled_to_unit_range_in_nchw():
    image = np.array([[0, 51], [102, 255]], np.uint8)
    out = run(image)
    assert out.dtype == np.float32
    assert out.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(out[0, 0], [[0.0, 0.2], [0.4, 1.0]], rtol=1e-6)


def test_mean_and_std_normalise_after_scaling():
    image = np.array([[0, 255]], np.uint8)
    out = run(image, mean=[0.5], std=[0.25])
    # (0/255 - 0.5) / 0.25 = -2 ; (255/255 - 0.5) / 0.25 = 2
    np.testing.assert_allclose(out[0, 0], [[-2.0, 2.0]], rtol=1e-6)


def test_roi_crops_before_anything_else():
    image = np.arange(20, dtype=np.uint8).reshape(4, 5)
    out = run(image, roi=(1, 2, 3, 2), scale=1.0)
    np.testing.assert_array_equal(out[0, 0], [[11, 12, 13], [16, 17, 18]])


def test_a_bgr_frame_becomes_rgb_in_nhwc_with_per_channel_statistics():
    image = np.zeros((1, 2, 3), np.uint8)
    image[0, 0] = (10, 20, 30)  # B, G, R
    image[0, 1] = (40, 50, 60)
    out = run(image, color="rgb", layout="NHWC", scale=1.0, mean=[1, 2, 3], std=[1, 2, 3])
    assert out.shape == (1, 1, 2, 3)
    # RGB order, then (x - mean) / std per channel
    np.testing.assert_allclose(out[0, 0], [[29, 9, 7 / 3], [59, 24, 37 / 3]], rtol=1e-6)


def test_a_bgr_frame_becomes_gray_with_the_itu_weights():
    image = np.zeros((1, 1, 3), np.uint8)
    image[0, 0] = (255, 0, 0)  # pure blue: 0.114 * 255 = 29.07 -> 29
    out = run(image, color="gray", scale=1.0)
    assert out.shape == (1, 1, 1, 1)
    assert out[0, 0, 0, 0] == 29


def test_a_mono_frame_is_replicated_into_three_channels_for_a_colour_model():
    image = np.array([[7]], np.uint8)
    out = run(image, color="bgr", scale=1.0)
    np.testing.assert_array_equal(out.reshape(-1), [7, 7, 7])


def test_resize_without_aspect_stretches_by_area_averaging():
    image = np.array([[0, 100, 200, 40], [20, 60, 0, 80]], np.uint8)
    out = run(image, resize=(2, 1), scale=1.0)
    # each output pixel is the mean of a 2x2 block: (0+100+20+60)/4, (200+40+0+80)/4
    np.testing.assert_array_equal(out[0, 0], [[45, 80]])


def test_resize_with_aspect_letterboxes_with_the_pad_value():
    image = np.full((2, 4), 200, np.uint8)
    out = run(image, resize=(4, 4), keep_aspect=True, pad_value=9, scale=1.0)
    # 4x2 fits 4x4 unscaled; one padding row above and below
    np.testing.assert_array_equal(out[0, 0], [[9] * 4, [200] * 4, [200] * 4, [9] * 4])


def test_a_uint16_frame_can_be_scaled_by_its_own_range():
    image = np.array([[0, 65535]], np.uint16)
    out = run(image, scale=1 / 65535)
    np.testing.assert_allclose(out[0, 0], [[0.0, 1.0]], rtol=1e-6)


def test_integer_output_dtype_rounds_and_clips():
    image = np.array([[0, 128, 255]], np.uint8)
    out = run(image, scale=1.0, mean=[128], dtype="int8")
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out[0, 0], [[-128, 0, 127]])


def test_a_batch_stacks_frames_in_order():
    a = np.full((2, 2), 10, np.uint8)
    b = np.full((2, 2), 20, np.uint8)
    out = Preprocessor(PreprocessSpec(scale=1.0)).batch([a, b])
    assert out.shape == (2, 1, 2, 2)
    assert out[0].max() == 10 and out[1].min() == 20


def test_received_frames_are_read_only_and_stay_untouched():
    image = np.array([[1, 2], [3, 4]], np.uint8)
    image.flags.writeable = False
    run(image, color="rgb", resize=(3, 3))
    np.testing.assert_array_equal(image, [[1, 2], [3, 4]])


def test_a_roi_outside_the_frame_is_a_frame_error_naming_the_roi():
    with pytest.raises(FrameFormatError, match=r"roi \[2, 0, 4, 1\] does not fit in a 5x3 frame"):
        run(np.zeros((3, 5), np.uint8), roi=(2, 0, 4, 1))


def test_a_frame_of_the_wrong_shape_or_dtype_is_a_frame_error():
    with pytest.raises(FrameFormatError, match=r"shape \[2, 2, 2\]"):
        run(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(FrameFormatError, match="dtype int64"):
        run(np.zeros((2, 2), np.int64))


def test_frames_of_different_sizes_cannot_share_a_batch_without_resize():
    with pytest.raises(FrameFormatError, match="set preprocess.resize"):
        Preprocessor(PreprocessSpec()).batch([np.zeros((2, 2), np.uint8), np.zeros((3, 3), np.uint8)])


def test_statistics_must_match_the_colour_channels():
    with pytest.raises(ValidationError, match="mean has 2 values"):
        PreprocessSpec(color="rgb", mean=[0.1, 0.2])
    with pytest.raises(ValidationError, match="contains 0"):
        PreprocessSpec(std=[0.0])


def test_a_spec_that_does_not_fit_the_model_input_is_refused_with_both_shapes():
    spec = PreprocessSpec(resize=(128, 128))
    check_against_model(spec, [None, 1, 128, 128])
    with pytest.raises(PreprocessConfigError, match=r"height 128 .* \[1, 1, 64, 64\] takes 64"):
        check_against_model(spec, [1, 1, 64, 64])
    with pytest.raises(PreprocessConfigError, match="takes 3"):
        check_against_model(spec, ["N", 3, 128, 128])
