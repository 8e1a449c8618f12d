"""skops types a pipeline declares it trusts, by registered model name.

A pipeline's ``trusted_types`` are declared when its code location loads
(``pipeline.factory.build_pipeline``); loading and logging add them to the library's
own list. Kept apart from ``loading`` so that declaring imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable

_DECLARED_TRUST: dict[str, tuple[str, ...]] = {}


def declare_trusted_types(model_name: str, types: Iterable[str]) -> None:
    """Trust ``types`` (skops type names) when loading ``model_name``'s versions.

    Called with a pipeline's declared ``trusted_types`` when the code location loads,
    so the list lives in the pipeline's config (reviewed with it), never in an
    artifact. Declaring again replaces the list (it can shrink, never widen silently).
    """
    _DECLARED_TRUST[model_name] = tuple(sorted(set(types)))


def declared_trusted_types(model_name: str | None) -> tuple[str, ...]:
    return _DECLARED_TRUST.get(model_name or "", ())


def model_name_of(model_uri: str) -> str | None:
    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri[len("models:/") :].strip("/")
    return rest.split("@", 1)[0].split("/", 1)[0]
