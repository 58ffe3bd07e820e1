"""System check `auth_client.W001`: a ForeignKey to a users model, which should now
be a `UserReferenceField` (the users live in auth-service).

The users models are `settings.AUTH_CLIENT_USER_MODELS` (model labels such as
"accounts.User"), by default `[settings.AUTH_USER_MODEL]`. Django's own apps
(`django.contrib.*`, e.g. the admin's log) are not flagged: their models are not
yours to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks
from django.db import models


def _user_models() -> set[str]:
    labels: Sequence[str] = getattr(settings, "AUTH_CLIENT_USER_MODELS", None) or [
        settings.AUTH_USER_MODEL
    ]
    return {label.lower() for label in labels}


def _models(app_configs: Iterable[AppConfig] | None) -> Iterable[type[models.Model]]:
    configs = apps.get_app_configs() if app_configs is None else app_configs
    for config in configs:
        if not config.name.startswith("django."):
            yield from config.get_models()


def _warning(model: type[models.Model], field: models.ForeignKey[Any, Any]) -> checks.Warning:
    target = field.related_model._meta.label  # type: ignore[union-attr]
    options = ["null=True"] if field.null else []
    if field.column != field.attname:  # db_column=: keep the column, not `<name>_id`
        options.append(f"db_column={field.column!r}")
    arguments = ", ".join(options)
    return checks.Warning(
        f"{model._meta.label}.{field.name} is a ForeignKey to {target}, whose users now "
        "live in auth-service",
        hint=(
            f"replace it with `{field.attname} = UserReferenceField({arguments})` "
            f"(auth_client.integrations.django; the same column {field.column!r}), and drop "
            "the foreign key constraint in the migration: references are then checked "
            "against auth-service before each save (docs/client.md)"
        ),
        obj=field,
        id="auth_client.W001",
    )


def foreign_keys_to_users(
    app_configs: Iterable[AppConfig] | None = None, **_: Any
) -> list[checks.CheckMessage]:
    users = _user_models()
    found: list[checks.CheckMessage] = []
    for model in _models(app_configs):
        for field in model._meta.get_fields():
            if not isinstance(field, models.ForeignKey):
                continue
            related = field.related_model
            if isinstance(related, type) and related._meta.label_lower in users:
                found.append(_warning(model, field))
    return found
