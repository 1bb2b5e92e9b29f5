"""Web-framework adapters (Flask, Django), installed as ``model_agnostic.adapters``.

Filled by the serving work. Never ``import adapters``: a different PyPI
distribution owns that top-level name.
"""
