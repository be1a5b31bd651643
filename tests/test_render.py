import numpy as np

from spray.render import heatmap_rgb, overlay, scale_relevance


def test_diverging_map_is_centred_at_zero():
    r = np.array([[-2.0, 0.0, 1.0]])
    rgb = heatmap_rgb(r)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    red, white, blue = rgb[0, 2], rgb[0, 1], rgb[0, 0]
    assert red[0] > red[2] and blue[2] > blue[0]
    assert white.min() > 240  # zero is white in 'bwr'
    np.testing.assert_allclose(scale_relevance(r), [[-1.0, 0.0, 0.5]])


def test_percentile_scaling_clips_outliers():
    r = np.zeros((10, 10))
    r[0, 0] = 1000.0
    r[5, 5] = 1.0
    assert scale_relevance(r, "percentile", 99.0)[5, 5] < 1.0 + 1e-12
    assert scale_relevance(r, "symmetric")[5, 5] == 1e-3


def test_overlay_shape_and_zero_relevance_keeps_gray_image():
    image = np.random.default_rng(0).random((3, 8, 8))
    out = overlay(image, np.zeros((3, 8, 8)))
    assert out.shape == (8, 8, 3)
    assert np.all(out[..., 0] == out[..., 1])
