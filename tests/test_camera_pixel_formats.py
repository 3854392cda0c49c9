"""Pixel-format conversion, checked against buffers whose pixels are known byte by byte."""

from __future__ import annotations

import numpy as np
import pytest

from graphrun_agents.camera.pixel_formats import FORMATS, to_array
from graphrun_agents.errors import PixelFormatError

W, H = 6, 4


def test_mono8_is_the_buffer_reshaped() -> None:
    buffer = bytes(range(W * H))
    image, sent_as = to_array(buffer, W, H, "Mono8")
    assert sent_as == "Mono8"
    assert image.dtype == np.uint8 and image.shape == (H, W)
    assert image[1, 2] == 1 * W + 2
    assert image[-1, -1] == W * H - 1


@pytest.mark.parametrize(("pixel_format", "top"), [("Mono10", 1023), ("Mono12", 4095), ("Mono16", 65535)])
def test_unpacked_mono_is_little_endian_uint16_with_values_unscaled(pixel_format: str, top: int) -> None:
    values = np.linspace(0, top, W * H).astype(np.uint16).reshape(H, W)
    buffer = b"".join(int(v).to_bytes(2, "little") for v in values.ravel())
    image, sent_as = to_array(buffer, W, H, pixel_format)
    assert sent_as == pixel_format
    assert image.dtype == np.uint16 and image.shape == (H, W)
    assert np.array_equal(image, values)
    assert image.max() == top


def test_rgb8_becomes_bgr8() -> None:
    buffer = bytes([200, 100, 10] * (W * H))  # R, G, B
    image, sent_as = to_array(buffer, W, H, "RGB8")
    assert sent_as == "BGR8" and image.shape == (H, W, 3) and image.dtype == np.uint8
    assert image[2, 3].tolist() == [10, 100, 200]


def test_bgr8_is_kept_as_it_is() -> None:
    buffer = bytes([10, 100, 200] * (W * H))
    image, sent_as = to_array(buffer, W, H, "BGR8")
    assert sent_as == "BGR8" and image[0, 0].tolist() == [10, 100, 200]


def test_rgba8_drops_alpha_and_becomes_bgr8() -> None:
    buffer = bytes([200, 100, 10, 255] * (W * H))
    image, sent_as = to_array(buffer, W, H, "RGBa8")
    assert sent_as == "BGR8" and image.shape == (H, W, 3)
    assert image[3, 5].tolist() == [10, 100, 200]


def _mosaic(pattern: str, bgr: tuple[int, int, int], width: int = 16, height: int = 12) -> bytes:
    """A Bayer mosaic of a uniform colour; ``pattern`` names the top-left 2x2 tile (PFNC)."""
    value = {"B": bgr[0], "G": bgr[1], "R": bgr[2]}
    mosaic = np.zeros((height, width), dtype=np.uint8)
    mosaic[0::2, 0::2] = value[pattern[0]]
    mosaic[0::2, 1::2] = value[pattern[1]]
    mosaic[1::2, 0::2] = value[pattern[2]]
    mosaic[1::2, 1::2] = value[pattern[3]]
    return mosaic.tobytes()


@pytest.mark.parametrize(("pixel_format", "tile"), [("BayerRG8", "RGGB"), ("BayerBG8", "BGGR"), ("BayerGR8", "GRBG"), ("BayerGB8", "GBRG")])
def test_bayer_mosaics_are_demosaiced_to_the_colour_they_encode(pixel_format: str, tile: str) -> None:
    colour = (10, 100, 200)  # B, G, R: all three different, so a swapped pattern shows
    image, sent_as = to_array(_mosaic(tile, colour), 16, 12, pixel_format)
    assert sent_as == "BGR8" and image.shape == (12, 16, 3)
    assert image[2:-2, 2:-2].reshape(-1, 3).tolist() == [list(colour)] * (8 * 12)


def test_padded_lines_are_skipped() -> None:
    pitch = W + 2
    lines = [bytes(range(r * W, (r + 1) * W)) + b"\xee\xee" for r in range(H)]
    image, _ = to_array(b"".join(lines), W, H, "Mono8", line_pitch=pitch)
    assert image.shape == (H, W) and image.flags.c_contiguous
    assert image.ravel().tolist() == list(range(W * H))


def test_copy_gives_an_array_that_does_not_share_the_buffer() -> None:
    buffer = np.arange(W * H, dtype=np.uint8)
    view, _ = to_array(buffer, W, H, "Mono8")
    owned, _ = to_array(buffer, W, H, "Mono8", copy=True)
    assert np.shares_memory(view, buffer)
    assert not np.shares_memory(owned, buffer)


def test_an_array_of_another_dtype_is_read_as_its_bytes() -> None:
    # harvesters hands Mono16 data over as uint16; the bytes are what count.
    values = np.arange(W * H, dtype=np.uint16) * 1000
    image, _ = to_array(values, W, H, "Mono16")
    assert np.array_equal(image.ravel(), values)


def test_an_unsupported_format_is_refused_by_name() -> None:
    with pytest.raises(PixelFormatError, match="'Mono12p'.*not supported"):
        to_array(bytes(W * H * 2), W, H, "Mono12p")


def test_a_short_buffer_is_refused_with_sizes() -> None:
    with pytest.raises(PixelFormatError, match=r"RGB8 buffer of 10 bytes is too small for 6x4 \(needs 72 bytes\)"):
        to_array(bytes(10), W, H, "RGB8")


def test_the_required_formats_are_all_supported() -> None:
    required = {"Mono8", "Mono10", "Mono12", "Mono16", "RGB8", "BGR8", "RGBa8", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"}
    assert required <= set(FORMATS)
