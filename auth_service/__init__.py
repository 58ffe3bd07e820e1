"""auth-service: the canonical users table behind a gRPC API (distribution
`auth-service`; the client side is the `auth-client` distribution, `auth_client`).

The server in wings, each subpackage's docstring says what it owns and may import:

    config/   settings from the environment (the only reader of os.environ)
    store/    the auth database: pool, users, batched lookups, deletion, outbox, migrations
    events/   the outbox relay and its Kafka producer
    api/      the gRPC server: assembly, the per-call steps, servicers, health, TLS, metrics
    local/    embedded PostgreSQL and broker; `auth-service dev`
    cli/      the `auth-service` command

and a few modules every wing may use: `errors` (the domain errors), `addresses`
(host:port), `signals` (waiting for SIGTERM), `notices` (repeating log lines),
`lifecycle` (one start/close state for every resource owner), `tracing` (OpenTelemetry spans, off unless
OTEL_* variables configure them). Dependencies point one way:
cli -> local -> api -> events -> store -> config; the server uses only public names
of `auth_client` (`auth_client.contract` above all).
"""

__version__ = "0.2.0"
