"""``http.console``: the operator's console page (see thoonk_bridge.console and docs/console.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["ConsoleSettings"]


class ConsoleSettings(BaseModel):
    """``http.console``: the console page and its JSON, on the daemon's one HTTP server.

    - ``enabled``: serve it (default false: nothing is mounted).
    - ``path``: where (default ``/console``; its JSON below it).
    - ``token``: what a request must carry in the ``X-Console-Token`` header (use ``${ENV}``); at
      least 16 characters. Replay and discard always need it.
    - ``loopback_without_token``: let requests from loopback read the console without the token
      (local use). Behind a reverse proxy on the same host every request comes from loopback: the
      waiver is not given to a request carrying ``Forwarded`` or ``X-Forwarded-For``, but leave it
      off there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="Serve the console page and its JSON; off, nothing is mounted.")
    path: str = Field(
        default="/console", pattern=r"^(/[A-Za-z0-9._~-]+)+$",
        description="URL path of the page; its JSON is below it.",
    )
    token: SecretStr | None = Field(
        default=None, min_length=16,
        description="What a request must carry in the X-Console-Token header (at least 16 characters; write it as "
        "${ENV}); replay and discard always need it.",
    )
    loopback_without_token: bool = Field(
        default=False,
        description="Let requests from loopback read the console without the token (local use only; leave it off "
        "behind a reverse proxy on the same host).",
    )

    @model_validator(mode="after")
    def _reachable(self) -> ConsoleSettings:
        if self.enabled and self.token is None and not self.loopback_without_token:
            raise ValueError("an enabled console needs a token (or loopback_without_token: true for local use only)")
        return self
