"""The campaigns plugin: a template to an audience, quoted, paid from the wallet, sent and tracked."""
