"""A tiny shop application whose tests show pytest-pgtemplate in use."""
