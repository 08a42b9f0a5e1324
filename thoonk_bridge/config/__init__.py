"""The bridge's YAML config: ``load_config(path)`` returns a validated :class:`BridgeConfig` or raises
:class:`ConfigError` listing every problem (see :mod:`thoonk_bridge.config.loader` for the pipeline).

One concern per module: ``errors`` (problems and message limits), ``env`` (environment substitution,
``.env`` files), ``yaml_positions`` (YAML with the position of every node), ``schema`` (the engine's
settings models), ``endpoints`` (``KIND:ADDRESS`` parsing), ``topology`` (checks across routes),
``loader`` (the pipeline), ``json_schema`` (``thoonk-bridge schema``) and ``docs`` (option tables).
This module only re-exports the public names.
"""

from thoonk_bridge.config.endpoints import EndpointError, endpoint_kinds, parse_endpoint
from thoonk_bridge.config.env import load_env_file, substitute_env
from thoonk_bridge.config.errors import ConfigError, ConfigProblem
from thoonk_bridge.config.loader import load_config
from thoonk_bridge.config.schema import (
    REDIS_SCHEMES,
    BridgeConfig,
    EngineSettings,
    HttpSettings,
    RouteOptions,
    RouteSpec,
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
