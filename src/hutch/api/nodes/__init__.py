"""Adapters to nodes: ``HttpNodeClient`` speaks the node API (docs/node-api.md)."""
