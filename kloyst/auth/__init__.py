"""Authentication (bearer JWT access tokens, rotating refresh tokens) and the security policy.

The routes (:mod:`kloyst.auth.views`) are included by the app factory under the API prefix;
the pages mailed links open (:mod:`kloyst.auth.pages`) are included here, outside it, at the
paths the links name.
"""


def includeme(config) -> None:
    config.include(".policy")
    config.include(".pages")
