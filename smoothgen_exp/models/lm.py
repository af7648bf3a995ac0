"""Autoregressive language models: noise on the prompt's input embeddings (SmoothGen 2.5.2).

    model=gpt2 | llama2_7b   real weights through transformers `from_pretrained` (local files only:
                             HF_HOME's cache or `model.path`), with `torch_dtype` and `device_map`
    model=tiny_gpt2 | tiny_llama   the same classes built from small configs in code, random weights
                             (seeded), with a word-level tokenizer built in memory: CI exercises the
                             real forward, cache and generate code.

Generator protocol: `encode(prompts) -> [B, L, d]` prompt input embeddings (the noised space);
`generate(z, generator) -> list[str]`: plain greedy (or sampled) continuation of each noisy copy.
`token_average(z, ...)` is the smoothed decoder: at every step the next-token distributions of all
noisy copies are averaged and one token is chosen for all of them, with one KV cache for the batch
(the prompt is never recomputed). `step_probs(z, tokens)` scores a fixed continuation by teacher
forcing (used by certified decoding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from smoothgen_exp.config import configured
from smoothgen_exp.models.hub import from_local, resolve_dtype

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


@configured
class CausalLM:
    condition_kind = "text"
    differentiable = False    # no gradients through sampling: black-box attacks only
    output_kind = "text"

    def __init__(self, name: str, path: str | None, tiny: dict | None,
                 max_new_tokens: int, decoding: str, temperature: float,
                 dtype: str, device_map: str | None, *, cache_dir: str = "outputs/cache",
                 device: str | torch.device = "cpu", weights_key: str = "model.path"):
        self.name, self.max_new_tokens, self.decoding = name, int(max_new_tokens), decoding
        self.temperature = float(temperature)
        self.device = torch.device(device)
        if tiny:
            self.tokenizer = tiny_tokenizer()
            self.model = tiny_model(tiny["arch"], len(self.tokenizer), tiny["width"], tiny["layers"],
                                    tiny["heads"], tiny.get("seed", 0))
        else:
            self.tokenizer, self.model = load_pretrained(name, path, resolve_dtype(dtype, device, device_map),
                                                         device_map, weights_key)
        if device_map is None:
            self.model.to(self.device)
        self.model.eval().requires_grad_(False)
        self.embed = self.model.get_input_embeddings()
        self.eos = self.tokenizer.eos_token_id

    # ------------------------------------------------------------------ protocol
    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompt input embeddings [B, L, d] (one prompt per item; padded on the left for batches)."""
        self.tokenizer.padding_side = "left"
        ids = self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        return self.embed(ids["input_ids"].to(self.embed.weight.device)).float()

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, generator: torch.Generator) -> list[str]:
        """Each noisy copy continued on its own (the base generator G(x + eta))."""
        out = self.model.generate(inputs_embeds=z.to(self.embed.weight.dtype),
                                  attention_mask=torch.ones(z.shape[:2], dtype=torch.long, device=z.device),
                                  max_new_tokens=self.max_new_tokens, do_sample=self.decoding == "sample",
                                  temperature=self.temperature if self.decoding == "sample" else None,
                                  top_k=None, top_p=None, pad_token_id=self.tokenizer.pad_token_id,
                                  eos_token_id=self.eos)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    # ------------------------------------------------------------------ smoothed decoding
    @torch.inference_mode()
    def token_average(self, z: torch.Tensor, generator: torch.Generator | None = None, steps: int | None = None,
                      use_cache: bool = True, greedy: bool = True) -> tuple[list[int], torch.Tensor]:
        """Decode one sequence from n noisy prompt copies z [n, L, d] by averaging next-token
        distributions at every step. Returns (tokens, averaged distributions [T, V]).

        With the cache, the prompt is processed once and each step feeds one token per copy; without it,
        every step recomputes the whole sequence (the reference the cached path must equal).
        """
        steps = steps or self.max_new_tokens
        dtype = self.embed.weight.dtype
        n = z.shape[0]
        tokens, dists = [], []
        embeds = z.to(dtype)
        past = None
        inputs = embeds
        for _ in range(steps):
            out = self.model(inputs_embeds=inputs, past_key_values=past, use_cache=use_cache)
            probs = F.softmax(out.logits[:, -1].float(), dim=-1).mean(0)
            token = int(probs.argmax()) if greedy else int(torch.multinomial(probs, 1, generator=generator))
            tokens.append(token)
            dists.append(probs)
            if token == self.eos:
                break
            step_embed = self.embed(torch.full((n, 1), token, device=z.device))
            if use_cache:
                past, inputs = out.past_key_values, step_embed
            else:
                embeds = torch.cat([embeds, step_embed], dim=1)
                inputs = embeds
        return tokens, torch.stack(dists)

    @torch.inference_mode()
    def step_probs(self, z: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
        """Teacher forcing: P(tokens[t] | noisy prompt, tokens[:t]) for every copy and step, [n, T]."""
        n = z.shape[0]
        tok = torch.tensor(list(tokens), device=z.device)
        cont = self.embed(tok[None].expand(n, -1))
        seq = torch.cat([z.to(cont.dtype), cont[:, :-1]], dim=1)
        logits = self.model(inputs_embeds=seq).logits[:, z.shape[1] - 1:].float()
        return F.softmax(logits, dim=-1).gather(-1, tok[None, :, None].expand(n, -1, 1))[..., 0]
