"""Different: the reference inventory with no HTTP at all (no /health, /inventory or
/reservations): a contract gap, and every check that needs only the order and notification
services' HTTP is still judged."""
import threading

from _base import framework, solution


class NoHttp:
    def run(self, **_kwargs):
        threading.Event().wait()  # consume on, serve nothing


framework.create_app = lambda consumer: NoHttp()
framework.run(solution.handle_order)
