"""Runnable pipeline definitions: they wire spray's stages (what runs, in which order, on what).
Installed as ``spray.pipelines`` (the repo keeps this folder at the top)."""
