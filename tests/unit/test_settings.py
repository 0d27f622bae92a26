"""Settings resolution: ini, then environment, ``${VAR}`` references, and every problem reported at once."""

import base64

import pytest

from kloyst.config import CORE_SETTINGS, SERVICE_TYPES, ConfigurationError, Setting, resolve

KEY = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")

SECRETS = {
    "kloyst.database.url": "sqlite:///:memory:",
    "kloyst.jwt.signing_keys": f"jwt-1:{KEY}",
    "kloyst.crypto.data_keys": f"data-1:{KEY}",
    "kloyst.crypto.hash_key": "hash-key",
    "kloyst.meta.app_secret": "app-secret",
    "kloyst.meta.verify_token": "verify-token",
}


def problems_of(settings: dict, environ: dict | None = None) -> str:
    with pytest.raises(ConfigurationError) as caught:
        resolve(settings, CORE_SETTINGS, environ or {})
    return str(caught.value)


def test_ini_value_is_used_when_no_environment_variable_is_set():
    assert resolve({**SECRETS, "kloyst.http.port": "7000"}, CORE_SETTINGS, {})["kloyst.http.port"] == 7000


def test_environment_variable_overrides_the_ini():
    resolved = resolve({**SECRETS, "kloyst.http.port": "7000"}, CORE_SETTINGS, {"PORT": "7100"})
    assert resolved["kloyst.http.port"] == 7100


def test_environment_variable_overrides_a_secret_written_in_the_ini():
    resolved = resolve(SECRETS, CORE_SETTINGS, {"DATABASE_URL": "postgresql://db/kloyst"})
    assert resolved["kloyst.database.url"] == "postgresql://db/kloyst"


def test_default_applies_when_neither_ini_nor_environment_says():
    assert resolve(SECRETS, CORE_SETTINGS, {})["kloyst.http.max_body_bytes"] == 1_048_576


def test_env_reference_takes_the_named_variable():
    resolved = resolve({**SECRETS, "kloyst.crypto.hash_key": "${STAGING_HASH}"}, CORE_SETTINGS,
                       {"STAGING_HASH": "from-env"})
    assert resolved["kloyst.crypto.hash_key"] == "from-env"


def test_env_reference_to_an_unset_variable_names_the_setting_and_the_variable():
    message = problems_of({**SECRETS, "kloyst.crypto.hash_key": "${STAGING_HASH}"})
    assert "kloyst.crypto.hash_key" in message
    assert "STAGING_HASH" in message


def test_every_missing_required_secret_is_reported_together():
    message = problems_of({})
    for key, env in [("kloyst.database.url", "DATABASE_URL"), ("kloyst.jwt.signing_keys", "JWT_SIGNING_KEYS"),
                     ("kloyst.crypto.data_keys", "DATA_ENCRYPTION_KEYS"), ("kloyst.crypto.hash_key", "DATA_HASH_KEY"),
                     ("kloyst.meta.app_secret", "META_APP_SECRET"),
                     ("kloyst.meta.verify_token", "META_VERIFY_TOKEN")]:
        assert key in message and env in message


def test_a_required_secret_set_to_an_empty_string_counts_as_missing():
    assert "DATA_HASH_KEY" in problems_of(SECRETS, {"DATA_HASH_KEY": "  "})


def test_problems_of_different_kinds_are_reported_together():
    message = problems_of({**SECRETS, "kloyst.http.port": "eighty"}, {"SERVICE_TYPE": "BOGUS", "META_APP_SECRET": ""})
    assert "kloyst.http.port" in message and "PORT" in message
    assert "SERVICE_TYPE" in message
    assert "META_APP_SECRET" in message


def test_service_type_is_validated_and_the_message_lists_every_mode():
    message = problems_of(SECRETS, {"SERVICE_TYPE": "BOGUS"})
    assert "kloyst.service_type" in message and "'BOGUS'" in message
    for mode in SERVICE_TYPES:
        assert mode in message
    assert set(SERVICE_TYPES) == {"API_GATEWAY", "WEBHOOK", "WORKER", "OUTBOX", "ALL"}


def test_service_type_is_case_insensitive():
    assert resolve(SECRETS, CORE_SETTINGS, {"SERVICE_TYPE": " worker "})["kloyst.service_type"] == "WORKER"


def test_keyring_is_parsed_with_the_first_key_active():
    resolved = resolve({**SECRETS, "kloyst.jwt.signing_keys": f"new:{KEY}, old:{KEY}"}, CORE_SETTINGS, {})
    assert list(resolved["kloyst.jwt.signing_keys"]) == ["new", "old"]
    assert resolved["kloyst.jwt.signing_keys"]["new"] == b"k" * 32


@pytest.mark.parametrize("value, expected", [
    ("jwt-1:" + base64.urlsafe_b64encode(b"k" * 16).decode(), "'jwt-1' has 16 bytes; at least 32 are required"),
    ("jwt-1:" + "@" * 43, "'jwt-1' is not valid base64"),
    ("jwt-1:" + "A" * 41, "'jwt-1' is not valid base64"),
    (f"jwt-1:{KEY},jwt-1:{KEY}", "key id 'jwt-1' appears twice"),
    (KEY, "key entry #1 must look like kid:base64key"),
    (",", "at least one key is required"),
])
def test_invalid_keyring_gets_a_message_that_says_what_is_wrong(value, expected):
    message = problems_of({**SECRETS, "kloyst.jwt.signing_keys": value})
    assert "kloyst.jwt.signing_keys" in message and "JWT_SIGNING_KEYS" in message
    assert expected in message


def test_keyring_messages_never_show_key_material():
    assert KEY[:6] not in problems_of({**SECRETS, "kloyst.jwt.signing_keys": KEY})


def test_data_encryption_keys_must_be_exactly_32_bytes_for_aes_256():
    long_key = base64.urlsafe_b64encode(b"k" * 48).decode()
    message = problems_of({**SECRETS, "kloyst.crypto.data_keys": f"data-1:{long_key}"})
    assert "DATA_ENCRYPTION_KEYS" in message and "exactly 32" in message


def test_an_unparsable_number_names_its_setting():
    message = problems_of(SECRETS, {"MAX_BODY_BYTES": "1MB"})
    assert "kloyst.http.max_body_bytes" in message and "MAX_BODY_BYTES" in message


def test_plugin_settings_resolve_through_the_same_rules():
    table = (Setting("contacts.export_limit", "CONTACTS_EXPORT_LIMIT", 1000, int),
             Setting("contacts.api_key", "CONTACTS_API_KEY", required=True, secret=True))
    assert resolve({"contacts.api_key": "k"}, table, {"CONTACTS_EXPORT_LIMIT": "5"})["contacts.export_limit"] == 5
    with pytest.raises(ConfigurationError, match="CONTACTS_API_KEY"):
        resolve({}, table, {})


def test_settings_outside_the_table_pass_through_untouched():
    assert resolve({**SECRETS, "pyramid.reload_templates": "true"}, CORE_SETTINGS, {})[
        "pyramid.reload_templates"] == "true"


def test_an_empty_public_url_follows_the_listening_port():
    resolved = resolve({**SECRETS, "kloyst.http.public_url": ""}, CORE_SETTINGS, {"PORT": "8000"})
    assert resolved["kloyst.http.public_url"] == "http://127.0.0.1:8000"


def test_a_public_url_that_is_set_is_kept():
    resolved = resolve({**SECRETS, "kloyst.http.public_url": "https://api.example.com"}, CORE_SETTINGS, {"PORT": "1"})
    assert resolved["kloyst.http.public_url"] == "https://api.example.com"


def test_cors_origins_are_normalised_and_a_wildcard_or_a_path_is_refused():
    resolved = resolve(SECRETS, CORE_SETTINGS, {"CORS_ALLOWED_ORIGINS": "https://Portal.example.com/, http://localhost:3000"})
    assert resolved["kloyst.cors.allowed_origins"] == ["https://portal.example.com", "http://localhost:3000"]
    for bad in ("*", "https://*.example.com", "https://portal.example.com/app", "portal.example.com"):
        assert "CORS_ALLOWED_ORIGINS" in problems_of(SECRETS, {"CORS_ALLOWED_ORIGINS": bad}), bad
