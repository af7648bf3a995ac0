"""smoothgen_exp: certified robustness of generative models by randomized smoothing.

`from smoothgen_exp import Smooth` gives the classifier certifier (Cohen et al. 2019). The import is
lazy, so `python -m smoothgen_exp` can validate its config before torch is loaded.
"""

__version__ = "0.1.0"
__all__ = ["Smooth", "Certificate", "Prediction", "__version__"]


def __getattr__(name: str):
    if name in ("Smooth", "Certificate", "Prediction"):
        from smoothgen_exp import core

        return getattr(core, name)
    raise AttributeError(f"module 'smoothgen_exp' has no attribute {name!r}")
