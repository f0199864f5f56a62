"""The one ``Settings`` of Piecework, read from ``PIECEWORK_*`` environment variables (or ``.env``).

Secrets (``private_key``, ``keystore_password``, ``operator_token``) are ``SecretStr``: their
``repr``/``str`` print ``**********``, so logging the settings never leaks them.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from channel.errors import ConfigError, InvalidAddress, InvalidAmount
from channel.messages import ZERO_ADDRESS, parse_address, parse_amount
from channel.state import DEFAULT_MIN_CHALLENGE_PERIOD

__all__ = ["DEFAULT_DATABASE_URL", "Settings", "parse_accepted_tokens", "parse_cors_origins"]

DEFAULT_DATABASE_URL = "sqlite:///./.piecework/piecework.db"


def parse_accepted_tokens(text: str) -> dict[str, int]:
    """``ETH,0xToken:1000000`` -> {address (zero for ETH): least deposit in base units}.

    Entries are ``ETH`` or a token address, each optionally ``:MIN_DEPOSIT`` (base units,
    default 0), separated by commas. ``ValueError`` names the entry that is wrong.
    """
    tokens: dict[str, int] = {}
    for entry in text.split(","):
        item = entry.strip()
        if not item:
            raise ValueError(f"empty entry in {text!r}")
        name, colon, minimum = item.partition(":")
        name = name.strip()
        try:
            address = ZERO_ADDRESS if name.upper() == "ETH" else parse_address(name)
            least = parse_amount(minimum.strip()) if colon else 0
        except (InvalidAddress, InvalidAmount) as exc:
            raise ValueError(f"accepted token {item!r}: {exc.message}") from None
        if address in tokens:
            raise ValueError(f"accepted token {name!r} is listed twice")
        tokens[address] = least
    return tokens


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def parse_cors_origins(text: str) -> frozenset[str]:
    """``https://a.example,http://127.0.0.1:5173`` -> the set of origins; ``*`` and anything
    that is not a bare ``scheme://host[:port]`` origin are refused."""
    origins: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item == "*" or "*" in item:
            raise ValueError(
                "'*' is refused: payer-side reads are private per channel; list exact origins"
            )
        if not _ORIGIN.fullmatch(item):
            raise ValueError(
                f"{item!r} is not an origin (scheme://host[:port], no path or trailing slash)"
            )
        origins.add(item.lower())
    return frozenset(origins)


class Settings(BaseSettings):
    """Every knob of the service and the CLI; each field reads ``PIECEWORK_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="PIECEWORK_", env_file=".env", extra="ignore", frozen=True
    )

    rpc_url: str = Field(
        "http://127.0.0.1:8545",
        description="JSON-RPC endpoint of the Ethereum node; several comma-separated URLs of "
        "the same chain fail over to each other in order.",
    )
    watcher_rpc_url: str | None = Field(
        None,
        description="The watcher's own endpoint(s) (comma-separated), so payment traffic "
        "cannot use up its quota; unset: the watcher uses PIECEWORK_RPC_URL.",
    )
    contract_address: str | None = Field(
        None,
        description="Address of the deployed PaymentChannels contract (EIP-55 or lowercase).",
    )
    chain_id: int | None = Field(
        None,
        description="Expected chain id; when set, a node reporting another one is refused.",
    )
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL; SQLite by default (its directory is created), or "
        "postgresql://user@host:5432/db.",
    )
    operator_token: SecretStr | None = Field(
        None, description="Bearer token for operator-only HTTP endpoints; unset disables them."
    )
    keystore: Path | None = Field(
        None, description="Path of the payee's encrypted JSON keystore (Web3 Secret Storage)."
    )
    keystore_password: SecretStr | None = Field(None, description="Password of ``keystore``.")
    private_key: SecretStr | None = Field(
        None,
        description="Raw 0x-hex private key, for development only; prefer ``keystore``.",
    )
    min_challenge_period: int = Field(
        DEFAULT_MIN_CHALLENGE_PERIOD,
        ge=0,
        description="Refuse payments on channels whose challenge period (seconds) is shorter: "
        "the payee needs that long to notice a close and claim.",
    )
    closing_margin: int = Field(
        600,
        ge=0,
        description="Seconds before a closing channel's closesAt by which the watcher must "
        "have submitted the payee's latest voucher.",
    )
    confirmations: int = Field(
        1, ge=0, description="Blocks a chain event needs on top of it before it is acted on."
    )
    deployment_block: int | None = Field(
        None,
        ge=0,
        description="Block the contract was deployed in: the watcher follows from there. "
        "Unset: found with eth_getCode (needs a node with historic state), else 0.",
    )
    max_head_age: int = Field(
        0,
        ge=0,
        description="/healthz answers 503 when the node's latest block is older than this many "
        "seconds (a stalled node); 0 only reports the age (dev chains mine on demand).",
    )
    claim_min_unclaimed: int = Field(
        0,
        ge=0,
        description="Claim a channel once accepted - claimed reaches this many token units "
        "(0: only the age rule applies).",
    )
    claim_max_age_seconds: int = Field(
        86_400,
        ge=0,
        description="Claim unclaimed value that is older than this many seconds anyway "
        "(0 disables the age rule).",
    )
    accepted_tokens: str = Field(
        "ETH",
        description="Tokens channels may be in: comma-separated `ETH` or token addresses, each "
        "optionally `:MIN_DEPOSIT` in base units (e.g. `ETH:1000000000000000,0xA0b8...:5000000`).",
    )
    consent_ttl_seconds: int = Field(
        900,
        ge=1,
        le=3600,
        description="A close consent's deadline is the latest block's timestamp plus this; the "
        "channel takes no payment until then.",
    )
    host: str = Field("127.0.0.1", description="HTTP bind address (loopback by default).")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    max_body_bytes: int = Field(
        16_384, gt=0, description="Largest request body the HTTP API reads."
    )
    public_rpc_url: str | None = Field(
        None,
        description="An RPC URL the web page may offer a wallet (`wallet_addEthereumChain`); "
        "shown in /v1/info as `rpc_url`. Never derived from PIECEWORK_RPC_URL, which may carry "
        "a provider's API key.",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated exact origins (`https://pay.example.org`) whose pages may "
        "call the payer-side endpoints; empty: same origin only. `*` is refused.",
    )

    @field_validator("contract_address")
    @classmethod
    def _checksummed(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse_address(value)
        except InvalidAddress as exc:
            # pydantic reports ValueErrors with the variable's name; ours would escape raw.
            raise ValueError(exc.message) from None

    @field_validator("accepted_tokens")
    @classmethod
    def _tokens(cls, value: str) -> str:
        parse_accepted_tokens(value)
        return value

    @field_validator("public_rpc_url")
    @classmethod
    def _public_rpc(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("https://", "http://")) or any(c.isspace() for c in value):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        parse_cors_origins(value)
        return value

    def cors_origin_set(self) -> frozenset[str]:
        """``cors_origins`` parsed: the exact origins allowed, empty for same origin only."""
        return parse_cors_origins(self.cors_origins)

    def accepted_token_minimums(self) -> dict[str, int]:
        """``accepted_tokens`` parsed: token address (zero for ETH) -> least deposit."""
        return parse_accepted_tokens(self.accepted_tokens)

    @model_validator(mode="after")
    def _database_dir(self) -> Settings:
        # Create the SQLite directory up front so the first connection does not fail.
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and ":memory:" not in self.database_url:
            Path(self.database_url[len(prefix) :]).expanduser().parent.mkdir(
                parents=True, exist_ok=True
            )
        return self

    def require_contract(self) -> str:
        """The contract address, or ``ConfigError`` naming the variable to set."""
        if self.contract_address is None:
            raise ConfigError("set PIECEWORK_CONTRACT_ADDRESS to the PaymentChannels address")
        return self.contract_address

    # -- the watchtower's spending and defence (issue 11: items 2, 3, 5, 11) --
    max_fee_gwei: int = Field(
        500,
        ge=1,
        description="Highest maxFeePerGas (gwei) a defence may reach as its closesAt nears; "
        "routine claims and defences with most of their window left use a quarter of it.",
    )
    max_gas_per_tx: int = Field(
        3_000_000,
        ge=100_000,
        description="Gas limit cap of any one transaction the watcher sends (bigger batches "
        "are split).",
    )
    claim_fee_multiple: int = Field(
        2,
        ge=0,
        description="Claim an ETH channel (routinely or to defend it) only when what it pays "
        "is at least this many times its gas cost; 0 claims any positive amount.",
    )
    wallet_min_balance: int = Field(
        5 * 10**16,
        ge=0,
        description="Wei below which the hot wallet is reported low (/healthz `wallet`, "
        "/metrics and an alert in the log).",
    )
    fee_bump_seconds: float = Field(
        4.0,
        gt=0,
        description="Seconds a pending transaction waits before it is replaced with fees "
        "raised by 12.5 % (same nonce).",
    )
    withdraw_interval_seconds: float = Field(
        60.0,
        ge=0,
        description="Seconds between the watcher's checks of deferred payouts (`owed`), "
        "which it withdraws.",
    )
