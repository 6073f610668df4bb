import numpy as np

from tracker.smoothing import OneEuroConfig, OneEuroFilter


def test_still_hand_jitter_is_reduced():
    rng = np.random.default_rng(0)
    truth = np.full((21, 3), 0.5)
    f = OneEuroFilter()
    out = np.array([f(truth + rng.normal(0, 0.003, truth.shape), t / 30) for t in range(300)])
    # At the default's cut-off (0.5 Hz) and 30 fps the noise alone would drop to a fifth;
    # the noise's own apparent speed raises the cut-off (the price of little lag in
    # motion), leaving 0.61 (0.58 at 1.5 Hz, the default before: the further the output
    # lags behind the noise, the faster the noise looks).
    assert np.std(out[100:] - truth) < 0.65 * 0.003


def test_moving_hand_is_followed_with_little_lag():
    f = OneEuroFilter(OneEuroConfig())
    times = np.arange(60) / 30
    positions = 0.3 * times  # 30 cm/s
    out = np.array([f(np.full((21, 3), p), t)[0, 0] for p, t in zip(positions, times)])
    # A first-order low-pass lags by about v * tau, tau = 1 / (2 pi f_c); the speed term
    # raises f_c from 0.5 to 24.5 Hz at 30 cm/s, bounding the lag by ~2 mm (49x less than
    # without it).
    config = OneEuroConfig()
    cutoff = config.min_cutoff_hz + config.speed_coefficient * 0.3
    assert np.abs(out[30:] - positions[30:]).max() < 0.3 / (2 * np.pi * cutoff)


def test_reset_restarts_the_filter():
    f = OneEuroFilter()
    f(np.zeros(3), 0.0)
    f(np.ones(3), 0.1)
    f.reset()
    np.testing.assert_array_equal(f(np.full(3, 7.0), 1.0), np.full(3, 7.0))


def test_a_clock_stepping_back_a_little_keeps_the_track_smooth():
    # Device clocks may step back while the frames go on in order (the pipeline resets the
    # filter on a real gap): the output keeps moving towards the samples, no jump to the raw one.
    # A setting that smooths much, so that one interval's step is visibly short of the sample.
    f = OneEuroFilter(OneEuroConfig(min_cutoff_hz=1.5, speed_coefficient=4.0, derivative_cutoff_hz=1.0))
    outputs = [f(np.full(3, x), t)[0] for x, t in ((0.0, 0.0), (0.01, 0.033), (0.02, 0.066), (0.1, 0.065), (0.11, 0.098))]
    assert all(a < b for a, b in zip(outputs, outputs[1:]))
    assert outputs[3] < 0.05  # one interval's step towards 0.1, not 0.1 itself
    # After the step back, intervals are measured from the new clock reading.
    assert abs(f._last_dt - 0.033) < 1e-9


def test_a_coordinate_without_a_sample_holds_its_value_and_does_not_poison_the_track():
    f = OneEuroFilter()
    f(np.array([0.0, 0.0, np.nan]), 0.0)  # no value yet for z
    held = f(np.array([np.nan, 0.1, 0.5]), 0.033)
    assert held[0] == 0.0 and 0 < held[1] < 0.1 and held[2] == 0.5  # z starts from its first sample
    later = f(np.array([0.2, 0.2, 0.6]), 0.066)
    assert np.all(np.isfinite(later)) and 0 < later[0] < 0.2 and 0.5 < later[2] < 0.6


def test_a_repeated_timestamp_filters_over_the_last_interval():
    f = OneEuroFilter()
    f(np.zeros(3), 0.0)
    filtered = f(np.ones(3), 0.1)
    assert 0 < filtered[0] < 1
    # Same clock reading again: a step towards the new sample over the last interval (0.1 s),
    # no jump to it.
    again = f(np.full(3, 5.0), 0.1)
    assert filtered[0] < again[0] < 5.0
    assert f(np.full(3, 5.0), 0.2)[0] > again[0]


def test_an_input_without_a_clock_is_still_followed():
    # Every timestamp 0 (frames without one): filtered at a nominal 30 frames/s, not frozen
    # on the first frame.
    f = OneEuroFilter()
    outputs = [f(np.full(3, x), 0.0)[0] for x in (0.0, 0.1, 0.2, 0.3, 0.4)]
    assert all(a < b for a, b in zip(outputs, outputs[1:])) and outputs[-1] < 0.4


def test_a_timestamp_that_is_not_a_number_does_not_poison_the_track():
    f = OneEuroFilter()
    outputs = [f(np.full(3, x), t)[0] for x, t in ((0.0, 0.0), (0.1, float("nan")), (0.2, 0.066), (0.3, float("inf")), (0.4, 0.2))]
    assert np.all(np.isfinite(outputs)) and all(a < b for a, b in zip(outputs, outputs[1:]))
