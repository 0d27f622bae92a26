"""The templates plugin: message templates synced from Meta, submitted for review, their status from webhooks,
parameters validated and variables mapped."""
