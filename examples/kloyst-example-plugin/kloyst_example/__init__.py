"""A worked example of a third-party Kloyst plugin (see docs/writing_plugins.md).

Vendors who enable ``example`` keep short notes, ping them through a background task,
and get a log of their domain events; ``example_digest`` summarises the notes.
"""
