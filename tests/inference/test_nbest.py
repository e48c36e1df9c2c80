"""ASR n-best input: the hypotheses vote, and a misrecognised top one is outvoted."""

from __future__ import annotations

import pytest

from tests.helpers import said


def test_nbest_outvotes_a_misrecognised_top_hypothesis() -> None:
    from nlu.inference.nbest import combine

    top = said("turn of the lights", "lights", "turn_off", 0.8)  # "of" misheard for "on"
    second = said("turn on the lights", "lights", "turn_on", 0.9)
    third = said("turn on the light", "lights", "turn_on", 0.9)
    result = combine([top, second, third], [0.4, 0.35, 0.25], top_k=5)
    assert result.intent is not None and result.intent.name == "turn_on"
    assert result.hypothesis == 1 and result.text == "turn on the lights"
    assert [i.name for i in result.intents] == ["turn_on", "turn_off"]
    on, off = (0.35 + 0.25) * 0.9 * 0.9, 0.4 * 0.9 * 0.8  # ASR weight x skill x intent
    assert result.intent.confidence == pytest.approx(on / (on + off), abs=1e-4)
    alone = combine([top], [1.0], top_k=5)
    assert alone.hypothesis == 0 and alone.intent is not None and alone.intent.name == "turn_off"
    with pytest.raises(ValueError, match="ASR confidences"):
        combine([top, second], [1.0], top_k=5)
