"""Alarm rules on scripted metric series: when they fire, re-arm, and which images they name."""

import numpy as np
import pytest

from keras_cam import Alarm


def fired_at(alarm, series, method="gradcam"):
    return [epoch for epoch, value in enumerate(series) if alarm.update(method, value)]


def test_fires_once_when_the_breach_has_lasted_the_given_events():
    alarm = Alarm("energy_in_mask", below=0.2, events=2)
    assert fired_at(alarm, [0.5, 0.1, 0.3, 0.1, 0.15, 0.05, 0.01, 0.4, 0.1, 0.1]) == [4, 9]


def test_missing_values_neither_count_nor_break_a_run():
    alarm = Alarm("drift", above=0.5, events=2)
    assert fired_at(alarm, [None, 0.7, None, 0.9, 0.1]) == [3]


def test_nan_is_a_breach_and_methods_are_counted_apart():
    alarm = Alarm("focus", above=0.9, events=2)
    assert not alarm.update("gradcam", float("nan"))
    assert not alarm.update("layercam", 0.95)
    assert alarm.update("gradcam", 0.99)
    assert alarm.applies_to("layercam")
    assert not Alarm("focus", above=0.9, method="gradcam").applies_to("layercam")


def test_reads_as_the_rule_it_is():
    assert str(Alarm("energy_in_mask", below=0.2, events=2)) == (
        "energy_in_mask below 0.2 for 2 events"
    )
    assert str(Alarm("drift", above=0.5)) == "drift above 0.5 for 1 event"


def test_worst_images_are_the_furthest_on_the_wrong_side():
    values = np.array([0.3, 0.1, np.nan, 0.9, 0.1])
    np.testing.assert_array_equal(
        Alarm("energy_in_mask", below=0.2).worst_images(values), [2, 1, 4]
    )
    np.testing.assert_array_equal(Alarm("drift", above=0.5).worst_images(values), [2, 3, 0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one threshold"),
        ({"below": 0.1, "above": 0.9}, "exactly one threshold"),
        ({"below": 0.1, "events": 0}, "events must be an integer >= 1"),
    ],
)
def test_bad_rules_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Alarm("focus", **kwargs)
