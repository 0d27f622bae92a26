"""Authentication (bearer JWT access tokens, rotating refresh tokens) and the security policy.

The routes (:mod:`kloyst.auth.views`) are included by the app factory under the API prefix.
"""


def includeme(config) -> None:
    config.include(".policy")
