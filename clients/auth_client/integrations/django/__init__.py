"""Django: a model field for auth-service user ids, checked before every save, and a
system check that flags foreign keys to a users model (extra `django`).

    # settings.py
    INSTALLED_APPS = [..., "auth_client.integrations.django"]

    # once per process, e.g. in an AppConfig.ready(): a factory is called in the
    # process that first saves (so each pre-fork worker makes its own client)
    from auth_client import SyncAuthClient
    from auth_client.integrations.django import configure
    configure(lambda: SyncAuthClient("dns:///auth-service:50051", token=TOKEN))

    # models.py
    from auth_client.integrations.django import UserReferenceField

    class GroupMember(models.Model):
        group = models.ForeignKey(ChatGroup, on_delete=models.CASCADE)
        user_id = UserReferenceField()      # was: user = models.ForeignKey(User, ...)

`UserReferenceField` is a `UUIDField` (column type uuid on PostgreSQL). Before a
model is saved, its reference fields that are new (an insert) or changed since the
object was loaded or last saved (and among `update_fields`, when given) are checked
in one `users_exist`: a user that does not exist or is deleted fails the save with
`auth_client.UserReferenceError` naming each "table.column = id"; nothing is
written. While auth-service cannot answer, the client's fallback policy decides.
NULL values are not checked; fixtures (`raw` saves) are not checked.

`bulk_create` calls each field's `pre_save`: objects whose references were checked
by `check_user_references(objects)` just before are not asked again, others are
checked one reference at a time. `QuerySet.update()` and `bulk_update()` write no
model and are not checked: call `check_user_references` first.
"""

from auth_client.integrations.django._client import configure, current_client
from auth_client.integrations.django._fields import UserReferenceField, check_user_references

__all__ = ["UserReferenceField", "check_user_references", "configure", "current_client"]
