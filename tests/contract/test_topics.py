"""Topic layout and the tenant namespace rule, table style."""

from __future__ import annotations

import pytest

from contract import topics


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("tenants/acme/models/lstm/requests", topics.RequestTopic("acme", "lstm")),
        ("tenants/a-1_b/models/m2/requests", topics.RequestTopic("a-1_b", "m2")),
        ("tenants/Acme/models/lstm/requests", None),  # upper case is not a tenant id
        ("tenants/+/models/lstm/requests", None),
        ("tenants/acme/models/lstm/responses", None),
        ("tenants/acme/models/lstm/requests/x", None),
        ("tenants//models/lstm/requests", None),
        ("inqueue/lstm", None),
        ("tenants/" + "a" * 64 + "/models/lstm/requests", None),
    ],
)
def test_parse_request_topic(topic: str, expected: topics.RequestTopic | None) -> None:
    assert topics.parse_request_topic(topic) == expected


def test_topics_and_shared_subscription() -> None:
    assert topics.response_topic("acme", "ann") == "tenants/acme/models/ann/responses"
    assert topics.errors_topic("acme") == "tenants/acme/errors"
    assert topics.subscription_filter("a/+", "grp") == "$share/grp/a/+"
    assert topics.subscription_filter("a/+", None) == "a/+"
    assert topics.tenant_of_topic("tenants/acme/whatever/x") == "acme"
    assert topics.tenant_of_topic("tenants/BAD/x") is None


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("tenants/acme/inbox/7", True),
        ("tenants/acme/models/lstm/responses", True),
        ("tenants/beta/inbox", False),  # another tenant's namespace
        ("tenants/acme", False),
        ("tenants/acme/+/x", False),
        ("tenants/acme/#", False),
        ("tenants/acme/models/lstm/requests", False),  # would come back to the workers as a request
        ("tenants/acme/models/Bad Name/requests", False),
        ("elsewhere/acme", False),
    ],
)
def test_answer_topic_allowed(topic: str, allowed: bool) -> None:
    assert topics.answer_topic_allowed("acme", topic) is allowed
