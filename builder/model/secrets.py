"""Recognising values that look like credentials, so they are refused before they reach an image or a log."""

from __future__ import annotations

import re

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


def redact(text: str, secrets: list[str]) -> str:
    """Replace every known secret value in text by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
