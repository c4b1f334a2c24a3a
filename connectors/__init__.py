"""Connectors: one package per agency type; parsing and mapping pure, transport at the edge."""
