"""Topic layout of the service, and the rule "is this topic inside tenant T's namespace"."""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)

REQUEST_FILTER = "tenants/+/models/+/requests"


def request_topic(tenant: str, model: str) -> str:
    return f"tenants/{tenant}/models/{model}/requests"


def response_topic(tenant: str, model: str) -> str:
    return f"tenants/{tenant}/models/{model}/responses"


def errors_topic(tenant: str) -> str:
    return f"tenants/{tenant}/errors"


def status_topic(worker_id: str) -> str:
    return f"service/workers/{worker_id}/status"


def subscription_filter(topic_filter: str, shared_group: str | None) -> str:
    """`$share/<group>/<filter>` spreads messages over replicas; plain where unsupported."""
    return f"$share/{shared_group}/{topic_filter}" if shared_group else topic_filter


@dataclass(frozen=True, slots=True)
class RequestTopic:
    tenant: str
    model: str


def parse_request_topic(topic: str) -> RequestTopic | None:
    """`tenants/{tenant}/models/{model}/requests` -> RequestTopic; None for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "tenants" or parts[2] != "models" or parts[4] != "requests":
        return None
    tenant, model = parts[1], parts[3]
    if not NAME_RE.match(tenant) or not NAME_RE.match(model):
        return None
    return RequestTopic(tenant, model)


def tenant_of_topic(topic: str) -> str | None:
    """The tenant a `tenants/{tenant}/...` topic belongs to, if its name is valid."""
    parts = topic.split("/", 2)
    if len(parts) >= 2 and parts[0] == "tenants" and NAME_RE.match(parts[1]):
        return parts[1]
    return None


def is_request_topic(topic: str) -> bool:
    parts = topic.split("/")
    return len(parts) == 5 and parts[0] == "tenants" and parts[2] == "models" and parts[4] == "requests"


def answer_topic_allowed(tenant: str, topic: str) -> bool:
    """May an answer for `tenant` go to `topic` (an MQTT 5 ResponseTopic the client asked for)?

    Only a plain topic inside the tenant's own namespace, and never a request topic (the
    answer would come back to the workers as a new request)."""
    return (
        topic.startswith(f"tenants/{tenant}/")
        and "+" not in topic
        and "#" not in topic
        and "\x00" not in topic
        and not is_request_topic(topic)
    )


def quality_topic(tenant: str, model: str) -> str:
    """Retained: the tenant's forecast quality and drift alarm for one model."""
    return f"tenants/{tenant}/models/{model}/quality"


def service_quality_topic(tenant: str, model: str) -> str:
    """Retained: the same, for operators (alarms of every tenant under one filter)."""
    return f"service/quality/{tenant}/{model}"


ACTUALS_FILTER = "tenants/+/actuals"


def actuals_topic(tenant: str) -> str:
    """A tenant's observed readings, for scoring forecasts where windows do not overlap."""
    return f"tenants/{tenant}/actuals"


def tenant_of_actuals(topic: str) -> str | None:
    if not topic.endswith("/actuals"):  # per message on the serving path: the cheap test first
        return None
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "tenants" and parts[2] == "actuals" and NAME_RE.match(parts[1]):
        return parts[1]
    return None
