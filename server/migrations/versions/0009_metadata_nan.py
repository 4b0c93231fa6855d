"""stored DICOM JSON without NaN

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 07:40:00

Until 23 November 2026 a DS value that reads as NaN or an infinity was stored in an instance's
DICOM JSON model as the bare constant ``NaN``, ``Infinity`` or ``-Infinity``, which is not JSON:
WADO-RS served it as it was, and strict clients refused the whole response. Ingest now writes
``null`` (an empty value, PS3.18 F.2.5); this rewrites the rows stored before. Only rows whose
text holds such a constant outside a string are changed. There is no way back: the constants
were never valid, so the downgrade leaves the rows as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Rows rewritten per statement batch (each row's text is read and written on its own).
BATCH = 500


def _without_constants(text: str) -> str | None:
    """The model with each bare constant as ``null``, or None if it has none."""
    found: list[str] = []

    def constant(name: str) -> None:
        found.append(name)

    model = json.loads(text, parse_constant=constant)
    if not found:
        return None  # "NaN" or "Infinity" only inside a string (a name, a description)
    return json.dumps(model, ensure_ascii=False, separators=(",", ":"))


def upgrade() -> None:
    bind = op.get_bind()
    instances = sa.table(
        "dicom_instances", sa.column("sop_instance_uid", sa.String), sa.column("metadata", sa.Text)
    )
    suspects = (
        bind.execute(
            sa.select(instances.c.sop_instance_uid).where(
                instances.c.metadata.like("%NaN%") | instances.c.metadata.like("%Infinity%")
            )
        )
        .scalars()
        .all()
    )
    for start in range(0, len(suspects), BATCH):
        uids = suspects[start : start + BATCH]
        rows = bind.execute(
            sa.select(instances.c.sop_instance_uid, instances.c.metadata).where(
                instances.c.sop_instance_uid.in_(uids)
            )
        ).all()
        fixed = [
            {"uid": uid, "text": text}
            for uid, text in ((uid, _without_constants(old)) for uid, old in rows)
            if text is not None
        ]
        if fixed:
            bind.execute(
                instances.update()
                .where(instances.c.sop_instance_uid == sa.bindparam("uid"))
                .values(metadata=sa.bindparam("text")),
                fixed,
            )


def downgrade() -> None:
    pass
