"""Rendering: the patient report, SVG charts, gating pictures. Data in, bytes out; no Prefect, no file moves."""
