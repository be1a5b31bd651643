"""Runnable pipeline definitions: they wire spray's stages (what runs, in which order, on what)."""
