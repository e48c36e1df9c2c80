"""The evaluation room: `metrics` (scores from gold examples and ParseResults), `report`
(tables and plots), `evaluate` (the `nlu evaluate` command)."""
