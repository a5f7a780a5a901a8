"""Liveness and rate of a topic, driven by explicit receive times (no wall clock)."""

from __future__ import annotations

import math

import pytest

from perception.messaging import Liveness


def feed(live: Liveness, t0: float, period: float, seqs) -> float:
    t = t0
    for seq in seqs:
        live.on_message(t, seq)
        t += period
    return t - period


def test_nothing_received():
    status = Liveness(20.0).status(100.0)
    assert not status.alive and not status.freq_ok and math.isnan(status.rate_hz) and status.age_s == math.inf


def test_nominal_rate_is_alive_and_ok():
    live = Liveness(20.0)
    t = feed(live, 0.0, 0.05, range(40))
    status = live.status(t + 0.01)
    assert status.alive and status.freq_ok and status.rate_hz == pytest.approx(20.0) and status.missed == 0


def test_alive_within_n_periods_only():
    live = Liveness(20.0, timeout_periods=5)
    t = feed(live, 0.0, 0.05, range(10))
    assert live.status(t + 0.25).alive
    status = live.status(t + 0.26)
    assert not status.alive and not status.freq_ok and status.age_s == pytest.approx(0.26)


def test_slow_publisher_is_alive_but_not_freq_ok():
    live = Liveness(20.0, tolerance=0.2)
    t = feed(live, 0.0, 1 / 15, range(30))   # 15 Hz: 25 % low
    status = live.status(t)
    assert status.alive and not status.freq_ok and status.rate_hz == pytest.approx(15.0)
    live = Liveness(20.0, tolerance=0.2)
    t = feed(live, 0.0, 1 / 17, range(30))   # 17 Hz: 15 % low, within tolerance
    assert live.status(t).freq_ok


def test_rate_counts_sequence_not_arrivals():
    """A conflating or lossy reader sees one message in four; the publisher's rate is still nominal."""
    live = Liveness(20.0)
    t = feed(live, 0.0, 0.2, range(0, 100, 4))
    status = live.status(t)
    assert status.freq_ok and status.rate_hz == pytest.approx(20.0) and status.missed == 24 * 3


def test_rate_follows_a_change_within_the_window():
    live = Liveness(10.0, window_periods=10)  # 1 s window
    t = feed(live, 0.0, 0.1, range(50))
    t = feed(live, t + 0.2, 0.2, range(50, 60))  # publisher slows to 5 Hz
    status = live.status(t)
    assert status.rate_hz == pytest.approx(5.0) and not status.freq_ok


def test_publisher_restart_resets_the_window():
    live = Liveness(20.0)
    t = feed(live, 0.0, 0.05, range(1000, 1040))
    t = feed(live, t + 0.05, 0.05, range(0, 10))
    status = live.status(t)
    assert status.missed == 0 and status.rate_hz == pytest.approx(20.0) and status.freq_ok


def test_invalid_parameters():
    with pytest.raises(ValueError, match="nominal_hz=0"):
        Liveness(0.0)
    with pytest.raises(ValueError, match="tolerance=1.5"):
        Liveness(2.0, tolerance=1.5)
