"""One-euro filter: exact on hand-worked inputs; on synthetic signals it cuts jitter on a still
signal and lags less than a plain low-pass of the same cutoff under motion."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.facemesh.smoothing import OneEuroFilter, jitter, lag, smooth_sequence, smoothing_factor

FPS = 30.0


def test_beta_zero_is_an_exponential_smoother():
    """A unit step after one zero sample: x_hat_k = 1 - (1 - alpha)^k, alpha = 1 / (1 + tau / Te)."""
    alpha = 1.0 / (1.0 + (1.0 / (2 * np.pi * 1.0)) / (1 / FPS))
    assert smoothing_factor(1.0, 1 / FPS) == pytest.approx(alpha)
    out = smooth_sequence(np.array([0.0] + [1.0] * 6), FPS, min_cutoff=1.0, beta=0.0)
    assert out.tolist() == pytest.approx([0.0] + [1 - (1 - alpha) ** k for k in range(1, 7)], abs=1e-12)


def test_cutoff_rises_with_speed():
    """Second sample of a jump of 1 at 30 fps: dx = 30, dx_hat = a_d * 30 (a_d from d_cutoff = 1),
    cutoff = 1 + beta * dx_hat; x_hat = alpha(cutoff) * 1."""
    f = OneEuroFilter(min_cutoff=1.0, beta=0.2, d_cutoff=1.0)
    f(0.0, 0.0)
    a_d = smoothing_factor(1.0, 1 / FPS)
    expected = smoothing_factor(1.0 + 0.2 * a_d * 30.0, 1 / FPS)
    assert float(f(1.0, 1 / FPS)) == pytest.approx(float(expected), abs=1e-12)


def test_jitter_and_lag_by_hand():
    track = np.zeros((5, 3, 2))
    track[:, :, 0] = np.arange(5)[:, None]  # every point moves 1 px per frame
    assert jitter(track, 2.0) == pytest.approx(0.5)
    t = np.arange(40, dtype=float)
    reference = np.stack([np.sin(t / 5), np.cos(t / 7)], -1)[:, None, :]
    delayed = np.stack([np.sin((t - 3) / 5), np.cos((t - 3) / 7)], -1)[:, None, :]
    assert lag(delayed, reference, max_frames=6) == pytest.approx(3.0)
    assert lag(reference, reference) == 0.0
    # frames without a face (NaN) are left out of both measures
    gappy = delayed.copy()
    gappy[[8, 20, 21]] = np.nan
    assert lag(gappy, reference, max_frames=6) == pytest.approx(3.0)
    track[2] = np.nan  # steps 1->2 and 2->3 are gone, the other two remain
    assert jitter(track, 2.0) == pytest.approx(0.5)
    track[:] = np.nan
    with pytest.raises(ValueError, match="two consecutive frames"):
        jitter(track, 1.0)


def test_still_signal_jitter_falls_as_the_smoother_predicts():
    """White noise through y_t = a x_t + (1 - a) y_t-1: frame-to-frame steps shrink by a / sqrt(2 - a)."""
    rng = np.random.default_rng(0)
    still = 50.0 + rng.normal(0.0, 0.5, (4000, 4, 2))
    raw = jitter(still, 1.0)
    smoothed = jitter(smooth_sequence(still, FPS, 1.0, 0.0), 1.0)
    a = smoothing_factor(1.0, 1 / FPS)
    assert smoothed / raw == pytest.approx(a / np.sqrt(2 - a), rel=0.05)
    # the one-euro filter on the same still signal stays close to that (speed is small)
    one_euro = jitter(smooth_sequence(still, FPS, 1.0, 0.05), 1.0)
    assert one_euro < 0.5 * raw


def test_one_euro_follows_motion_a_low_pass_lags_behind():
    """A ramp of 100 px/s: the low-pass's steady-state delay is (1 - a) / a frames (4.77 at 30 fps,
    1 Hz); the one-euro filter with beta = 0.5 s/px opens its cutoff and lags under a frame."""
    t = np.arange(120) / FPS
    ramp = (100.0 * t)[:, None, None] * np.ones((120, 4, 2))
    a = smoothing_factor(1.0, 1 / FPS)
    low_pass = lag(smooth_sequence(ramp, FPS, 1.0, 0.0), ramp)
    one_euro = lag(smooth_sequence(ramp, FPS, 1.0, 0.5), ramp)
    assert low_pass == pytest.approx((1 - a) / a, abs=0.05)
    assert one_euro <= 0.25
