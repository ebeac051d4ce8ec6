"""What a refused request must not change: the row count of every table and the audit chain head."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from provisioning.audit.models import AuditChainHead
from provisioning.database import Database
from provisioning.tables import metadata


@dataclass(frozen=True)
class Rows:
    counts: dict[str, int]
    chain_head: tuple[int, str]

    def without(self, *tables: str) -> Rows:
        """The same, not counting ``tables`` (rows an edge keeps by design, e.g. rejected
        Okta deliveries)."""
        counts = {name: n for name, n in self.counts.items() if name not in tables}
        return Rows(counts, self.chain_head)


_COUNTS = select(
    *(
        select(func.count()).select_from(table).scalar_subquery().label(table.name)
        for table in metadata.sorted_tables
    )
)
_HEAD = select(AuditChainHead.last_event_id, AuditChainHead.last_hash)


def rows(database: Database) -> Rows:
    """Every table's row count and the audit chain head, read in one snapshot."""
    with database.reader() as session:
        counts = session.execute(_COUNTS).one()._asdict()
        head = session.execute(_HEAD).one()
    return Rows(counts, (head[0], head[1]))
