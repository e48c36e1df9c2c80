"""The inference room: `parser` (the Parser, its backends and batched parsing), `decode`
(logits to one typed ParseResult), `nbest` (ASR hypotheses combined)."""
