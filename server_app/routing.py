"""Where a message's answer goes, and what the worker subscribes: from topics and config alone."""

from __future__ import annotations

from dataclasses import dataclass

from contract import topics
from contract.codecs import OIP, TUTORIAL, Codec
from server_app.config import ServingPolicy
from server_app.mqtt import InboundMessage
from server_app.state import ServingState

REPLY_CACHE_SIZE = 1024  # (topic, response topic) pairs whose Reply is remembered; cleared when full
CACHED_TOPICS_MAX = 256  # characters of both topics together: longer pairs are not remembered (bounded memory)


@dataclass(frozen=True, slots=True)
class Reply:
    """Where the answer to one inbound message goes, and in which format (immutable: shared)."""

    tenant: str
    model: str | None
    topic: str
    codec: Codec


# Per message on the serving path: the parse and the response topic's checks once per pair of topics.
_replies: dict[tuple[str, str | None], Reply] = {}


def resolve_reply(state: ServingState, message: InboundMessage) -> Reply | None:
    """Tenant, model and answer topic of a message, from its topic alone (never the payload)."""
    cached = _replies.get((message.topic, message.response_topic))
    if cached is not None:
        return cached
    parsed = topics.parse_request_topic(message.topic)
    if parsed is not None:
        wanted = message.response_topic
        # A v5 response topic is honoured only inside the tenant's own namespace.
        if wanted and topics.answer_topic_allowed(parsed.tenant, wanted):
            topic = wanted
        else:
            topic = topics.response_topic(parsed.tenant, parsed.model)
        # Only the OIP request topics: a function of the two topics alone (the rest depends on the config).
        reply = Reply(parsed.tenant, parsed.model, topic, OIP)
        if len(message.topic) + len(wanted or "") <= CACHED_TOPICS_MAX:
            if len(_replies) >= REPLY_CACHE_SIZE:
                _replies.clear()
            _replies[(message.topic, wanted)] = reply
        return reply
    for name, tenant in state.policy.tenants.items():
        if tenant.format == "tutorial" and tenant.in_queue == message.topic and tenant.out_queue is not None:
            return Reply(name, tenant.models[0], tenant.out_queue, TUTORIAL)
    owner = topics.tenant_of_topic(message.topic)
    if owner is not None:
        return Reply(owner, None, topics.errors_topic(owner), OIP)
    return None


def subscriptions(policy: ServingPolicy, group: str | None) -> list[str]:
    # Actuals on a plain subscription: every worker may hold forecasts they resolve.
    filters = [topics.subscription_filter(topics.REQUEST_FILTER, group), topics.ACTUALS_FILTER]
    filters += sorted(
        topics.subscription_filter(t.in_queue, group)
        for t in policy.tenants.values()
        if t.format == "tutorial" and t.in_queue
    )
    return filters
