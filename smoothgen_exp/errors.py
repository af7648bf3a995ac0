"""User-facing errors: printed as one line by the CLI (full traceback with HYDRA_FULL_ERROR=1)."""


class SmoothgenError(Exception):
    """An error the user can fix: bad config, missing weights, incompatible options."""


class ConfigError(SmoothgenError):
    """A config value that fails validation. The message starts with the key path."""


class WeightsNotFound(SmoothgenError):
    """A real-model config whose weights are not present locally."""


def cause_of(err: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type `kind` in err's cause chain (Hydra wraps ours in its own), or None."""
    while err is not None and not isinstance(err, kind):
        err = err.__cause__ or err.__context__
    return err


def missing_weights(name: str, path: str | None, err: BaseException, key: str = "model.path") -> WeightsNotFound:
    """The one-line error of a real model whose weights are not on this machine; `key` is the config key
    of its local path (model.path, oracle.path, metrics.path)."""
    import os
    from pathlib import Path

    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return WeightsNotFound(f"model weights for {name!r} not found (looked in {key}={path} and "
                           f"HF_HOME={hf_home}); download them where there is network, e.g. "
                           f"`hf download {name}` (huggingface_hub's CLI), then set HF_HOME or {key} "
                           f"({type(err).__name__})")
