"""The job files spray ships (YAML), installed as ``spray.configs``: ``spray init`` writes them out."""
