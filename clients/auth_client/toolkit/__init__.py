"""The FK-removal toolkit (extra `toolkit`; command `auth-toolkit`).

Service teams run it against their own database, never against auth-service's:

- `audit` (`auth-toolkit fk-audit`): every foreign key that references the users
  table, with rules, deferrability and index coverage (`audit.py`, `report.py`);
- `migration` (`fk-audit --emit-migration DIR`): migrations that build the missing
  indexes and drop the constraints, with an exact rollback (`migration.py`,
  `migration_index.py`);
- `reconcile` (`auth-toolkit reconcile`): rows whose user auth-service reports as
  deleted or never created, found in keyset-paginated batches and optionally fixed
  (`reconcile*.py`);
- `dbmate`: runs dbmate, the default migration format's tool.

Modules are imported one by one (`from auth_client.toolkit.audit import audit`): this
package's `__init__` loads nothing, so `flags` stays light. It imports nothing from
auth-service: reconcile asks it over gRPC through
`auth_client.AuthClient`. docs/fk-removal-playbook.md walks through a migration.
"""
