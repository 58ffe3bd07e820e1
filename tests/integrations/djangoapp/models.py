"""Models of a service using auth-service's users: two with references, one still
holding a ForeignKey to the users model (what the system check flags)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from auth_client.integrations.django import UserReferenceField


class Member(models.Model):
    group = models.CharField(max_length=50)
    user_id = UserReferenceField()

    class Meta:
        app_label = "djangoapp"

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.pk}"


class Post(models.Model):
    title = models.CharField(max_length=100)
    author_id = UserReferenceField()
    editor_id = UserReferenceField(null=True)

    class Meta:
        app_label = "djangoapp"

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.pk}"


class LegacyMembership(models.Model):
    """Not migrated yet: still a foreign key into the users table."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A column not named `<field>_id`: the replacement must keep it.
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_column="approved_by",
    )

    class Meta:
        app_label = "djangoapp"

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.pk}"
