"""Amounts as people write them: ``0.003eth``, ``1.5gwei``, ``2.5tusd`` or base units, exactly.

The one syntax (for the CLI, and anything else that takes amounts from people):

* a plain integer is **base units** (wei, or the token's smallest unit): ``1500000``;
* a decimal with a unit is **human units**: ``0.003eth``, ``1.5 gwei``, ``2.5tusd`` (an
  ERC-20's symbol as its contract reports it, case-insensitive; a space is allowed, and needed
  when the symbol starts with a digit). ETH channels take ``eth``, ``gwei`` and ``wei``; a
  token channel takes its symbol only, so an amount can never be read in the wrong token;
* never a float: the digits are scaled by ``10**decimals`` as integers, and more fractional
  digits than the unit has (``0.0000001usdc`` for a 6-decimal token) is an error, not a
  rounding.

``InvalidAmount`` says what is wrong in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from channel.errors import InvalidAmount
from channel.messages import MAX_UINT256, ZERO_ADDRESS

__all__ = ["Units", "eth_units", "format_amount", "parse_amount_text", "token_units"]

_AMOUNT = re.compile(r"^(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?\s*(?P<unit>\S.*)?$")


@dataclass(frozen=True)
class Units:
    """How amounts of one token are written: its symbol, decimals and accepted unit names."""

    token: str
    symbol: str
    decimals: int
    names: tuple[tuple[str, int], ...]
    """(lower-case unit name, decimals it scales by), e.g. ("gwei", 9)."""

    def scale(self, unit: str) -> int:
        wanted = unit.strip().lower()
        for name, decimals in self.names:
            if name == wanted:
                return decimals
        accepted = ", ".join(name for name, _ in self.names)
        raise InvalidAmount(
            f"unit {unit!r} is not one of this channel's ({accepted}); plain integers are "
            "base units"
        )


def eth_units() -> Units:
    return Units(ZERO_ADDRESS, "ETH", 18, (("eth", 18), ("gwei", 9), ("wei", 0)))


def token_units(token: str, symbol: str, decimals: int) -> Units:
    if not 0 <= decimals <= 77:
        raise InvalidAmount(f"token {token} reports {decimals} decimals")
    return Units(token, symbol, decimals, ((symbol.lower(), decimals),))


def parse_amount_text(text: str, units: Units) -> int:
    """Base units for ``text`` in the syntax of the module docstring; ``InvalidAmount``."""
    match = _AMOUNT.match(text)
    if match is None:
        raise InvalidAmount(
            f"{text!r} is not an amount: write base units (1500000) or a decimal with a unit "
            f"(0.003eth, 2.5{units.symbol.lower()})"
        )
    whole, frac, unit = match.group("whole"), match.group("frac") or "", match.group("unit")
    if unit is None:
        if frac:
            raise InvalidAmount(
                f"{text!r} has a decimal point but no unit: write e.g. {text}"
                f"{units.symbol.lower()}, or an integer in base units"
            )
        if len(whole) > 1 and whole.startswith("0"):
            raise InvalidAmount(f"{text!r} has leading zeros")
        amount = int(whole)
    else:
        decimals = units.scale(unit)
        if len(frac) > decimals:
            raise InvalidAmount(
                f"{text!r} has {len(frac)} decimals, {unit.strip()} has only {decimals}"
            )
        amount = int(whole + frac.ljust(decimals, "0"))
    if amount > MAX_UINT256:
        raise InvalidAmount(f"{text!r} is above 2**256-1 base units")
    return amount


def format_amount(amount: int, units: Units) -> str:
    """``1.5 TUSD``-style exact rendering (trailing zeros dropped), never through a float."""
    whole, frac = divmod(amount, 10**units.decimals)
    digits = f"{frac:0{units.decimals}d}".rstrip("0") if units.decimals else ""
    return f"{whole}{'.' + digits if digits else ''} {units.symbol}"

