"""The demo's order database: a small SQLite table created from seed rows on first use."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["SEED_ORDERS", "demo_db_path", "ensure_orders_db", "fetch_order"]

# (order_id, customer, status, placed_on, [(sku, name, unit_price, quantity), ...])
SEED_ORDERS: list[tuple[str, str, str, str, list[tuple[str, str, float, int]]]] = [
    ("1041", "Ana Silva", "delivered", "2026-10-02", [("MUG-12", "stoneware mug", 9.5, 4)]),
    (
        "1042",
        "Ben Okafor",
        "delivered",
        "2026-10-05",
        [("KET-01", "electric kettle", 37.9, 3), ("FIL-20", "water filter", 12.25, 2)],
    ),
    ("1043", "Chen Wei", "shipped", "2026-10-19", [("PAN-28", "frying pan", 54.0, 1)]),
    ("1044", "Dana Levi", "cancelled", "2026-10-21", [("KNF-08", "chef's knife", 89.99, 1)]),
    ("1045", "Emil Novak", "delivered", "2026-11-01", [("TOW-03", "tea towel", 6.75, 6)]),
]


def demo_db_path() -> Path:
    """`TETHER_DEMO_DB`, else `./.tether/demo-orders.db`."""
    return Path(os.environ.get("TETHER_DEMO_DB", ".tether/demo-orders.db"))


def ensure_orders_db(path: Path | None = None) -> Path:
    """Create the demo database from the seed rows if it is not there yet."""
    path = path or demo_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS orders (
                order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL, placed_on TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS order_items (
                order_id TEXT NOT NULL REFERENCES orders(order_id), sku TEXT NOT NULL, name TEXT NOT NULL,
                unit_price REAL NOT NULL, quantity INTEGER NOT NULL, PRIMARY KEY (order_id, sku)
            );
            """
        )
        if conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0:
            for order_id, customer, status, placed_on, items in SEED_ORDERS:
                conn.execute(
                    "INSERT INTO orders VALUES (?, ?, ?, ?)", (order_id, customer, status, placed_on)
                )
                conn.executemany(
                    "INSERT INTO order_items VALUES (?, ?, ?, ?, ?)", [(order_id, *item) for item in items]
                )
    return path


def fetch_order(order_id: str, path: Path | None = None) -> dict[str, Any] | None:
    """The order and its items, or None when there is no such order."""
    path = ensure_orders_db(path)
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT order_id, customer, status, placed_on FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()
        if row is None:
            return None
        items = conn.execute(
            "SELECT sku, name, unit_price, quantity FROM order_items WHERE order_id = ? ORDER BY sku",
            (order_id,),
        ).fetchall()
    return {
        "order_id": row[0],
        "customer": row[1],
        "status": row[2],
        "placed_on": row[3],
        "items": [{"sku": s, "name": n, "unit_price": p, "quantity": q} for s, n, p, q in items],
    }
