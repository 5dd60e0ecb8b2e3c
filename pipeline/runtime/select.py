"""Choose the runtime: compose when the project's containers exist, embedded otherwise."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.config.security import check_default_credentials
from pipeline.runtime.compose import ComposeRuntime, detect_runtime
from pipeline.runtime.embedded import EmbeddedRuntime
from pipeline.runtime.model import ConnectorControl, Runtime


def select_runtime(settings: Settings) -> Runtime:
    if settings.runtime == "embedded":
        return EmbeddedRuntime(settings)
    if settings.runtime == "compose" or detect_runtime(settings) == "compose":
        check_default_credentials(settings)  # never start compose with a known default credential
        return ComposeRuntime.from_settings(settings)
    return EmbeddedRuntime(settings)


def connector_for(settings: Settings) -> ConnectorControl:
    """ConnectorControl for the active runtime: Kafka Connect's REST API, or the embedded engine."""
    return select_runtime(settings).connector()
