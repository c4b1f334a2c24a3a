"""Routing rule sets (YAML) shipped with the hub, with their example-based tests."""
