"""api: the gRPC server of one process.

- `server`: `AuthServer`, the composition root (pool -> relay -> gRPC server +
  health; stopped in reverse) and `serve()`;
- `rpc`: the per-call wrapper every handler goes through (caller, limits, deadline
  budget, metrics) and the one mapping of domain errors to gRPC statuses;
- `servicers`: AuthService and UserAdminService, proto <-> domain only;
- `validation`: request fields (ids, usernames, emails);
- `callers`: bearer tokens and scopes at call time; `limits`: concurrency and rate;
- `health`: gRPC health that follows the database; `tls`: server certificates;
- `metrics`: Prometheus families and the /metrics endpoint; `logs`: log format.

May import: `store`, `events`, `config`, `errors`, `addresses`, `signals` and
`auth_client.contract`. Never imports `cli` or `local`.
"""
