"""Recognising values that look like credentials, so they are refused before they reach an image or a log."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping

SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("credentials in a URL", re.compile(r"://[^/\s:@]+:[^/\s@]+@")),
    (
        "a password/token assignment",
        re.compile(r"(?i)\b(password|passwd|token|secret|api[_-]?key)\s*[=:]\s*\S"),
    ),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("an AWS access key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
)


def looks_secret(value: str) -> str | None:
    """What kind of secret `value` seems to hold, or None."""
    for kind, pattern in SECRET_PATTERNS:
        if pattern.search(value):
            return kind
    return None


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value in text by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def auth_secrets(auth: Mapping[str, str] | None) -> list[str]:
    """Every form in which a docker-py `auth_config`'s secret could show up in text (password, tokens,
    and the base64 `user:password` of a Basic header or a config.json `auth`)."""
    if not auth:
        return []
    values = [auth.get(key, "") for key in ("password", "identitytoken", "registrytoken", "auth")]
    if auth.get("username") and auth.get("password"):
        values.append(base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode())
    return [value for value in values if value]
