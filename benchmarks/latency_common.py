"""What the latency scripts share: the utterances they send and how they take percentiles."""

from __future__ import annotations

# One per demo skill and then some, so routing and every skill's heads are exercised.
UTTERANCES = [
    "wake me up at 6:30 am tomorrow for the gym",
    "set a pasta timer for 12 minutes",
    "will it rain in paris this weekend",
    "play bohemian rhapsody by queen",
    "dim the living room lights to 20 percent",
    "how much time is left on the eggs",
    "turn off the porch light",
    "what's the temperature in tokyo",
]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported latency was really measured)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
