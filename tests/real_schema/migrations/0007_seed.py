"""Seed rows in every table, large objects, materialized views and database settings."""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ROWS = [
    """INSERT INTO crm.account (email, status, attrs, isbn) VALUES
        ('ada@example.com', 'active', 'plan=>pro', '978-0-306-40615-7'),
        ('bob@example.com', 'lead', '', NULL),
        ('cy@example.com', 'churned', 'plan=>free', NULL),
        ('dee@example.com', 'active', '', NULL)""",
    "UPDATE crm.account SET referred_by = 1 WHERE email IN ('bob@example.com', 'cy@example.com')",
    "INSERT INTO billing.account (crm_account_id, balance) VALUES (1, 100.00), (2, 0), (4, 12.50)",
    "INSERT INTO billing.invoice (id, account_id, last_payment_id) VALUES (1, 1, 1), (2, 1, NULL)",
    "INSERT INTO billing.payment VALUES (1, 1, 100.00)",  # closes the deferred cycle at COMMIT
    """INSERT INTO public.event (happened_on, kind, payload) VALUES
        ('2024-03-01', 'signup', '{}'), ('2025-06-01', 'login', '{"ip": "10.0.0.1"}'),
        ('2031-01-01', 'renewal', NULL)""",
    "INSERT INTO public.event_tag VALUES (1, '2024-03-01', 'first'), (3, '2031-01-01', 'late')",
    "INSERT INTO public.booking (during) VALUES ('[2025-01-01 10:00, 2025-01-01 11:00)')",
    "INSERT INTO public.vehicle (name) VALUES ('bike')",  # the ALWAYS rule logs it
    "INSERT INTO public.car (name, doors) VALUES ('sedan', 4), ('coupe', 2)",
    "INSERT INTO public.tag VALUES ('red'), ('red'), ('blue')",  # stored as 'red!' ...
    """INSERT INTO public.session_cache VALUES ('a', '{"n": 1}'), ('b', '{"n": 2}')""",
    "INSERT INTO public.hstore_registry VALUES ('default', 'color=>blue')",
    """INSERT INTO crm.tenant_doc (tenant, body) VALUES
        ('acme', 'acme plan'), ('globex', 'globex plan')""",
    "INSERT INTO public.attachment (body) SELECT decode(repeat(md5('x'), 8000), 'hex')",
    """INSERT INTO public.measurement (sensor, value, note)
        SELECT mod(i, 17), i * 0.5, md5(i::text) FROM generate_series(1, 10000) i""",
    """INSERT INTO public.measurement_flag
        SELECT id, 'outlier' FROM public.measurement WHERE mod(id, 1000) = 0""",
    "SELECT setval('public.ticket_seq', 41)",
]
LARGE_OBJECTS = [
    """INSERT INTO public.document (name, blob) VALUES
        ('terms', lo_from_bytea(0, 'terms v1')), ('logo', lo_from_bytea(0, '\\x89504e47'))""",
    "SELECT lo_from_bytea(0, 'an orphan large object')",
]
DERIVED = [
    """CREATE MATERIALIZED VIEW crm.account_stats AS
        SELECT status, count(*) AS accounts FROM crm.account GROUP BY status""",
    "CREATE UNIQUE INDEX account_stats_status ON crm.account_stats (status)",
    """CREATE MATERIALIZED VIEW public.event_summary AS
        SELECT kind, count(*) AS events FROM public.event GROUP BY kind WITH NO DATA""",
    """DO $$ BEGIN
      EXECUTE format('ALTER DATABASE %I SET app.region = %L', current_database(), 'eu-west');
      EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '8MB');
    END $$""",
]


def upgrade() -> None:
    for statement in ROWS + LARGE_OBJECTS + DERIVED:
        op.execute(statement)
