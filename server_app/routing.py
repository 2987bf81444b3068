"""Where a message's answer goes, and what the worker subscribes: from topics and config alone."""

from __future__ import annotations

from dataclasses import dataclass

from contract import topics
from contract.codecs import OIP, TUTORIAL, Codec
from server_app.config import ServingPolicy
from server_app.mqtt import InboundMessage
from server_app.state import ServingState


@dataclass(slots=True)
class Reply:
    """Where the answer to one inbound message goes, and in which format."""

    tenant: str
    model: str | None
    topic: str
    codec: Codec


def resolve_reply(state: ServingState, message: InboundMessage) -> Reply | None:
    """Tenant, model and answer topic of a message, from its topic alone (never the payload)."""
    parsed = topics.parse_request_topic(message.topic)
    if parsed is not None:
        wanted = message.response_topic
        # A v5 response topic is honoured only inside the tenant's own namespace.
        if wanted and topics.answer_topic_allowed(parsed.tenant, wanted):
            topic = wanted
        else:
            topic = topics.response_topic(parsed.tenant, parsed.model)
        return Reply(parsed.tenant, parsed.model, topic, OIP)
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
