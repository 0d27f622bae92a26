"""Chunk processing: mapped rows in, contacts merged, counts and rejections recorded."""

TASKS: list = []
