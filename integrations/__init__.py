"""Framework integrations: ``mldash.integrations.lightning``, ``.keras``, ``.transformers``.

Each module imports its framework; the core never imports them.
"""
