"""Rewrite the configuration table in README.md from auth_service.config.ENV_VARS.

python scripts/config_table.py          # rewrite
python scripts/config_table.py --check  # exit 1 if README is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from auth_service.config import ENV_VARS, Settings

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def table() -> str:
    defaults = Settings.__dataclass_fields__
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for var in ENV_VARS:
        field = defaults.get(var.attr)
        if var.required:
            default = "required"
        elif field is None or field.repr is False:
            default = "(none)" if field is None or not field.default else "(set)"
        else:
            value = field.default
            default = f"`{','.join(value) if isinstance(value, tuple) else value}`"
            if value in ("", (), None):
                default = "(none)"
        rows.append(f"| `{var.name}` | {default} | {var.help} |")
    return "\n".join(rows)


def main() -> int:
    text = README.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    new = f"{head}{START}\n{table()}\n{END}{tail}"
    if "--check" in sys.argv:
        return 0 if new == text else 1
    README.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
