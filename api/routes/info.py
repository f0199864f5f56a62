"""GET /v1/info: what a client needs to sign for this service (chain, contract, payees, tokens)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.schemas import Info, TokenBody

router = APIRouter(prefix="/v1", tags=["info"])


@router.get(
    "/info",
    response_model=Info,
    response_model_exclude_none=True,
    summary="Chain, contract, payees and accepted tokens",
)
async def info(runtime: RuntimeDep) -> Info:
    """The EIP-712 domain inputs (chain id, verifying contract), the payees served here, the
    least challenge period and the tokens a channel may be in (each with its least deposit)."""
    return Info(
        chain_id=runtime.domain.chain_id,
        contract=runtime.domain.verifying_contract,
        payees=list(runtime.payees),
        min_challenge_period=runtime.settings.min_challenge_period,
        tokens=[
            TokenBody(
                address=t.info.address,
                symbol=t.info.symbol,
                decimals=t.info.decimals,
                min_deposit=str(t.min_deposit),
            )
            for t in runtime.tokens
        ],
        rpc_url=runtime.settings.public_rpc_url,
    )
