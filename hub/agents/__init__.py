"""Faust stream processors: thin steps of decode -> service -> encode/send."""
