"""The study file's vocabulary and its strict base model, shared by every section.

Names, patterns and choices the spec model and its CRD (``hpo.kube.crd``) carry alike,
the error a study file raises (``SpecError``), and the helpers that put a rule in both
the Python validator and the CRD's schema.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

API_GROUP = "hpo-operator.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "HPOStudy"

ACTIVATIONS = ("relu", "tanh", "elu", "selu", "gelu", "swish", "sigmoid", "leaky_relu")
OPTIMIZERS = ("adam", "adamw", "nadam", "rmsprop", "sgd", "adamax")
ESTIMATORS = ("GP", "RF", "ET")
SCHEDULES = ("constant", "cosine")
METHODS = ("localSearch", "gaussianProcess")

# Patterns are RE2-compatible (no look-around): the CRD carries the same ones, and
# both pydantic's Rust engine and the API server's Go engine evaluate them alike.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Dot-separated labels of lower-case letters, digits and '-'; 3-63 characters.
BUCKET = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
#: Dots as ``[.]``, not backslash-escaped: the pattern also sits in a CEL string literal.
IPV4 = r"^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: ``host[:port]``: a host name, an IPv4 address or a bracketed IPv6 address; port 1-65535.
ENDPOINT = (
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)(:" + _PORT + r")?$"
)
#: A label value: at most 63 characters, alphanumeric at both ends, '-', '_', '.' inside.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
#: Keys of a Secret's ``data``.
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
#: A key prefix may not start with '/' nor hold a '..' segment.
BAD_PREFIX = r"^/|(^|/)\.\.(/|$)"
#: The key prefix the schema admits: one segment (not '.' or '..') of URL- and
#: NFKC-stable characters, trailing '/' allowed; what ``Storage._prefix`` admits too.
PREFIX = (
    r"^([A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.\.[A-Za-z0-9._~-]+)/*$"
)

DNS_LABEL_RE = re.compile(DNS_LABEL)

#: What a pattern means, for messages: pydantic would print the regular expression.
PATTERN_HELP = {
    DNS_SUBDOMAIN: "is not a valid Kubernetes object name (lower-case letters, digits, '-' "
    "and '.', starting and ending with a letter or digit)",
    BUCKET: "is not a valid bucket name (3-63 lower-case letters, digits, '.' and '-', "
    "starting and ending with a letter or digit, no '..', '.-' or '-.')",
    ENDPOINT: "must be host[:port] without a scheme or path, port 1-65535 "
    "(set tls: false for http)",
    SECRET_KEY: "is not a valid Secret key (letters, digits, '-', '_' and '.')",
    LABEL_VALUE: "is not a valid label value (letters, digits, '-', '_' and '.', "
    "starting and ending with a letter or digit)",
}


class SpecError(ValueError):
    """A study file is invalid; ``problems`` lists one message per wrong field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class SpecModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
        # No coercion ("10" -> 10, "yes" -> True, 2.0 -> 2): the CRD's schema types
        # admit none of these either, so `hpo run` and the API server agree.
        strict=True,
        allow_inf_nan=False,
    )


def cel_rule(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """A CRD ``x-kubernetes-validations`` entry: the API server's copy of a
    cross-field rule that a JSON schema cannot state (the Python validator is the
    other copy, with the same message)."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def set_of(item: dict[str, Any], min_items: int = 1) -> dict[str, Any]:
    """Schema extras of a list of unique scalars (``uniqueItems`` is not allowed in CRDs)."""
    return {"items": item, "minItems": min_items, "x-kubernetes-list-type": "set"}


ORDERED: JsonDict = {
    "x-kubernetes-validations": [cel_rule("self.min <= self.max", "min must be <= max")]
}
Name = Annotated[str, Field(min_length=1)]


def unique_nonempty(values: list[Any], what: str) -> list[Any]:
    """``values`` if there are some and none twice, else a message naming the duplicates."""
    if not values:
        raise ValueError(f"at least one {what} is required")
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {what}: {', '.join(dupes)}")
    return values
