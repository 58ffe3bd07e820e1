"""The pg_catalog queries of the FK audit (`audit.py` turns their rows into
`ForeignKey`s). Every name is read from the catalog and quoted by PostgreSQL."""

from __future__ import annotations

from auth_client.toolkit.actions import soft_delete_column_sql

RESOLVE = """
SELECT n.nspname, c.relname, c.relkind::text AS relkind, c.oid,
       pg_catalog.format('%I.%I', n.nspname, c.relname) AS sql_name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
"""

# Column names of an attnum array, in array order.
_NAMES = """ARRAY(SELECT a.attname::text FROM pg_catalog.unnest({arr}) WITH ORDINALITY k(num, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.num ORDER BY k.ord)"""
_QUOTED = """ARRAY(SELECT pg_catalog.quote_ident(a.attname) FROM pg_catalog.unnest({arr})
      WITH ORDINALITY k(num, ord)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.num ORDER BY k.ord)"""

# A covering index: valid, not partial, and its first N key columns are exactly the
# N referencing columns (in any order: lookups compare every one of them for equality).
_INDEX = """(SELECT ic.relname::text FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
      WHERE i.indrelid = c.conrelid AND i.indisvalid AND i.indisready AND i.indislive
        AND i.indpred IS NULL AND i.indnkeyatts >= pg_catalog.cardinality(c.conkey)
        AND (SELECT pg_catalog.array_agg(k.num ORDER BY k.num)
             FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(num, ord)
             WHERE k.ord <= pg_catalog.cardinality(c.conkey))
          = (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.unnest(c.conkey) k)
      ORDER BY i.indnkeyatts, ic.relname LIMIT 1)"""

_FOREIGN_KEYS = f"""
SELECT n.nspname::text AS schema, t.relname::text AS "table", c.conname::text AS constraint,
       {_NAMES.format(arr="c.conkey", rel="c.conrelid")} AS columns,
       {_NAMES.format(arr="c.confkey", rel="c.confrelid")} AS referenced_columns,
       c.confdeltype::text AS deltype, c.confupdtype::text AS updtype,
       c.confmatchtype::text AS matchtype, c.condeferrable, c.condeferred, c.convalidated,
       {{enforced}} AS enforced, {{delsetcols}} AS on_delete_columns,
       t.relkind = 'p' AS partitioned,
       {_INDEX} AS index,
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num
             WHERE a.attnotnull ORDER BY k.ord) AS not_null_columns,
       ARRAY(SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
             FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num
             ORDER BY k.ord) AS column_types,
       {soft_delete_column_sql("c.conrelid")} AS soft_delete,
       t.reltuples::float8 AS reltuples,
       pg_catalog.pg_get_constraintdef(c.oid) AS definition,
       pg_catalog.format('%I.%I', n.nspname, t.relname) AS sql_table,
       pg_catalog.quote_ident(c.conname) AS sql_constraint,
       {_QUOTED.format(arr="c.conkey", rel="c.conrelid")} AS sql_columns,
       c.confrelid::pg_catalog.regclass::text AS sql_referenced_table,
       {_QUOTED.format(arr="c.confkey", rel="c.confrelid")} AS sql_referenced_columns
FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'f' AND c.confrelid = $1 AND c.conparentid = 0
ORDER BY n.nspname, t.relname, c.conname
"""  # noqa: S608 - assembled from the constant fragments above, no input


def foreign_keys_query(server_version_num: int) -> str:
    """The catalog query for this server (ON DELETE SET NULL (cols) is PG15+,
    NOT ENFORCED is PG18+)."""
    delsetcols = (
        _NAMES.format(arr="c.confdelsetcols", rel="c.conrelid")
        if server_version_num >= 150000
        else "NULL::text[]"
    )
    enforced = "c.conenforced" if server_version_num >= 180000 else "true"
    return _FOREIGN_KEYS.format(delsetcols=delsetcols, enforced=enforced)


def quoted_names(arr: str, rel: str) -> str:
    """SQL: the quoted names of the attnum array `arr` of relation `rel`, in order."""
    return _QUOTED.format(arr=arr, rel=rel)
