"""The items the inventory sells, and how INITIAL_STOCK overrides their stock."""

from __future__ import annotations

# The original lab's catalogue: item -> (name, starting stock, price).
DEFAULT_CATALOGUE: dict[str, tuple[str, int, float]] = {
    "item_1": ("Burger", 100, 10.0),
    "item_2": ("Pizza", 50, 15.0),
    "item_3": ("Salad", 75, 8.0),
    "item_4": ("Fries", 200, 4.5),
    "item_5": ("Soda", 300, 2.0),
}


def catalogue(initial_stock: dict[str, int] | int | None) -> dict[str, tuple[str, int, float]]:
    """The catalogue, with stock overridden for every item (an int) or per item (a dict)."""
    items = dict(DEFAULT_CATALOGUE)
    if initial_stock is None:
        return items
    if isinstance(initial_stock, int):
        return {k: (name, initial_stock, price) for k, (name, _s, price) in items.items()}
    for item_id, stock in initial_stock.items():
        name, _old, price = items.get(item_id, (item_id, 0, 1.0))
        items[item_id] = (name, stock, price)
    return items
