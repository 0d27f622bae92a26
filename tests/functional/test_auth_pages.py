"""The links in Kloyst's mail work when clicked: the pages they open confirm an address and set a password.

Each test follows a link exactly as it arrives in the mail (run through the outbox to the file
mailer), as a browser would: a GET of the link, then the form it shows, posted as a form.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import webtest

from kloyst.accounts.models import Role, User, Vendor
from kloyst.auth import services
from kloyst.auth.models import RESET_PASSWORD_TTL, VERIFY_EMAIL_TTL, OneTimePurpose
from kloyst.auth.passwords import hash_password
from kloyst.config import CORE_SETTINGS, ConfigurationError, resolve
from kloyst.db import session_scope, tenancy
from kloyst.testing import TEST_PASSWORD

NEW_PASSWORD = "a brand new passphrase 42"
LINK = re.compile(r"(https?://\S+/(?:verify-email|reset-password)\?token=[A-Za-z0-9_-]+)")
PORTAL_SETTING = tuple(s for s in CORE_SETTINGS if s.key == "kloyst.mail.portal_url")


def mailed_link(run_outbox, mailbox, to: str) -> str:
    run_outbox()
    messages = mailbox.to(to)
    assert messages, f"no mail reached {to}"
    return LINK.search(messages[-1].get_content()).group(1)


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def signup(testapp, email: str):
    testapp.post_json("/v1/auth/signup", {"vendor_name": "Acme", "name": "Ada", "email": email,
                                          "password": TEST_PASSWORD}, status=202)


def login(testapp, email: str, password: str, status: int = 200):
    return testapp.post_json("/v1/auth/login", {"email": email, "password": password}, status=status)


def test_the_verification_link_opens_a_page_whose_button_confirms_the_address(testapp, registry, run_outbox,
                                                                              mailbox):
    signup(testapp, "ada@example.com")
    link = mailed_link(run_outbox, mailbox, "ada@example.com")
    assert link.startswith(f"{registry.settings['kloyst.http.public_url']}/verify-email?token=")

    page = testapp.get(path_of(link), status=200)
    assert page.content_type == "text/html" and "<form" in page.text
    login(testapp, "ada@example.com", TEST_PASSWORD, status=403)  # showing the page confirmed nothing

    done = page.form.submit(status=200)
    assert "ada@example.com is confirmed" in done.text
    login(testapp, "ada@example.com", TEST_PASSWORD)


def test_the_link_is_one_plain_line_of_the_mail_file_so_it_can_be_copied_from_var_mail(testapp, run_outbox,
                                                                                       mailbox):
    signup(testapp, "plain@example.com")
    link = mailed_link(run_outbox, mailbox, "plain@example.com")
    [raw] = [path.read_text() for path in mailbox.directory.glob("*.eml")]
    assert link in raw.splitlines()


def test_a_mail_that_is_not_plain_ascii_still_carries_a_working_link(testapp, run_outbox, mailbox):
    testapp.post_json("/v1/auth/signup", {"vendor_name": "Café Ünïcode", "name": "Zoë", "email": "zoe@example.com",
                                          "password": TEST_PASSWORD}, status=202)
    testapp.get(path_of(mailed_link(run_outbox, mailbox, "zoe@example.com")), status=200).form.submit(status=200)
    login(testapp, "zoe@example.com", TEST_PASSWORD)


def test_a_link_fetched_by_a_mail_scanner_still_works_when_the_person_clicks_it(testapp, run_outbox, mailbox):
    signup(testapp, "scanned@example.com")
    link = path_of(mailed_link(run_outbox, mailbox, "scanned@example.com"))
    testapp.get(link, status=200)
    testapp.get(link, status=200)
    testapp.get(link, status=200).form.submit(status=200)
    login(testapp, "scanned@example.com", TEST_PASSWORD)


def test_a_used_link_says_so_and_how_to_get_a_new_one_on_open_and_on_submit(testapp, run_outbox, mailbox):
    signup(testapp, "twice@example.com")
    link = path_of(mailed_link(run_outbox, mailbox, "twice@example.com"))
    form = testapp.get(link, status=200).form
    form.submit(status=200)

    reopened = testapp.get(link, status=422)
    assert "invalid or has expired" in reopened.text and "/v1/auth/verify-email/resend" in reopened.text
    assert "<form" not in reopened.text
    resubmitted = form.submit(status=422)
    assert "invalid or has expired" in resubmitted.text


@pytest.mark.parametrize("query", ["", "?token=", "?token=short", "?token=" + "x" * 201])
def test_a_link_cut_short_or_mangled_is_a_page_saying_so_not_a_crash(testapp, query):
    page = testapp.get(f"/verify-email{query}", status=422)
    assert page.content_type == "text/html" and "open the link from the mail" in page.text


def test_the_reset_link_sets_the_password_and_ends_every_earlier_session(testapp, owner, run_outbox, mailbox):
    before = login(testapp, owner.user.email, TEST_PASSWORD).json
    testapp.post_json("/v1/auth/password/forgot", {"email": owner.user.email}, status=202)
    link = mailed_link(run_outbox, mailbox, owner.user.email)
    assert "/reset-password?token=" in link

    form = testapp.get(path_of(link), status=200).form
    form["password"] = form["password_again"] = NEW_PASSWORD
    done = form.submit(status=200)
    assert "is set" in done.text

    login(testapp, owner.user.email, TEST_PASSWORD, status=401)
    login(testapp, owner.user.email, NEW_PASSWORD)
    testapp.get("/v1/auth/me", headers={"Authorization": f"Bearer {before['access_token']}"}, status=401)


@pytest.mark.parametrize(("password", "again", "said"), [
    (NEW_PASSWORD, NEW_PASSWORD + "!", "the two passwords differ"),
    ("short", "short", "at least 10 characters"),
])
def test_a_refused_password_shows_the_form_again_with_the_reason_and_the_link_still_works(
        testapp, owner, run_outbox, mailbox, password, again, said):
    testapp.post_json("/v1/auth/password/forgot", {"email": owner.user.email}, status=202)
    link = path_of(mailed_link(run_outbox, mailbox, owner.user.email))
    form = testapp.get(link, status=200).form
    form["password"], form["password_again"] = password, again

    refused = form.submit(status=422)
    assert said in refused.text and "<form" in refused.text
    login(testapp, owner.user.email, TEST_PASSWORD)  # nothing changed

    retry = refused.form
    retry["password"] = retry["password_again"] = NEW_PASSWORD
    retry.submit(status=200)
    login(testapp, owner.user.email, NEW_PASSWORD)


def test_an_invitation_link_lets_the_invited_user_choose_a_password_and_sign_in(testapp, owner, run_outbox, mailbox):
    testapp.post_json("/v1/vendor/users", {"email": "invited@example.com", "name": "Ivo"}, headers=owner.headers,
                      status=202)
    form = testapp.get(path_of(mailed_link(run_outbox, mailbox, "invited@example.com")), status=200).form
    form["password"] = form["password_again"] = NEW_PASSWORD
    form.submit(status=200)
    login(testapp, "invited@example.com", NEW_PASSWORD)


def test_with_a_portal_the_links_open_the_portals_pages(testapp, registry, run_outbox, mailbox, monkeypatch):
    monkeypatch.setitem(registry.settings, "kloyst.mail.portal_url", "https://portal.example.com/app")
    signup(testapp, "portal@example.com")
    assert mailed_link(run_outbox, mailbox, "portal@example.com").startswith(
        "https://portal.example.com/app/verify-email?token=")


@pytest.mark.parametrize(("given", "kept"), [("", ""), ("https://portal.example.com/", "https://portal.example.com"),
                                              ("http://127.0.0.1:3000/app", "http://127.0.0.1:3000/app")])
def test_a_portal_url_is_a_base_that_paths_are_appended_to(given, kept):
    assert resolve({}, PORTAL_SETTING, {"PORTAL_URL": given})["kloyst.mail.portal_url"] == kept


@pytest.mark.parametrize("given", ["portal.example.com", "https://portal.example.com/?next=1", "ftp://portal.example.com",
                                   "https://portal.example.com/#top"])
def test_a_portal_url_links_could_not_be_appended_to_stops_start_up_naming_it(given):
    with pytest.raises(ConfigurationError, match="PORTAL_URL"):
        resolve({}, PORTAL_SETTING, {"PORTAL_URL": given})


def test_the_pages_run_no_script_submit_only_here_and_are_never_cached(testapp):
    page = testapp.get("/reset-password?token=not-a-real-token", status=422)
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "form-action 'self'" in policy and "script-src" not in policy
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"


def test_too_many_submissions_from_one_address_are_a_429_page_saying_when_to_retry(testapp, registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "kloyst.throttle.login_per_ip", "2/60")
    for _ in range(2):
        testapp.post("/verify-email", {"token": "t" * 43}, status=422)
    refused = testapp.post("/verify-email", {"token": "t" * 43}, status=429)
    assert refused.content_type == "text/html" and "try again in" in refused.text
    assert int(refused.headers["Retry-After"]) > 0


@pytest.fixture
def sqlite_app(embedded_config):
    """The application on the embedded default's database (SQLite), migrated, beside the PostgreSQL one."""
    return embedded_config.registry, webtest.TestApp(embedded_config.make_wsgi_app())


def test_the_pages_confirm_and_reset_on_the_embedded_default_too(sqlite_app):
    registry, app = sqlite_app
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        vendor = Vendor(name="Embedded")
        db.add(vendor)
        db.flush()
        user = User(vendor_id=vendor.id, email="emb@example.com", password_hash=hash_password(TEST_PASSWORD),
                    role=Role.OWNER)
        db.add(user)
        db.flush()
        verify = services.issue_one_time_token(db, user, OneTimePurpose.VERIFY_EMAIL, VERIFY_EMAIL_TTL)
        reset = services.issue_one_time_token(db, user, OneTimePurpose.RESET_PASSWORD, RESET_PASSWORD_TTL)

    app.get(f"/verify-email?token={verify}", status=200).form.submit(status=200)
    app.get(f"/verify-email?token={verify}", status=422)
    form = app.get(f"/reset-password?token={reset}", status=200).form
    assert form["token"].value == reset
    form["password"] = form["password_again"] = NEW_PASSWORD
    form.submit(status=200)
    app.post_json("/v1/auth/login", {"email": "emb@example.com", "password": NEW_PASSWORD}, status=200)
