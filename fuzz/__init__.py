"""Fuzzing of the decoders and the API body parsers (atheris; see fuzz/README.md)."""
