"""The inference server (installed as `nlu.serve`)."""
