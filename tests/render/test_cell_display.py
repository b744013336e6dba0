"""Sequence and volume cells: sizes, band colours, peak slices and mask marks, pixel by pixel."""

import numpy as np
import pytest

from keras_cam.render.cell_display import (
    BAND_HEIGHT,
    LABEL_HEIGHT,
    PANEL,
    PLOT_HEIGHT,
    SEQUENCE_SIZE,
    SLICE_GAP,
    band_values,
    peak_index,
    sequence_cell,
    volume_cell,
)
from keras_cam.render.overlay import colormap_table

BAND_ROW = PLOT_HEIGHT + 2 + BAND_HEIGHT // 2
WIDTH = SEQUENCE_SIZE[1]


def _lut(values, colormap="jet"):
    return colormap_table(colormap)[(np.clip(values, 0, 1) * 255 + 0.5).astype(np.uint8)]


@pytest.mark.parametrize("length", [WIDTH, WIDTH // 4, 3 * WIDTH + 5])
def test_band_shows_the_map_value_of_each_column(length):
    heatmap = np.random.default_rng(length).uniform(size=length).astype(np.float32)
    signal = np.random.default_rng(1).normal(size=(length, 2))
    cell = sequence_cell(signal, heatmap, colormap="viridis")
    assert cell.shape == (*SEQUENCE_SIZE, 3)
    assert cell.dtype == np.uint8
    # Column x covers steps [x·T/W, (x+1)·T/W): one step each, a repeated step, or a maximum.
    expected = [
        heatmap[x * length // WIDTH : max(x * length // WIDTH + 1, (x + 1) * length // WIDTH)].max()
        for x in range(WIDTH)
    ]
    np.testing.assert_array_equal(cell[BAND_ROW], _lut(np.array(expected), "viridis"))


def test_a_one_step_peak_survives_a_long_sequence():
    heatmap = np.zeros(10_000)
    heatmap[7_777] = 1.0
    values = band_values(heatmap, WIDTH)
    assert np.flatnonzero(values).tolist() == [7_777 * WIDTH // 10_000]


def test_lines_are_drawn_in_the_plot_and_the_plain_band_is_empty():
    signal = np.sin(np.linspace(0, 6, 50))
    cell = sequence_cell(signal, None)
    plot = cell[:PLOT_HEIGHT]
    drawn = (plot != 255).any(axis=-1)
    # One line, spread over the width and over the plot's height (scaled to its range).
    assert drawn.any(axis=0).mean() > 0.95
    rows = np.flatnonzero(drawn.any(axis=1))
    assert rows.min() <= 3
    assert rows.max() >= PLOT_HEIGHT - 4
    inside = cell[PLOT_HEIGHT + 4 : PLOT_HEIGHT + BAND_HEIGHT, 2:-2]
    assert (inside == 255).all()


def test_sequence_mask_bracket_spans_the_masked_columns():
    length = WIDTH // 2
    mask = np.zeros(length, dtype=bool)
    mask[30:45] = True
    cell = sequence_cell(np.zeros((length, 1)), np.zeros(length), mask=mask)
    bar = PLOT_HEIGHT + 2 + BAND_HEIGHT + 4
    black = (cell[bar] == 0).all(axis=-1)
    assert np.flatnonzero(black).tolist() == list(range(60, 90))
    without = sequence_cell(np.zeros((length, 1)), np.zeros(length))
    assert (without[bar] == 255).all()


def _panel_of(cell, k):
    left = k * (PANEL + SLICE_GAP)
    return cell[LABEL_HEIGHT:, left : left + PANEL]


def test_volume_slices_go_through_the_peak_of_the_map():
    rng = np.random.default_rng(0)
    depth, height, width = 6, 10, 12
    heatmap = rng.uniform(0, 0.5, size=(depth, height, width))
    heatmap[4, 3, 9] = 1.0
    assert peak_index(heatmap) == np.unravel_index(np.argmax(heatmap), heatmap.shape)
    # Each voxel's grey level encodes one coordinate, per panel read back with alpha=0.
    d, h, w = np.indices((depth, height, width))
    cells = {
        axis: volume_cell(coordinate[..., None] * 10.0, heatmap, alpha=0.0)
        for axis, coordinate in (("d", d), ("h", h), ("w", w))
    }
    assert cells["d"].shape == (LABEL_HEIGHT + PANEL, 3 * PANEL + 2 * SLICE_GAP, 3)
    # Panel 0 is the slice d=4: its d-encoded grey is uniform at 4/(depth-1) of white.
    grey = _panel_of(cells["d"], 0)[PANEL // 2, PANEL // 2, 0]
    assert grey == round(255 * 4 / (depth - 1))
    # Panel 1 is the slice h=3, panel 2 the slice w=9.
    assert _panel_of(cells["h"], 1)[PANEL // 2, PANEL // 2, 0] == round(255 * 3 / (height - 1))
    assert _panel_of(cells["w"], 2)[PANEL // 2, PANEL // 2, 0] == round(255 * 9 / (width - 1))


def test_volume_overlay_blends_the_map_slice_like_overlay():
    volume = np.zeros((4, 4, 4, 1))
    heatmap = np.zeros((4, 4, 4))
    heatmap[1, 2, 3] = 1.0
    cell = volume_cell(volume, heatmap, alpha=0.5)
    axial = _panel_of(cell, 0)
    # The axial slice is 4×4 enlarged 15×: voxel (h=2, w=3) covers rows 30–44, cols 45–59.
    hot = 0.5 * _lut(np.array([1.0]))[0].astype(float) + 0.5
    cold = 0.5 * _lut(np.array([0.0]))[0].astype(float) + 0.5
    np.testing.assert_array_equal(axial[37, 52], hot.astype(np.uint8))
    np.testing.assert_array_equal(axial[7, 7], cold.astype(np.uint8))


def test_volume_mask_is_outlined_on_each_slice():
    volume = np.zeros((8, 8, 8, 1))
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[2:6, 2:6, 2:6] = True
    heatmap = mask.astype(np.float32)
    plain = volume_cell(volume, heatmap, alpha=0.0)
    outlined = volume_cell(volume, heatmap, alpha=0.0, mask=mask)
    for k in range(3):
        white = (_panel_of(outlined, k) == 255).all(axis=-1)
        # Enlarged 7.5×: the cube spans pixels 15–44; its outline is that square's border.
        assert white[15, 15:45].all()
        assert white[44, 15:45].all()
        assert white[15:45, 15].all()
        assert not white[20:40, 20:40].any()
        assert not (_panel_of(plain, k) == 255).all(axis=-1).any()


def test_plain_volume_is_sliced_through_the_mask():
    volume = np.zeros((9, 9, 9, 1))
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[1:3, 6:8, 0:2] = True
    volume[mask] = 1.0
    cell = volume_cell(volume, None, mask=mask)
    for k in range(3):
        assert (_panel_of(cell, k) > 128).all(axis=-1).any()  # the object is on every slice


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sequence_cell(np.zeros((2, 3, 4)), None), r"\(T, C\)"),
        (lambda: sequence_cell(np.zeros((8, 1)), np.zeros((8, 2))), "1 axis"),
        (lambda: volume_cell(np.zeros((4, 4)), None), r"\(D, H, W, C\)"),
        (lambda: volume_cell(np.zeros((4, 4, 4, 1)), np.zeros((4, 4))), "3 axis"),
    ],
)
def test_wrong_shapes_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# In the callback: a real fit, the event files read back.

METHODS = ["gradcam", "layercam"]


def _first_map_cell(page, cell):
    """Probe 0's map cell: the second image of the first group of a grid page."""
    height, width = cell.shape[:2]
    return page[4 : 4 + height, 8 + width : 8 + 2 * width]


def _assert_nearly_equal(drawn, expected):
    # Maps recomputed after training agree to ~1e-6: a colour may sit one LUT step away.
    differs = (drawn != expected).any(axis=-1)
    assert differs.mean() < 0.02, differs.mean()


def _sequences():
    from keras import layers

    from keras_cam.data import make_sequences

    data = make_sequences(16, length=32, seed=0)
    return data, layers.Conv1D, layers.GlobalAveragePooling1D, sequence_cell


def _volumes():
    from keras import layers

    from keras_cam.data import make_volumes

    data = make_volumes(16, size=8, seed=0)
    return data, layers.Conv3D, layers.GlobalAveragePooling3D, volume_cell


@pytest.mark.slow
@pytest.mark.parametrize("kind", [_sequences, _volumes], ids=["sequence", "volume"])
def test_probes_are_drawn_in_every_image_tag_on_the_scale_asked_for(tmp_path, kind):
    """One fit, two callbacks: `normalize="image"` draws each map to its own range, `"run"`
    every map over the largest raw value of the run so far; the maps are recomputed at
    each epoch's end and scaled in numpy, and the cells drawn from them must match."""
    import keras
    from cam_references import interpolate
    from conftest import read_events
    from keras import layers

    import keras_cam

    data, conv, pool, draw = kind()
    inputs = keras.Input(data.images.shape[1:])
    x = conv(4, 3, padding="same", activation="relu", name="features")(inputs)
    model = keras.Model(inputs, layers.Dense(3)(pool()(x)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe = data.images[:3].copy()
    probe[0] *= 0.2  # a faint input: its map is weak next to the others'
    explained = []  # each epoch's maps, recomputed with the weights the callbacks see
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: explained.append(
            keras_cam.explain(model, probe, method=METHODS)
        )
    )
    callbacks = [recorder] + [
        keras_cam.CAMCallback(
            (probe, data.labels[:3]),
            tmp_path / normalize,
            method=METHODS,
            class_names=data.class_names,
            view=keras_cam.ViewOptions(normalize=normalize),
            watch=keras_cam.WatchOptions(probe_masks=data.masks[:3]),
        )
        for normalize in ("image", "run")
    ]
    model.fit(data.images, data.labels, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
    shown = {normalize: read_events(str(tmp_path / normalize)) for normalize in ("image", "run")}
    for tag in ("cam/gradcam/grid", "cam/layercam/grid", "cam/compare", "cam/gradcam/timeline"):
        assert sorted(shown["run"][tag]) == [0, 1], tag
    size = probe.shape[1:-1]
    for name in METHODS:
        peak = 0.0
        for step, results in enumerate(explained):
            result = results[name]
            assert (result.heatmaps.reshape(3, -1).max(1) > 0).all()  # none flat
            peak = max(peak, float(result.raw.max()))
            run = interpolate(result.raw.astype(np.float64), size) / peak
            for normalize, heatmap in (("image", result.heatmaps[0]), ("run", run[0])):
                page = shown[normalize][f"cam/{name}/grid"][step][0]
                expected = draw(probe[0], heatmap, mask=data.masks[0])
                _assert_nearly_equal(_first_map_cell(page, expected), expected)
        # The faint input's map is drawn dim on the shared scale, at full colour alone.
        assert run[0].max() < 0.5
        assert result.heatmaps[0].max() == 1.0
    page = shown["image"]["cam/gradcam/grid"][1][0]
    plain = draw(probe[0], None, mask=data.masks[0])
    np.testing.assert_array_equal(page[4 : 4 + plain.shape[0], 4 : 4 + plain.shape[1]], plain)
    if draw is sequence_cell:
        assert page.shape[1] <= 400  # one (signal | map) pair per row: shown at full size
