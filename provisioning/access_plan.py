"""The access plan: which broker users exist and what each may publish, receive and subscribe,
from the server config alone (the one source of who exists).

Who may do what (tenant ``t``, worker service user ``w`` = ``broker.username``, shared group
``g`` = ``broker.shared_group``):

==========  ====================================================================
tenant t    publish ``tenants/t/models/+/requests``; receive ``tenants/t/#``;
            subscribe ``tenants/t/#`` and ``$share/+/tenants/t/#``;
            tutorial tenants also publish their ``in_queue``, receive and subscribe
            their ``out_queue``
worker w    subscribe exactly the filters the worker subscribes (literal:
            ``$share/g/tenants/+/models/+/requests``, or the plain filter when
            ``g`` is null, and the same form of every tutorial ``in_queue``);
            receive ``tenants/+/models/+/requests`` and every ``in_queue``;
            publish ``tenants/+/#`` and every tutorial ``out_queue``; publish,
            receive and subscribe ``service/workers/#`` (status, will); receive and
            subscribe ``$SYS/broker/#`` (the broker's own counters: drops, clients)
==========  ====================================================================

Why these rules, and what Mosquitto cannot enforce (client ids, retained messages):
see :mod:`provisioning.mosquitto_dynsec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from contract import topics
from provisioning.auth_errors import AuthError
from server_app.config import ServerConfig

__all__ = ["Access", "AccessPlan", "Rule", "Subscription", "UserAccess", "access_plan"]

Access = Literal["read", "write", "readwrite"]


@dataclass(frozen=True, slots=True)
class Rule:
    access: Access
    topic: str

    @property
    def reads(self) -> bool:
        return self.access in ("read", "readwrite")

    @property
    def writes(self) -> bool:
        return self.access in ("write", "readwrite")


@dataclass(frozen=True, slots=True)
class Subscription:
    """A filter a user may SUBSCRIBE: ``literal`` only that exact string (``$share/g/...``
    included), else any filter inside it (``tenants/acme/#`` admits ``tenants/acme/+/x``)."""

    topic_filter: str
    literal: bool


@dataclass(frozen=True, slots=True)
class UserAccess:
    name: str
    role: Literal["tenant", "worker"]
    rules: tuple[Rule, ...]
    """``read``: may receive messages whose topic matches; ``write``: may publish there."""
    subscriptions: tuple[Subscription, ...] = ()
    """What it may SUBSCRIBE (Mosquitto's dynamic-security plugin checks it: :mod:`provisioning.mosquitto_dynsec`)."""

    def subscribe_filters(self) -> list[str]:
        """What an amqtt subscribe ACL needs: the read rules (amqtt has no ``$share`` and no
        ``$SYS`` counters worth reading: ``$`` topics are left out)."""
        return _unique(r.topic for r in self.rules if r.reads and not r.topic.startswith("$"))

    def publish_topics(self) -> list[str]:
        return _unique(r.topic for r in self.rules if r.writes)


@dataclass(frozen=True, slots=True)
class AccessPlan:
    users: tuple[UserAccess, ...]
    worker_user: str
    shared_group: str | None

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.users]


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _check_user_name(name: str, what: str) -> None:
    bad = [c for c in name if c in ":+#/" or c.isspace() or not c.isprintable()]
    if not name or bad:
        raise AuthError(
            f"{what} {name!r} cannot be an MQTT user name in a password/ACL file "
            f"(empty, or contains {sorted(set(bad))!r}: ':', '+', '#', '/', white space and control characters "
            "are not allowed)"
        )


def _check_topic(topic: str, where: str) -> None:
    if not topic or any(not c.isprintable() for c in topic):
        raise AuthError(f"{where}: topic {topic!r} is empty or contains control characters")


def access_plan(config: ServerConfig) -> AccessPlan:
    """Users and their rules, from the server config alone."""
    worker = config.broker.username
    if not worker:
        raise AuthError(
            "broker.username is not set: the worker service user is missing. Set broker.username "
            "(e.g. inference-worker) in the server config; the ACL gives that user the worker's rights."
        )
    _check_user_name(worker, "broker.username")
    if worker in config.tenants:
        raise AuthError(
            f"broker.username {worker!r} is also a tenant id: the worker user would get the tenant's rules "
            "and the tenant the worker's. Use a distinct name for the worker service user."
        )
    group = config.broker.shared_group
    users: list[UserAccess] = []
    worker_rules: list[Rule] = []
    worker_subs: list[Subscription] = []

    def worker_reads(topic_filter: str) -> None:
        # Exactly the filter the worker subscribes (server_app.worker.subscriptions), nothing
        # wider: not the plain form when a group is configured, not another group.
        worker_rules.append(Rule("read", topic_filter))
        worker_subs.append(Subscription(topics.subscription_filter(topic_filter, group), literal=True))

    worker_reads(topics.REQUEST_FILTER)
    # Actuals (forecast scoring): a plain subscription, every worker needs every reading.
    worker_rules.append(Rule("read", topics.ACTUALS_FILTER))
    worker_subs.append(Subscription(topics.ACTUALS_FILTER, literal=True))
    # Responses, errors and v5 response topics inside the tenant's namespace (provisioning.mosquitto_dynsec's doc).
    worker_rules.append(Rule("write", "tenants/+/#"))
    for tenant_id, tenant in sorted(config.tenants.items()):
        _check_user_name(tenant_id, "tenant id")
        namespace = f"tenants/{tenant_id}/#"
        rules = [
            Rule("write", topics.request_topic(tenant_id, "+")),
            Rule("write", topics.actuals_topic(tenant_id)),
            Rule("read", namespace),
        ]
        # Its own namespace, also shared between its own consumers ($share/<any>/...): only
        # its own messages can reach such a subscription.
        subs = [Subscription(namespace, literal=False), Subscription(f"$share/+/{namespace}", literal=False)]
        if tenant.in_queue:
            _check_topic(tenant.in_queue, f"tenants.{tenant_id}.in_queue")
            rules.append(Rule("write", tenant.in_queue))
            worker_reads(tenant.in_queue)
        if tenant.out_queue:
            _check_topic(tenant.out_queue, f"tenants.{tenant_id}.out_queue")
            rules.append(Rule("read", tenant.out_queue))
            subs.append(Subscription(tenant.out_queue, literal=False))
            worker_rules.append(Rule("write", tenant.out_queue))
        users.append(UserAccess(tenant_id, "tenant", tuple(rules), tuple(subs)))
    worker_rules.append(Rule("readwrite", "service/workers/#"))
    worker_subs.append(Subscription("service/workers/#", literal=False))
    # Forecast quality and drift alarms for operators (retained; the tenant's own copy is under tenants/<t>/).
    worker_rules.append(Rule("write", "service/quality/#"))
    # The broker's own counters ($SYS/broker/publish/messages/dropped, clients, heap): the one
    # place where loss inside the broker shows.
    worker_rules.append(Rule("read", "$SYS/broker/#"))
    worker_subs.append(Subscription("$SYS/broker/#", literal=False))
    users.append(UserAccess(worker, "worker", tuple(dict.fromkeys(worker_rules)), tuple(dict.fromkeys(worker_subs))))
    return AccessPlan(tuple(users), worker, group)
