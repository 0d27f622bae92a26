"""Tenant scoping is central: every ORM statement on a tenant-owned model is limited to the session's vendor."""

import pytest
from sqlalchemy import delete, func, select, update

from kloyst.accounts.models import Role, User
from kloyst.db import tenancy
from kloyst.db.tenancy import TenancyError


@pytest.fixture
def two_vendors(accounts, db):
    a = accounts.vendor("A")
    b = accounts.vendor("B")
    accounts.user(b.vendor, role=Role.MEMBER)
    db.commit()
    return a, b


def scoped(registry, vendor_id):
    session = registry["kloyst.session_factory"]()
    tenancy.set_scope(session, vendor_id)
    return session


def test_select_sees_only_the_sessions_vendor(registry, two_vendors):
    a, b = two_vendors
    with scoped(registry, a.vendor_id) as session:
        emails = set(session.scalars(select(User.email)))
    assert emails == {a.user.email}


def test_bulk_update_and_delete_cannot_reach_another_vendor(registry, db, two_vendors):
    a, b = two_vendors
    with scoped(registry, a.vendor_id) as session:
        session.execute(update(User).values(name="renamed"))
        session.execute(delete(User).where(User.role == Role.MEMBER))
        session.commit()
    with tenancy.unscoped(db):
        db.expire_all()
        b_names = set(db.scalars(select(User.name).where(User.vendor_id == b.vendor_id)))
        b_count = db.scalar(select(func.count()).select_from(User).where(User.vendor_id == b.vendor_id))
    assert "renamed" not in b_names
    assert b_count == 2


def test_unset_scope_refuses_tenant_queries(registry, two_vendors):
    with registry["kloyst.session_factory"]() as session, pytest.raises(TenancyError):
        session.scalars(select(User)).all()


def test_new_rows_are_stamped_with_the_sessions_vendor_and_cannot_cross(registry, two_vendors):
    a, b = two_vendors
    from kloyst.plugins.models import VendorPlugin

    with scoped(registry, a.vendor_id) as session:
        row = VendorPlugin(plugin="stamped")
        session.add(row)
        session.flush()
        assert row.vendor_id == a.vendor_id
        session.add(VendorPlugin(plugin="foreign", vendor_id=b.vendor_id))
        with pytest.raises(TenancyError):
            session.flush()
        session.rollback()


def test_unscoped_block_restores_the_previous_scope(registry, two_vendors):
    a, _ = two_vendors
    with scoped(registry, a.vendor_id) as session:
        with tenancy.unscoped(session):
            assert session.scalar(select(func.count()).select_from(User)) == 3
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_counts_and_subqueries_over_tenant_tables_are_scoped_too(registry, two_vendors):
    a, _ = two_vendors
    with scoped(registry, a.vendor_id) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1
        assert len(session.scalars(select(User.email).where(User.id.in_(select(User.id)))).all()) == 1


def test_unset_scope_refuses_a_count_that_names_a_tenant_table_only_in_from(registry, two_vendors):
    with registry["kloyst.session_factory"]() as session, pytest.raises(TenancyError):
        session.scalar(select(func.count()).select_from(User))


def test_core_statements_on_tenant_tables_are_refused_under_a_vendor_scope(registry, two_vendors):
    a, _ = two_vendors
    with scoped(registry, a.vendor_id) as session:
        with pytest.raises(TenancyError, match="Core statement"):
            session.execute(select(User.__table__)).all()
        # …unless the caller filtered the vendor itself and says so.
        marked = tenancy.caller_scoped(select(User.__table__).where(User.__table__.c.vendor_id == a.vendor_id))
        assert len(session.execute(marked).all()) == 1


def test_bulk_update_by_primary_key_is_refused_under_a_vendor_scope(registry, two_vendors):
    a, b = two_vendors
    with scoped(registry, a.vendor_id) as session, pytest.raises(TenancyError, match="bulk UPDATE"):
        session.execute(update(User), [{"id": b.user.id, "name": "pwned"}])


def test_a_row_cannot_be_moved_to_another_vendor(registry, two_vendors):
    a, b = two_vendors
    with scoped(registry, a.vendor_id) as session:
        user = session.scalars(select(User)).one()
        user.vendor_id = b.vendor_id
        with pytest.raises(TenancyError, match="cannot move"):
            session.flush()
        session.rollback()


def test_get_from_the_identity_map_still_honours_the_scope(registry, two_vendors):
    a, b = two_vendors
    with scoped(registry, a.vendor_id) as session:
        with tenancy.unscoped(session):
            assert session.get(User, b.user.id) is not None  # now in the identity map
        assert session.get(User, b.user.id) is None
        assert session.get(User, a.user.id) is not None
