"""Choose the runtime: compose when the project's containers exist, embedded otherwise."""

from __future__ import annotations

from pipeline.config import Settings


def select_runtime(settings: Settings):
    from pipeline.runtime.embedded import EmbeddedRuntime

    if settings.runtime == "embedded":
        return EmbeddedRuntime(settings)
    from pipeline.runtime.compose import ComposeRuntime, detect_runtime
    from pipeline.config.security import check_default_credentials

    if settings.runtime == "compose" or detect_runtime(settings) == "compose":
        check_default_credentials(settings)  # never start compose with a known default credential
        return ComposeRuntime.from_settings(settings)
    return EmbeddedRuntime(settings)


def connector_for(settings: Settings):
    """ConnectorControl for the active runtime: Kafka Connect's REST API, or the embedded engine."""
    runtime = select_runtime(settings)
    if runtime.name == "compose":
        from pipeline.runtime.connect_client import KafkaConnectClient

        return KafkaConnectClient(settings.kafka_connect_url, settings.connector_name)
    return runtime.connector()
