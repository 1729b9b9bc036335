"""Who is to blame when a lab does not come up: the service whose log shows the error."""

from __future__ import annotations

from harness.lab.impl import Impl
from harness.lab.service import ServiceFailed, ServiceProcess

# Broker replies that close a channel or connection for a reason the implementation caused.
BROKER_ERRORS = ("PRECONDITION_FAILED", "ACCESS_REFUSED", "NOT_ALLOWED", "RESOURCE_LOCKED",
                 "COMMAND_INVALID")


def _errors(svc: ServiceProcess) -> list[str]:
    return [ln.strip()[:300] for ln in svc.log_tail(200).splitlines()
            if any(m in ln for m in BROKER_ERRORS)]


def broker_error(processes: list[ServiceProcess]) -> str | None:
    """A broker error some service's log shows (a reason to stop waiting for health)."""
    for svc in processes:
        found = _errors(svc)
        if found:
            return f"the {svc.name} service's log shows a broker error ({found[-1]})"
    return None


def blame(exc: ServiceFailed, processes: list[ServiceProcess], impl: Impl) -> ServiceFailed:
    """The start-up failure, blamed on the service whose log shows a broker error (a
    student's queue arguments can get the lab's own service's channel closed)."""
    shown = []
    for svc in processes:
        lines = _errors(svc)
        if lines:
            shown.append((svc, lines[-1]))
    # The implementation's own service first: the lab's service only met the error.
    shown.sort(key=lambda found: impl.services[found[0].name].lab)
    if not shown:
        return ServiceFailed(exc.service, exc.what, exc.log_tail, at_start=True,
                             port_opened=exc.port_opened)
    svc, line = shown[0]
    own = [n for n, spec in impl.services.items() if not spec.lab]
    if impl.services[svc.name].lab and len(own) == 1:
        # The lab's service only met the error (say its channel was closed because the
        # implementation's service declared a queue with other arguments): the
        # implementation's one service of its own is the one to look at.
        return ServiceFailed(own[0], f"made the broker refuse the lab's {svc.name} "
                             f"service ({line}): declare every queue and exchange with "
                             "exactly the contract's arguments; then the "
                             f"{exc.service} service {exc.what}",
                             next(p for p in processes if p.name == own[0]).log_tail(),
                             at_start=True, port_opened=exc.port_opened)
    what = (f"shows a broker error in its log ({line}), and then the {exc.service} "
            f"service {exc.what}" if svc.name != exc.service else
            f"{exc.what}; its log shows a broker error ({line})")
    return ServiceFailed(svc.name, what, svc.log_tail(), at_start=True,
                         port_opened=exc.port_opened)

