"""The Django app `auth_client.integrations.django`: registers the system check."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class AuthClientConfig(AppConfig):
    name = "auth_client.integrations.django"
    label = "auth_client"
    verbose_name = "auth-service client"

    def ready(self) -> None:
        from auth_client.integrations.django.checks import foreign_keys_to_users  # noqa: PLC0415

        checks.register(foreign_keys_to_users, checks.Tags.models)
