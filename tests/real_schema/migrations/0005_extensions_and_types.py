"""Extensions from PostgreSQL's contrib, two schemas, an enum and a domain.

hstore is created at 1.7, one version behind, so a test can update it: an extension's version
is part of the schema too.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATEMENTS = [
    "CREATE EXTENSION IF NOT EXISTS pgcrypto",
    "CREATE EXTENSION citext",
    "CREATE EXTENSION hstore VERSION '1.7'",
    "CREATE EXTENSION lo",
    "CREATE EXTENSION isn",
    "CREATE SCHEMA crm",
    "CREATE SCHEMA billing",
    "CREATE TYPE crm.status AS ENUM ('lead', 'active', 'churned')",
    "CREATE DOMAIN crm.email AS citext CHECK (VALUE ~ '^[^@]+@[^@]+$')",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
