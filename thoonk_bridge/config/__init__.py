"""The bridge's YAML config (see :mod:`thoonk_bridge.config.loader`); re-exports its public names."""

from thoonk_bridge.config.loader import (
    REDIS_SCHEMES,
    BridgeConfig,
    ConfigError,
    ConfigProblem,
    EndpointError,
    EngineSettings,
    HttpSettings,
    RouteOptions,
    RouteSpec,
    endpoint_kinds,
    load_config,
    load_env_file,
    parse_endpoint,
    substitute_env,
)

__all__ = [
    "REDIS_SCHEMES",
    "BridgeConfig",
    "ConfigError",
    "ConfigProblem",
    "EndpointError",
    "EngineSettings",
    "HttpSettings",
    "RouteOptions",
    "RouteSpec",
    "endpoint_kinds",
    "load_config",
    "load_env_file",
    "parse_endpoint",
    "substitute_env",
]
