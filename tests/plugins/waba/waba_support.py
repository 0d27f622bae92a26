"""Values the waba tests share (the fixtures are in conftest.py)."""

TOKEN = "EAAGsecret-token-of-vendor-a"
SHARED_TOKEN = "EAAGsecret-token-of-the-platform"
