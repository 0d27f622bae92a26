from decimal import Decimal

import pytest

from kloyst.money import MoneyError, format_micros, round_micros, to_micros


@pytest.mark.parametrize("text, micros", [("12.5", 12_500_000), ("0.0068", 6_800), (12, 12_000_000),
                                          ("0.000001", 1), (Decimal("3.10"), 3_100_000)])
def test_decimal_amounts_become_exact_micro_units(text, micros):
    assert to_micros(text) == micros


@pytest.mark.parametrize("bad, why", [("0.0000001", "six decimal places"), ("abc", "not a decimal"),
                                      (1.5, "decimal strings"), ("-1", "negative"), ("NaN", "finite"),
                                      (None, "expected"), ("1E+30", "less than"), ("-1E+30", "less than"),
                                      ("1000000000000", "less than")])
def test_bad_amounts_say_what_to_fix(bad, why):
    with pytest.raises(MoneyError, match=why):
        to_micros(bad)


def test_negative_amounts_only_where_allowed():
    assert to_micros("-2.5", allow_negative=True) == -2_500_000


def test_amounts_are_shown_with_six_places():
    assert format_micros(12_500_000) == "12.500000"
    assert format_micros(-1) == "-0.000001"


def test_computed_amounts_round_half_up_to_a_whole_micro():
    assert round_micros(Decimal("850.5")) == 851
    assert round_micros(Decimal("2.4999")) == 2
