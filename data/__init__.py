"""Skill files, dataset formats and benchmark loaders (installed as `nlu.data`)."""
