"""Broken: the lab's order service with its request validation removed (quantity -5: 201)."""
from lab_services import events, order


def unchecked(body):
    items = tuple(events.Item(i.get("item_id"), i.get("quantity"), i.get("price"))
                  for i in body.get("items") or [])
    return body.get("user_id"), items


order.parse_order_request = unchecked
order.main()
