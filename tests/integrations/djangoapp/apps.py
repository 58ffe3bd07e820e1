from django.apps import AppConfig


class DjangoAppConfig(AppConfig):
    name = "tests.integrations.djangoapp"
    label = "djangoapp"
    default_auto_field = "django.db.models.BigAutoField"
