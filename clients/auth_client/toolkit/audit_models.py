"""`auth-toolkit fk-audit --show-model-changes`: for each foreign key the audit finds,
the ORM model change that replaces it (`auth_client.integrations`, extras
`sqlalchemy` and `django`), and what a service does once.

The change keeps the column as it is (name, type, data, index) and declares it a
user reference, checked against auth-service before every flush or save:

- SQLAlchemy: `user_id: Mapped[uuid.UUID] = mapped_column(info=user_reference())` in
  place of `mapped_column(ForeignKey("users.id"))`; `check_user_references(Session,
  auth)` once.
- Django: `user_id = UserReferenceField()` (`null=True` for a nullable column) in
  place of `user = models.ForeignKey(User, ...)`; the app in INSTALLED_APPS and
  `configure(...)` once.

Only the constraint goes, with the migration `--emit-migration` writes. Django's
makemigrations reads the field change as a removed field plus a new one and would
drop the column with its data: its operations go into `SeparateDatabaseAndState`
with no database operations. Alembic's autogenerate sees only the dropped constraint.

A multi-column key gets the change for its column that references `id` (the other
columns are no longer checked); a column whose type cannot hold a uuid gets none.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auth_client.toolkit.audit import AuditResult, ForeignKey

__all__ = [
    "SETUP",
    "ModelChange",
    "model_change",
    "model_changes",
    "model_changes_json",
    "render_model_changes",
]

_TEXT_TYPES = ("text", "character varying", "character", "varchar", "char")
_ON_DELETE_NOTES = {
    "CASCADE": "deletes the rows",
    "SET NULL": "sets the column to NULL",
    "SET DEFAULT": "sets the column to its default",
}

SETUP: dict[str, tuple[str, ...]] = {
    "sqlalchemy": (
        "from auth_client.integrations.sqlalchemy import check_user_references, user_reference",
        (
            "check_user_references(Session, auth)  # once: your sessionmaker and a"
            " SyncAuthClient (an async_sessionmaker takes an AuthClient)"
        ),
    ),
    "django": (
        'INSTALLED_APPS = [..., "auth_client.integrations.django"]',
        "from auth_client.integrations.django import UserReferenceField, configure",
        "configure(lambda: SyncAuthClient(TARGET, token=TOKEN))  # once, e.g. in AppConfig.ready()",
    ),
    "migrations": (
        (
            "the column stays as it is; only the constraint goes, with the migration"
            " --emit-migration writes (playbook step 5)"
        ),
        "Alembic's autogenerate sees only the dropped constraint: leave that operation out",
        (
            "Django's makemigrations sees a removed field and a new one and would drop the"
            " column with its data: put its operations in"
            " migrations.SeparateDatabaseAndState(state_operations=[...]) with no"
            " database_operations"
        ),
    ),
}
"""What a service does once, whichever foreign keys it has."""


@dataclass(frozen=True, slots=True)
class ModelChange:
    """The model change replacing one foreign key: the column it marks and each ORM's
    new declaration (`sqlalchemy`, `django`) with the one it replaces (`*_was`); all
    None when there is no single column to mark (`notes` say why)."""

    column: str | None
    sqlalchemy: str | None
    sqlalchemy_was: str | None
    django: str | None
    django_was: str | None
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "sqlalchemy": {"declare": self.sqlalchemy, "in_place_of": self.sqlalchemy_was}
            if self.sqlalchemy
            else None,
            "django": {"declare": self.django, "in_place_of": self.django_was}
            if self.django
            else None,
            "notes": list(self.notes),
        }


def _attribute(column: str) -> str:
    """A Python attribute name for `column`: the column's own name when it is one."""
    if column.isidentifier() and not keyword.iskeyword(column):
        return column
    name = re.sub(r"\W+", "_", column).strip("_").lower() or "user"
    if name[0].isdigit():
        name = f"c_{name}"
    return f"{name}_" if keyword.iskeyword(name) else name


def _python_type(pg_type: str | None) -> str | None:
    """The Mapped[] type of a column of `pg_type` (None: unknown, taken as uuid)."""
    if pg_type is None or pg_type == "uuid":
        return "uuid.UUID"
    if pg_type.split("(", 1)[0].strip() in _TEXT_TYPES:
        return "str"
    return None


def _key_column(fk: ForeignKey) -> int | None:
    """Which of the key's columns holds the user id: the only one, or the one that
    references `id`."""
    if len(fk.columns) == 1:
        return 0
    return fk.referenced_columns.index("id") if "id" in fk.referenced_columns else None


def model_change(fk: ForeignKey, referenced_schema: str, referenced_table: str) -> ModelChange:
    """The SQLAlchemy and Django declarations replacing `fk`, which references
    `referenced_schema.referenced_table`."""
    index = _key_column(fk)
    if index is None:
        pairs = ", ".join(
            f"{c} -> {r}" for c, r in zip(fk.columns, fk.referenced_columns, strict=True)
        )
        note = f"a key of several columns ({pairs}) and none references id: no change"
        return ModelChange(None, None, None, None, None, (note,))
    column = fk.columns[index]
    pg_type = fk.column_types[index] if len(fk.column_types) == len(fk.columns) else None
    python_type = _python_type(pg_type)
    if python_type is None:
        note = (
            f"column type {pg_type}: auth-service user ids are uuids, and the integrations"
            " check uuid or text columns: no change"
        )
        return ModelChange(column, None, None, None, None, (note,))
    target = (
        referenced_table
        if referenced_schema == "public"
        else (f"{referenced_schema}.{referenced_table}")
    )
    sqlalchemy, sqlalchemy_was = _sqlalchemy(fk, index, python_type, target)
    django, django_was = _django(fk, index)
    notes = []
    if len(fk.columns) > 1:
        others = ", ".join(c for c in fk.columns if c != column)
        notes.append(
            f"a key of several columns: {column} (-> {fk.referenced_columns[index]}) is"
            f" checked, {others} no longer"
        )
    if python_type == "str":
        notes.append(
            f"column type {pg_type}: UserReferenceField is a UUIDField and Django compares it"
            f" as uuid: convert the column first (ALTER COLUMN ... TYPE uuid USING"
            f" ...::uuid); the SQLAlchemy marker works on {pg_type} as it is"
        )
    if fk.on_delete in _ON_DELETE_NOTES:
        notes.append(
            f"ON DELETE {fk.on_delete} {_ON_DELETE_NOTES[fk.on_delete]}: your user_deleted"
            " handler does that now (playbook step 6)"
        )
    return ModelChange(column, sqlalchemy, sqlalchemy_was, django, django_was, tuple(notes))


def _sqlalchemy(fk: ForeignKey, index: int, python_type: str, target: str) -> tuple[str, str]:
    """(the marked declaration, the one it replaces) of column `index` of `fk`."""
    column = fk.columns[index]
    attribute = _attribute(column)
    name_arg = f"{_py_string(column)}, " if attribute != column else ""
    nullable = column not in fk.not_null_columns
    mapped = f"Mapped[{python_type} | None]" if nullable else f"Mapped[{python_type}]"
    declare = f"{attribute}: {mapped} = mapped_column({name_arg}info=user_reference())"
    if len(fk.columns) == 1:
        ref = _py_string(f"{target}.{fk.referenced_columns[0]}")
        return declare, f"{attribute}: {mapped} = mapped_column({name_arg}ForeignKey({ref}), ...)"
    columns = ", ".join(map(_py_string, fk.columns))
    refs = ", ".join(_py_string(f"{target}.{r}") for r in fk.referenced_columns)
    return declare, f"ForeignKeyConstraint([{columns}], [{refs}]) in __table_args__"


def _django(fk: ForeignKey, index: int) -> tuple[str, str]:
    """(the UserReferenceField, the field it replaces) of column `index` of `fk`."""
    column = fk.columns[index]
    attribute = _attribute(column)
    explicit = attribute != column
    options = [f"db_column={_py_string(column)}"] if explicit else []
    options += [] if column in fk.not_null_columns else ["null=True"]
    declare = f"{attribute} = UserReferenceField({', '.join(options)})"
    if len(fk.columns) > 1:
        return declare, f"{attribute} = models.UUIDField(...) (Django has no multi-column key)"
    if column.endswith("_id") and not explicit:
        return declare, f"{column.removesuffix('_id')} = models.ForeignKey(User, ...)"
    return declare, f"{attribute} = models.ForeignKey(User, db_column={_py_string(column)}, ...)"


def _py_string(text: str) -> str:
    """`text` as a double-quoted Python string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def model_changes(result: AuditResult) -> list[tuple[ForeignKey, ModelChange]]:
    """Each foreign key of `result` with its model change, in the audit's order."""
    return [
        (fk, model_change(fk, result.referenced_schema, result.referenced_table))
        for fk in result.foreign_keys
    ]


def render_model_changes(result: AuditResult) -> str:
    """The text `fk-audit --show-model-changes` adds after the table."""
    if not result.foreign_keys:
        return ""
    lines = [
        "Model changes (auth_client.integrations; extras sqlalchemy, django). Each column stays",
        "as it is, declared a user reference that is checked before every flush or save; keep",
        "the column's other arguments (primary_key=, index=, ...).",
    ]
    label = "  {:<11} {}".format
    for fk, change in model_changes(result):
        shown = ", ".join(fk.sql_columns)
        if change.column is not None:
            shown = fk.sql_columns[fk.columns.index(change.column)]
        lines += ["", f"{fk.sql_table}.{shown}  ({fk.constraint})"]
        if change.sqlalchemy and change.django:
            lines += [
                label("SQLAlchemy", change.sqlalchemy),
                label("  was", change.sqlalchemy_was),
                label("Django", change.django),
                label("  was", change.django_was),
            ]
        lines += [label("note", note) for note in change.notes]
    lines += ["", "Once per service:"]
    for title, key in (
        ("SQLAlchemy", "sqlalchemy"),
        ("Django", "django"),
        ("Migrations", "migrations"),
    ):
        lines += [label("" if i else title, line) for i, line in enumerate(SETUP[key])]
    return "\n".join(lines)


def model_changes_json(result: AuditResult) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Per foreign key (in the audit's order) its change, and the once-per-service
    setup, for `--format json`."""
    changes = [change.to_json() for _, change in model_changes(result)]
    return changes, {key: list(lines) for key, lines in SETUP.items()}
