"""The real-suite shape's additions to a generated suite: seed rows, and tests that change them.

The seed is reference data a late data migration inserts (explicit ids, then ``setval``), so
it is in every migrated database and in the plugin's template. ``bench_seed.py`` holds the
same rows for the suite's own use: the per-worker DELETE setup re-inserts them after every
test, and the tests that change them check first that they start pristine, so a setup that
leaks one test's changes into the next fails, it is not just slower.
"""

from __future__ import annotations

CUSTOMERS = 10
ORDERS_PER_CUSTOMER = 2
LINES_PER_ORDER = 2
REFERENCE_TABLES = 5
"""Tables after the three the tests map that also hold seed rows (lookup data)."""
REFERENCE_ROWS = 5

Row = dict[str, int | str | None]


def seed_rows(tables: int) -> dict[str, list[Row]]:
    """Rows per table, parents before children (foreign-key order)."""
    orders = CUSTOMERS * ORDERS_PER_CUSTOMER
    lines = orders * LINES_PER_ORDER
    rows: dict[str, list[Row]] = {
        "tbl_001": [_row(i, "customer", 10 * i, None) for i in range(1, CUSTOMERS + 1)],
        "tbl_002": [
            _row(i, "order", 0, 1 + (i - 1) // ORDERS_PER_CUSTOMER) for i in range(1, orders + 1)
        ],
        "tbl_003": [
            _row(i, "line", i, 1 + (i - 1) // LINES_PER_ORDER) for i in range(1, lines + 1)
        ],
    }
    for table in range(4, min(tables, 3 + REFERENCE_TABLES) + 1):
        rows[f"tbl_{table:03d}"] = [_row(i, "ref", i, None) for i in range(1, REFERENCE_ROWS + 1)]
    return {name: table_rows for name, table_rows in rows.items() if int(name[4:]) <= tables}


def _row(id_: int, kind: str, amount: int, ref_id: int | None) -> Row:
    row: Row = {"id": id_, "name": f"seed-{kind}-{id_:03d}", "amount": amount}
    if ref_id is not None:
        row["ref_id"] = ref_id
    return row


def seed_module(tables: int) -> str:
    """``bench_seed.py``: the seed rows as the suite's conftest would keep them."""
    return (
        '"""Seed rows the data migration inserts (parents first), for the suite\'s own use."""\n\n'
        f"CUSTOMERS = {CUSTOMERS}\nORDERS_PER_CUSTOMER = {ORDERS_PER_CUSTOMER}\n"
        f"LINES_PER_ORDER = {LINES_PER_ORDER}\nSEED = {seed_rows(tables)!r}\n"
    )


def migration_body(tables: int) -> str:
    """A data migration: bulk inserts with explicit ids, then each sequence moved past them."""
    lines = ["def upgrade() -> None:"]
    for table, rows in seed_rows(tables).items():
        columns = ", ".join(f'sa.column("{name}")' for name in rows[-1])
        lines.append(f'    op.bulk_insert(sa.table("{table}", {columns}), {rows!r})')
        lines.append(
            f"    op.execute(\"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f'{len(rows)})")'
        )
    lines += ["", "", "def downgrade() -> None:"]
    lines += [f'    op.execute("DELETE FROM {t}")' for t in reversed(seed_rows(tables))]
    return "\n".join(lines) + "\n"


SCENARIO = '''

async def change_seed(db: AsyncSession, n: int) -> None:
    """Commit a change to seed rows, after checking they are as the seed left them."""
    customer = 1 + (n // 16) % CUSTOMERS
    first_order = (customer - 1) * ORDERS_PER_CUSTOMER + 1
    kind = (n // 4) % 4
    if kind == 0:
        await _bump_customer(db, customer)
    elif kind == 1:
        await _delete_line(db, (first_order - 1) * LINES_PER_ORDER + 1)
    elif kind == 2:
        await _order_for_customer(db, customer, n)
    else:
        await _delete_order(db, customer, first_order + ORDERS_PER_CUSTOMER - 1)


async def _bump_customer(db: AsyncSession, customer_id: int) -> None:
    customer = await db.get(Customer, customer_id)
    assert customer is not None and customer.amount == Decimal(10 * customer_id)
    customer.amount += Decimal(5)
    customer.name = f"{customer.name}-changed"
    await db.commit()
    amount = await db.scalar(select(Customer.amount).where(Customer.id == customer_id))
    assert amount == Decimal(10 * customer_id + 5)


async def _delete_line(db: AsyncSession, line_id: int) -> None:
    line = await db.get(Line, line_id)
    assert line is not None and line.amount == Decimal(line_id)
    await db.delete(line)
    await db.commit()
    assert await db.scalar(select(func.count()).where(Line.id == line_id)) == 0


async def _order_for_customer(db: AsyncSession, customer_id: int, n: int) -> None:
    count = select(func.count()).select_from(Order).where(Order.ref_id == customer_id)
    assert await db.scalar(count) == ORDERS_PER_CUSTOMER
    order = Order(name=f"o-seeded-{n}", ref_id=customer_id)
    db.add(order)
    await db.flush()
    db.add(Line(name=f"l-seeded-{n}", ref_id=order.id, amount=Decimal(n)))
    await db.commit()
    assert await db.scalar(count) == ORDERS_PER_CUSTOMER + 1


async def _delete_order(db: AsyncSession, customer_id: int, order_id: int) -> None:
    lines = (await db.scalars(select(Line).where(Line.ref_id == order_id))).all()
    assert len(lines) == LINES_PER_ORDER
    for line in lines:
        await db.delete(line)
    await db.flush()
    order = await db.get(Order, order_id)
    assert order is not None
    await db.delete(order)
    await db.commit()
    count = select(func.count()).select_from(Order).where(Order.ref_id == customer_id)
    assert await db.scalar(count) == ORDERS_PER_CUSTOMER - 1
'''
"""Appended to ``bench_scenario.py``; a quarter of the tests call ``change_seed``."""

SCENARIO_IMPORT = "from bench_seed import CUSTOMERS, LINES_PER_ORDER, ORDERS_PER_CUSTOMER\n"


def test_body(n: int) -> str:
    """Every fourth test commits to seed rows; the others insert rows of their own."""
    if n % 4 == 0:
        return f"    await change_seed(db, {n})\n"
    return f'    await place_order(db, "{n:04d}", lines={1 + n % 4})\n'
