"""The Meta sandbox: a local stand-in for the WhatsApp Cloud API that Kloyst's tests and benchmarks talk to.

It is a real HTTP server (``kloyst sandbox <ini>``, or :class:`SandboxServer` in a test) that
speaks the Graph paths Kloyst uses (messages to phone numbers and BSUIDs, read receipts, media,
templates, phone numbers, business profile, WABA) in the Graph versions Meta serves, answers with
Meta's response and error shapes, enforces each number's throughput, the pair rate limit and the
customer-service window the way Meta does, and calls a webhook back with signed status events
and messages of simulated customers (:mod:`kloyst.sandbox.inbound`), retrying the failed ones as
Meta does. Everything lives in memory; the ``/_sandbox/`` control API configures it, simulates
customers and reports what it received and accepted.
"""

from kloyst.sandbox.server import SandboxServer
from kloyst.sandbox.state import SandboxState

__all__ = ["SandboxServer", "SandboxState"]
