"""User-facing errors: printed as one line by the CLI (full traceback with HYDRA_FULL_ERROR=1)."""


class SmoothgenError(Exception):
    """An error the user can fix: bad config, missing weights, incompatible options."""


class ConfigError(SmoothgenError):
    """A config value that fails validation. The message starts with the key path."""


class WeightsNotFound(SmoothgenError):
    """A real-model config whose weights are not present locally."""


def missing_weights(name: str, path: str | None, err: BaseException) -> WeightsNotFound:
    """The one-line error of a real model whose weights are not on this machine."""
    import os
    from pathlib import Path

    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return WeightsNotFound(f"model weights for {name!r} not found (looked in model.path={path} and "
                           f"HF_HOME={hf_home}); download them where there is network, e.g. "
                           f"`huggingface-cli download {name}`, then set HF_HOME or model.path "
                           f"({type(err).__name__})")
