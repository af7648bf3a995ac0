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

from smoothgen_exp.backbones.hub import resolve_dtype
from smoothgen_exp.backbones.lm import load_causal_lm
from smoothgen_exp.config import configured


@configured
class CausalLM:
    condition_kind = "text"
    differentiable = False    # no gradients through sampling: black-box attacks only
    output_kind = "text"

    def __init__(self, name: str, path: str | None, tiny: dict | None,
                 max_new_tokens: int, decoding: str, temperature: float,
                 dtype: str, device_map: str | None, *, cache_dir: str = "outputs/cache",
                 device: str | torch.device = "cpu"):
        self.name, self.max_new_tokens, self.decoding = name, int(max_new_tokens), decoding
        self.temperature = float(temperature)
        self.device = torch.device(device)
        self.tokenizer, self.model = load_causal_lm(name, path, tiny, resolve_dtype(dtype, device, device_map),
                                                    device_map)
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
