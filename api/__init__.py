"""The payee settlement service: HTTP API v2 of PROTOCOL.md over ``channel.payee``.

Privacy model (who may read what):

* public, keyed by channel id: ``GET /v1/info``, ``GET /v1/channels/{id}`` (on-chain state is
  public anyway; the latest voucher only ever pays this payee), ``POST .../payments`` (the
  voucher is the authorization) and ``POST .../close`` (the ``CloseRequest`` signature of the
  payer or the voucher signer is; anyone else gets 403 and changes nothing);
* the channel's payer side (an ``Access(channelId, expires)`` signature by the payer or the
  voucher signer, ``Authorization: Access <expires>.<signature>`` or ``?access=``) or the
  operator: ``GET .../receipts`` and ``GET .../tasks`` (what was paid and asked for, with the
  task id strings, which may name a client's work);
* operator only (``Authorization: Bearer $PIECEWORK_OPERATOR_TOKEN``): ``GET /v1/channels``
  (the payee's whole client list), ``POST .../tasks`` (asks a client for money), ``GET
  /metrics`` (volumes and unclaimed balances) and ``POST .../claim`` (spends the payee's gas).
  No token is a 401, a wrong one a 403, never ignored.
"""
