"""The FK-removal toolkit (extra `toolkit`; command `auth-toolkit`).

Service teams run it against their own database, never against auth-service's:

- `audit` (`auth-toolkit fk-audit`): every foreign key that references the users
  table, with rules, deferrability, index coverage, NOT NULL, soft-delete column
  and the reconcile actions that apply (`audit*.py`, `actions.py`, `report.py`);
- `migration` (`fk-audit --emit-migration DIR`): migrations that build the missing
  indexes and drop the constraints, with a rollback that restores them exactly and
  never stops half-way, for dbmate, sqlx or golang-migrate (`migration*.py`), and
  `fk-audit --check-restore` before a rollback (`restore_check.py`);
- `reconcile` (`auth-toolkit reconcile`): rows whose user auth-service reports as
  deleted or never created, found in keyset-paginated batches and fixed only when
  the whole scan allows it (orphan-fraction guard, cascade plan) (`reconcile*.py`);
- `rehearse` (`auth-toolkit rehearse`): the playbook on a scratch copy of the
  database (`pg_dump | pg_restore`, `pg_tools`) under a load like the service's,
  each step applied by the real migration tool (`migration_tool`) and measured, a
  go / no-go per table, a PNG timeline (`rehearse*.py`, `timeline.py`, `png.py`);
- `dbmate`: runs dbmate, the default migration format's tool; `exits`: exit codes;
  `urls`: `--database-url` checked in plain words; `audit_flags`: shared flags.

Modules are imported one by one (`from auth_client.toolkit.audit import audit`): this
package's `__init__` loads nothing, so `flags` stays light. It imports nothing from
auth-service: reconcile asks it over gRPC through
`auth_client.AuthClient`. docs/fk-removal-playbook.md walks through a migration.
"""
