"""The dashboard: one web app served by `mldash ui` (local runs) and `mldash server`."""
