"""Causal language models from local files or as tiny random twins (transformers' own classes)."""

from __future__ import annotations

import torch

from smoothgen_exp.backbones.hub import from_local

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


def load_causal_lm(name: str, path: str | None, tiny: dict | None, dtype: str, device_map: str | None,
                   key: str = "model.path"):
    """(tokenizer, model): the tiny twin built in code when `tiny` is given, else local weights."""
    if tiny:
        tok = tiny_tokenizer()
        return tok, tiny_model(tiny["arch"], len(tok), tiny["width"], tiny["layers"], tiny["heads"],
                               tiny.get("seed", 0))
    return load_pretrained(name, path, dtype, device_map, key)
