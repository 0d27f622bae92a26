"""Tasks of the upload side: scanning a stored file, then extracting headers and chunks."""

TASKS: list = []
