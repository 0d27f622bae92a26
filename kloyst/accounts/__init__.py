"""Vendors (tenants) and their users: the identities everything else hangs from."""


def includeme(config) -> None:
    config.include(".views")
