"""GET /v1/info: what a client needs to sign for this service (chain, contract, payees)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.schemas import Info

router = APIRouter(prefix="/v1", tags=["info"])


@router.get("/info", response_model=Info, summary="Chain id, contract and payee addresses")
async def info(runtime: RuntimeDep) -> Info:
    """The EIP-712 domain inputs (chain id, verifying contract) and the payees served here."""
    return Info(
        chain_id=runtime.domain.chain_id,
        contract=runtime.domain.verifying_contract,
        payees=list(runtime.payees),
    )
