"""Hidden cascades: which rows an action would change besides the orphan rows
themselves, found before acting, without writing anything.

From the orphan rows, the foreign keys that point at their table are followed
(every schema), recursively:

- a deleted row: ON DELETE CASCADE deletes the rows referencing it; SET NULL and
  SET DEFAULT update them; NO ACTION and RESTRICT *block* the delete (those rows
  are counted as `blocked` unless the same delete removes them too);
- an updated key column (set-null, or a SET NULL / SET DEFAULT above): the ON UPDATE
  rule of the foreign keys that reference that column, the same way.

Rows are identified by (tableoid, ctid), so a row reached twice counts once, and
self-referencing tables end. Triggers are not followed: what really changed is
measured when acting (`reconcile`, from pg_stat_xact_user_tables).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from auth_client.toolkit.audit_catalog import quoted_names
from auth_client.toolkit.reconcile_target import rows_sql

if TYPE_CHECKING:
    import asyncpg

    from auth_client.toolkit.reconcile_target import Target

_CHUNK = 1000

_EDGES = f"""
SELECT c.conrelid::int8 AS child, c.confrelid::int8 AS parent,
       c.conrelid::pg_catalog.regclass::text AS child_name,
       c.confdeltype::text AS on_delete, c.confupdtype::text AS on_update,
       {quoted_names("c.conkey", "c.conrelid")} AS cols,
       ARRAY(SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
             FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num
             ORDER BY k.ord) AS types,
       {quoted_names("c.confkey", "c.confrelid")} AS refcols,
       {{set_cols}} AS set_cols
FROM pg_catalog.pg_constraint c
WHERE c.contype = 'f' AND c.conparentid = 0 AND {{enforced}}
"""  # noqa: S608 - constant fragments


@dataclass(frozen=True, slots=True)
class Edge:
    """A foreign key: `child` (cols) references `parent` (refcols)."""

    child: int
    parent: int
    child_name: str
    on_delete: str
    on_update: str
    cols: tuple[str, ...]
    types: tuple[str, ...]
    refcols: tuple[str, ...]
    set_cols: tuple[str, ...] | None


@dataclass
class CascadePlan:
    """Rows one action would change, per table, and rows that would make it fail."""

    action: str
    table: str
    target_rows: int = 0
    deleted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)

    @property
    def other_rows(self) -> int:
        """Rows changed besides the orphan rows themselves."""
        return sum(self.deleted.values()) + sum(self.updated.values()) - self.target_rows

    def others(self) -> str:
        """`table (n deleted), ...` of the rows changed besides the orphan rows."""
        parts = []
        for kind, counts in (("deleted", self.deleted), ("updated", self.updated)):
            for table, count in sorted(counts.items()):
                own = self.target_rows if table == self.table and kind == self.own_kind else 0
                if count - own:
                    parts.append(f"{table} ({count - own} {kind})")
        return ", ".join(parts)

    @property
    def own_kind(self) -> str:
        return "deleted" if self.action == "delete" else "updated"

    def to_json(self) -> dict[str, Any]:
        tables: dict[str, dict[str, int]] = defaultdict(dict)
        for kind, counts in (("deleted", self.deleted), ("updated", self.updated)):
            for table, count in counts.items():
                tables[table][kind] = count
        return {
            "orphan_rows": self.target_rows,
            "other_rows": self.other_rows,
            "tables": dict(sorted(tables.items())),
            "blocked": dict(sorted(self.blocked.items())),
        }


async def load_edges(conn: asyncpg.Connection) -> list[Edge]:
    version = int(await conn.fetchval("SELECT pg_catalog.current_setting('server_version_num')"))
    set_cols = (
        quoted_names("c.confdelsetcols", "c.conrelid") if version >= 150000 else "NULL::text[]"
    )
    enforced = "c.conenforced" if version >= 180000 else "true"
    rows = await conn.fetch(_EDGES.format(set_cols=set_cols, enforced=enforced))
    return [
        Edge(
            child=r["child"],
            parent=r["parent"],
            child_name=r["child_name"],
            on_delete=r["on_delete"],
            on_update=r["on_update"],
            cols=tuple(r["cols"]),
            types=tuple(r["types"]),
            refcols=tuple(r["refcols"]),
            set_cols=tuple(r["set_cols"]) if r["set_cols"] else None,
        )
        for r in rows
    ]


Row = tuple[str, dict[str, str | None]]  # (tableoid:ctid, key column -> value as text)


class _Walk:
    def __init__(self, conn: asyncpg.Connection, edges: list[Edge]) -> None:
        self.conn = conn
        self.by_parent: dict[int, list[Edge]] = defaultdict(list)
        for edge in edges:
            self.by_parent[edge.parent].append(edge)
        self.names: dict[int, str] = {e.child: e.child_name for e in edges}
        self.deleted: dict[int, set[str]] = defaultdict(set)
        self.updated: dict[int, set[str]] = defaultdict(set)
        self.blocking: dict[int, set[str]] = defaultdict(set)

    def key_columns(self, rel: int) -> list[str]:
        return sorted({c for e in self.by_parent[rel] for c in e.refcols})

    def select_list(self, rel: int) -> str:
        cols = [f"{c}::text" for c in self.key_columns(rel)]
        return ", ".join(["tableoid::text || ':' || ctid::text", *cols])

    def rows(self, rel: int, records: list[asyncpg.Record]) -> list[Row]:
        names = self.key_columns(rel)
        return [(r[0], dict(zip(names, list(r)[1:], strict=True))) for r in records]

    async def children(self, edge: Edge, rows: list[Row]) -> list[Row]:
        every = (tuple(row[c] for c in edge.refcols) for _, row in rows)
        keys = sorted({k for k in every if None not in k}, key=str)
        n = len(edge.cols)
        casts = ", ".join(f"u.k{i}::{t}" for i, t in enumerate(edge.types))
        arrays = ", ".join(f"${i + 1}::text[]" for i in range(n))
        names = ", ".join(f"k{i}" for i in range(n))
        sql = (
            f"SELECT {self.select_list(edge.child)} FROM {edge.child_name}"  # noqa: S608
            f" WHERE ({', '.join(edge.cols)}) IN"
            f" (SELECT {casts} FROM pg_catalog.unnest({arrays}) AS u({names}))"
        )
        found: list[Row] = []
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            columns = [[k[i] for k in chunk] for i in range(n)]
            found += self.rows(edge.child, await self.conn.fetch(sql, *columns))
        return found

    async def follow(self, rel: int, changed: set[str], rows: list[Row], *, deleting: bool) -> None:
        queue = [(rel, deleting, changed, rows)]
        while queue:
            rel, deleting, changed, rows = queue.pop()
            for edge in self.by_parent[rel]:
                if not deleting and not changed.intersection(edge.refcols):
                    continue
                rule = edge.on_delete if deleting else edge.on_update
                found = await self.children(edge, rows)
                if rule in ("a", "r"):  # NO ACTION / RESTRICT: the action would fail
                    self.blocking[edge.child].update(r for r, _ in found)
                    continue
                if rule == "c" and deleting:
                    new = [r for r in found if r[0] not in self.deleted[edge.child]]
                    self.deleted[edge.child].update(r for r, _ in new)
                    queue.append((edge.child, True, set(), new))
                    continue
                cols = set(edge.set_cols or edge.cols)
                new = [r for r in found if r[0] not in self.updated[edge.child]]
                self.updated[edge.child].update(r for r, _ in new)
                queue.append((edge.child, False, cols, new))


async def plan(
    conn: asyncpg.Connection,
    target: Target,
    action: str,
    values: list[object],
    edges: list[Edge],
) -> CascadePlan:
    """The rows `action` on the orphan `values` of `target` would change."""
    walk = _Walk(conn, edges)
    walk.names[target.oid] = target.sql_table
    sql = rows_sql(target, walk.select_list(target.oid))
    rows: list[Row] = []
    for start in range(0, len(values), _CHUNK):
        rows += walk.rows(target.oid, await conn.fetch(sql, values[start : start + _CHUNK]))
    ids = {r for r, _ in rows}
    if action == "delete":
        walk.deleted[target.oid] |= ids
        await walk.follow(target.oid, set(), rows, deleting=True)
    else:
        walk.updated[target.oid] |= ids
        changed = {"deleted_at"} if action == "soft-delete" else {target.sql_column}
        await walk.follow(target.oid, changed, rows, deleting=False)
    result = CascadePlan(action, target.sql_table, target_rows=len(ids))
    for rel, deleted in walk.deleted.items():
        if deleted:
            result.deleted[walk.names[rel]] = len(deleted)
    for rel, updated in walk.updated.items():
        if updated - walk.deleted[rel]:
            result.updated[walk.names[rel]] = len(updated - walk.deleted[rel])
    for rel, blocking in walk.blocking.items():
        if blocking - walk.deleted[rel]:
            result.blocked[walk.names[rel]] = len(blocking - walk.deleted[rel])
    return result
