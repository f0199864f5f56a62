"""The payee settlement service: HTTP API v1 of PROTOCOL.md over ``channel.payee``.

Privacy model (who may read what):

* public, keyed by channel id: ``GET /v1/info``, ``GET /v1/channels/{id}`` (on-chain state is
  public anyway; the latest voucher only ever pays this payee), ``POST .../payments``,
  ``POST .../close`` and ``GET .../receipts``, whose items carry the bytes32 ``task_hash`` but
  not the task id string (``task_id`` is null unless the operator token is sent);
* operator only (``Authorization: Bearer $PIECEWORK_OPERATOR_TOKEN``): ``GET /v1/channels``
  (the payee's whole client list), ``GET /metrics`` (volumes and unclaimed balances) and
  ``POST .../claim`` (spends the payee's gas). A wrong token is always a 401, never ignored.

Known gap: anyone who knows a channel id can fetch the payee's ``CloseConsent`` and close the
channel cooperatively at the latest accepted amount. Funds still go only to payer and payee.
"""
