"""Putting a worker database back to the template's state: snapshot, schema, restore."""
