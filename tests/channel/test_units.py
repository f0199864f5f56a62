"""Human amounts: exact conversion in the channel's own units, or a one-line refusal."""

from __future__ import annotations

import pytest

from channel.errors import InvalidAmount
from channel.messages import MAX_UINT256
from channel.units import eth_units, format_amount, parse_amount_text, token_units

ETH = eth_units()
USDC = token_units("0x" + "70" * 20, "USDC", 6)
ODD = token_units("0x" + "71" * 20, "1INCH", 18)


@pytest.mark.parametrize(
    ("text", "units", "expected"),
    [
        ("0", ETH, 0),
        ("1500000", ETH, 1_500_000),
        ("0.003eth", ETH, 3 * 10**15),
        ("0.003ETH", ETH, 3 * 10**15),
        ("1.5 gwei", ETH, 1_500_000_000),
        ("7wei", ETH, 7),
        ("1.000000000000000001eth", ETH, 10**18 + 1),
        ("2.5usdc", USDC, 2_500_000),
        ("2.5 USDC", USDC, 2_500_000),
        ("0.000001usdc", USDC, 1),
        ("12345678901234567890.123456usdc", USDC, 12345678901234567890123456),
        ("3 1inch", ODD, 3 * 10**18),
        (str(MAX_UINT256), ETH, MAX_UINT256),
    ],
)
def test_parses_exactly(text: str, units: object, expected: int) -> None:
    assert parse_amount_text(text, units) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "units", "message"),
    [
        ("1.5", ETH, "no unit"),
        ("0.0000001usdc", USDC, "only 6"),
        ("0.1234567890123456789eth", ETH, "only 18"),
        ("1.5wei", ETH, "only 0"),
        ("1eth", USDC, "unit 'eth'"),
        ("1usdc", ETH, "unit 'usdc'"),
        ("1e18", ETH, "unit 'e18'"),
        ("-1", ETH, "not an amount"),
        ("+1", ETH, "not an amount"),
        (" 1", ETH, "not an amount"),
        ("", ETH, "not an amount"),
        (".5eth", ETH, "not an amount"),
        ("1.eth", ETH, "unit '.eth'"),
        ("007", ETH, "leading zeros"),
        ("\u0661", ETH, "not an amount"),  # Arabic-Indic one: int() would take it
        (str(MAX_UINT256 + 1), ETH, r"2\*\*256-1"),
    ],
)
def test_refuses(text: str, units: object, message: str) -> None:
    with pytest.raises(InvalidAmount, match=message):
        parse_amount_text(text, units)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "units", "shown"),
    [(0, ETH, "0 ETH"), (3 * 10**15, ETH, "0.003 ETH"), (10**18, ETH, "1 ETH"),
     (2_500_000, USDC, "2.5 USDC"), (1, USDC, "0.000001 USDC"),
     (MAX_UINT256, USDC, f"{MAX_UINT256 // 10**6}.{MAX_UINT256 % 10**6:06d} USDC")],
)
def test_formats_exactly_and_round_trips(amount: int, units: object, shown: str) -> None:
    assert format_amount(amount, units) == shown  # type: ignore[arg-type]
    number, symbol = shown.split()
    assert parse_amount_text(f"{number}{symbol.lower()}", units) == amount  # type: ignore[arg-type]
