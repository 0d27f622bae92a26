"""The wallet plugin: a prepaid balance per vendor, an append-only ledger, holds for campaigns."""
