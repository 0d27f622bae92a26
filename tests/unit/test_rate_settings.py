"""The general rate limit's settings (kloyst.ratelimit.*): count/seconds, checked at start-up, overridable by env."""

from __future__ import annotations

import pytest

from kloyst.config import CORE_SETTINGS, ConfigurationError, Rate, resolve
from kloyst.testing import TEST_SETTINGS

SECRETS = {**TEST_SETTINGS, "kloyst.database.url": "sqlite://"}


def test_the_limits_default_to_a_burst_refilled_over_a_minute():
    defaults = {k: v for k, v in SECRETS.items() if not k.startswith("kloyst.ratelimit.")}
    resolved = resolve(defaults, CORE_SETTINGS, {})
    assert resolved["kloyst.ratelimit.per_user"] == Rate(300, 60)
    assert resolved["kloyst.ratelimit.per_vendor"] == Rate(600, 60)
    assert resolved["kloyst.ratelimit.per_ip"] == Rate(120, 60)


def test_the_environment_overrides_a_limit():
    resolved = resolve(SECRETS, CORE_SETTINGS, {"RATELIMIT_PER_VENDOR": "50/10"})
    assert resolved["kloyst.ratelimit.per_vendor"] == Rate(50, 10)


@pytest.mark.parametrize("bad", ["300", "0/60", "300/0", "-1/60", "ten/60", "1.5/60"])
def test_a_malformed_limit_stops_start_up_naming_its_variable(bad):
    with pytest.raises(ConfigurationError, match=r"kloyst\.ratelimit\.per_user \(environment variable "
                                                 r"RATELIMIT_PER_USER\) is invalid"):
        resolve(SECRETS, CORE_SETTINGS, {"RATELIMIT_PER_USER": bad})
