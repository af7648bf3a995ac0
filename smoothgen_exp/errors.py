"""User-facing errors: printed as one line by the CLI (full traceback with HYDRA_FULL_ERROR=1)."""


class SmoothgenError(Exception):
    """An error the user can fix: bad config, missing weights, incompatible options."""


class ConfigError(SmoothgenError):
    """A config value that fails validation. The message starts with the key path."""


class WeightsNotFound(SmoothgenError):
    """A real-model config whose weights are not present locally."""
