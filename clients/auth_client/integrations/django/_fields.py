"""`UserReferenceField` and the checks before saves.

Each object remembers the values of its reference fields as loaded or last saved
(`post_init`, `post_save`), so a save checks only what it adds or changes. The
`pre_save` signal checks every reference field being saved in one lookup and records
what it checked; each field's own `pre_save` (the only hook `bulk_create` calls)
checks its value unless that was just checked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db import models
from django.db.models.signals import post_init, post_save, pre_save

from auth_client.integrations import _references
from auth_client.integrations._references import Reference
from auth_client.integrations.django._client import current

_LOADED = "_auth_client_references"  # {attname: value as loaded or last saved}
_CHECKED = "_auth_client_checked"  # {attname: value checked for the save under way}


class UserReferenceField(models.UUIDField):  # type: ignore[type-arg]
    """A uuid column holding an auth-service user id, in place of a ForeignKey to
    a users model: checked against auth-service before it is saved."""

    description = "auth-service user id"

    def contribute_to_class(
        self, cls: type[models.Model], name: str, private_only: bool = False
    ) -> None:
        super().contribute_to_class(cls, name, private_only)
        if cls._meta.abstract:
            return
        uid = f"auth_client.references.{cls._meta.label_lower}"
        post_init.connect(_remember, sender=cls, weak=False, dispatch_uid=uid)
        post_save.connect(_saved, sender=cls, weak=False, dispatch_uid=uid)
        pre_save.connect(_before_save, sender=cls, weak=False, dispatch_uid=uid)

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = super().pre_save(model_instance, add)
        if value is None:
            return value
        checked = model_instance.__dict__.get(_CHECKED, {})
        if self.attname in checked and _same(checked[self.attname], value):
            return value
        if add or _changed(model_instance, self):
            client, timeout, fallback = current()
            _references.check(client, [(_column(self), value)], timeout=timeout, fallback=fallback)
        return value


def _fields(model: type[models.Model]) -> list[UserReferenceField]:
    return [f for f in model._meta.concrete_fields if isinstance(f, UserReferenceField)]


def _column(field: UserReferenceField) -> str:
    return f"{field.model._meta.db_table}.{field.column}"


def _same(a: object, b: object) -> bool:
    try:
        return uuid.UUID(str(a)) == uuid.UUID(str(b))
    except ValueError:
        return a == b


def _changed(instance: models.Model, field: UserReferenceField) -> bool:
    loaded = instance.__dict__.get(_LOADED, {})
    if field.attname not in loaded:
        return True
    return not _same(loaded[field.attname], instance.__dict__.get(field.attname))


def _snapshot(instance: models.Model, fields: list[UserReferenceField]) -> dict[str, object]:
    # Deferred fields are not in __dict__ (and are not loaded here).
    return {
        f.attname: instance.__dict__[f.attname] for f in fields if f.attname in instance.__dict__
    }


def _remember(sender: type[models.Model], instance: models.Model, **_: Any) -> None:
    instance.__dict__[_LOADED] = _snapshot(instance, _fields(sender))


def _saved(
    sender: type[models.Model],
    instance: models.Model,
    update_fields: Iterable[str] | None = None,
    **_: Any,
) -> None:
    """What was written is now what the database holds (fields left out of
    `update_fields` keep their old value there)."""
    instance.__dict__.pop(_CHECKED, None)
    written = _saving(_fields(sender), update_fields)
    instance.__dict__.setdefault(_LOADED, {}).update(_snapshot(instance, written))


def _saving(
    fields: list[UserReferenceField], update_fields: Iterable[str] | None
) -> list[UserReferenceField]:
    if update_fields is None:
        return fields
    names = set(update_fields)
    return [f for f in fields if f.name in names or f.attname in names]


def _references_to_check(
    instance: models.Model, update_fields: Iterable[str] | None
) -> list[tuple[UserReferenceField, object]]:
    fields = _saving(_fields(type(instance)), update_fields)
    adding = instance._state.adding
    out = []
    for field in fields:
        value = instance.__dict__.get(field.attname)
        if value is not None and (adding or _changed(instance, field)):
            out.append((field, value))
    return out


def _before_save(
    sender: type[models.Model],  # noqa: ARG001 - the signal passes it
    instance: models.Model,
    raw: bool = False,
    update_fields: Iterable[str] | None = None,
    **_: Any,
) -> None:
    if raw:
        return
    found = _references_to_check(instance, update_fields)
    if found:
        client, timeout, fallback = current()
        _references.check(
            client,
            [(_column(field), value) for field, value in found],
            timeout=timeout,
            fallback=fallback,
        )
    instance.__dict__[_CHECKED] = {field.attname: value for field, value in found}


def check_user_references(objects: Iterable[models.Model]) -> None:
    """Check the new or changed user references of `objects` in one lookup (before
    `bulk_create`, or a `QuerySet.update()` made from them); raises
    `UserReferenceError` naming every missing one."""
    pending: list[tuple[models.Model, UserReferenceField, object]] = []
    for instance in objects:
        pending += [(instance, f, v) for f, v in _references_to_check(instance, None)]
    if not pending:
        return
    references: list[Reference] = [(_column(field), value) for _, field, value in pending]
    client, timeout, fallback = current()
    _references.check(client, references, timeout=timeout, fallback=fallback)
    for instance, field, value in pending:
        instance.__dict__.setdefault(_CHECKED, {})[field.attname] = value
