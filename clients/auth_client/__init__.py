"""auth_client: validate user ids against auth-service before inserting rows.

    async with AuthClient("auth-service:50051", token=TOKEN) as auth:
        await auth.require_user(user_id)      # raises UserNotFoundError
        ...insert the row...

    with SyncAuthClient("auth-service:50051", token=TOKEN) as auth:   # no event loop
        auth.require_user(user_id)

    # every user's state in memory (17 bytes a user), kept by the events: no RPC
    async with AuthClient(TARGET, token=TOKEN,
                          replica=ReplicaConfig(bootstrap_servers=KAFKA)) as auth:
        await auth.require_user(user_id)

See docs/client.md for fallback policies, TTLs, rollout modes and replicas.

Public modules (everything else starting with `_` is private):

    auth_client            AuthClient, SyncAuthClient, their configuration, errors, values
    auth_client.contract   the wire contract: messages, stubs, event codec, limits
    auth_client.backoff    the retry delay formula
    auth_client.events     UserDeletedConsumer and helpers   (extra: events)
    auth_client.toolkit    fk-audit, migrations, reconcile   (extra: toolkit)
    auth_client.integrations.sqlalchemy   user references in SQLAlchemy models
                                          (extra: sqlalchemy)
    auth_client.integrations.django       the same for Django models (extra: django)
"""

from auth_client._client import AuthClient, OnUnverified
from auth_client._config import (
    BatchConfig,
    BreakerConfig,
    CacheConfig,
    ChannelConfig,
    FallbackPolicy,
    ReplicaConfig,
    RetryConfig,
    RolloutMode,
    TLSConfig,
)
from auth_client._errors import (
    AuthClientError,
    CircuitOpenError,
    DeadlineExceededError,
    InvalidRequestError,
    PermissionDeniedError,
    ReplicaLoadError,
    ServiceUnavailableError,
    UnauthenticatedError,
    UserNotFoundError,
    UserReferenceError,
)
from auth_client._metrics import ClientStats
from auth_client._models import User, UserId
from auth_client._replica import ReplicaStats
from auth_client._sync import SyncAuthClient
from auth_client._transport import create_channel
from auth_client.contract import UserState

__version__ = "0.2.0"

__all__ = [
    "AuthClient",
    "AuthClientError",
    "BatchConfig",
    "BreakerConfig",
    "CacheConfig",
    "ChannelConfig",
    "CircuitOpenError",
    "ClientStats",
    "DeadlineExceededError",
    "FallbackPolicy",
    "InvalidRequestError",
    "OnUnverified",
    "PermissionDeniedError",
    "ReplicaConfig",
    "ReplicaLoadError",
    "ReplicaStats",
    "RetryConfig",
    "RolloutMode",
    "ServiceUnavailableError",
    "SyncAuthClient",
    "TLSConfig",
    "UnauthenticatedError",
    "User",
    "UserId",
    "UserNotFoundError",
    "UserReferenceError",
    "UserState",
    "create_channel",
]
