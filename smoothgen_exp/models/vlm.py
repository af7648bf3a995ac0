"""Vision-language models (LLaVA-1.5, LLaVA-1.6): noise on the image pixels, the text prompt fixed.

The noised space is the image in [0, 1] at the model's input resolution, before the processor's
normalisation: the setting of the RS-for-VLM paper (its sigma = 0.5 is on that scale). Each item gives
the prompt (fixed) and an image; `encode_items` returns the clean images [B, 3, H, W], and `for_item(item)`
is the model with that item's prompt bound (`ItemPrompt`, what the item's context holds), whose
`generate(z, generator)` answers the item's prompt for every noisy image in z; items pack into one
generator call only with the same prompt (`pack_key`). The processor turns [0, 1] images into the
model's pixel values (rescaling off) and expands the image token.

    model=llava | llava16     real weights (local files only: HF_HOME or model.path)
    model=tiny_llava          transformers' LlavaForConditionalGeneration from a small config (CLIP
                              vision tower + LLaMA), random weights, in-memory tokenizer and the real
                              LlavaProcessor: CI runs the same processor, forward and generate code.
"""

from __future__ import annotations

import numpy as np
import torch

from smoothgen_exp.backbones.hub import from_local, resolve_dtype
from smoothgen_exp.config import configured

IMAGE_TOKEN = "<image>"


def tiny_llava(tiny: dict):
    """(processor, model) of LLaVA-1.5's classes at toy size; `tiny["next"]` builds LLaVA-1.6's instead
    (LlavaNext: any-resolution tiling over the pinpoints size x {1, 2})."""
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig

    from smoothgen_exp.backbones.lm import tiny_tokenizer

    family = "LlavaNext" if tiny.get("next") else "Llava"
    config_cls, model_cls, processor_cls = (getattr(transformers, family + suffix)
                                            for suffix in ("Config", "ForConditionalGeneration", "Processor"))
    # the PIL backend by name where transformers has one: what it falls back to without torchvision (never
    # installed here), without its notice on every run
    base = "LlavaNextImageProcessor" if tiny.get("next") else "CLIPImageProcessor"
    image_processor_cls = getattr(transformers, base + "Pil", None) or getattr(transformers, base)

    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    size, patch, width = tiny["image_size"], tiny["patch_size"], tiny["width"]
    vision = CLIPVisionConfig(image_size=size, patch_size=patch, hidden_size=width, intermediate_size=2 * width,
                              num_hidden_layers=tiny["layers"], num_attention_heads=tiny["heads"])
    text = LlamaConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width,
                       num_hidden_layers=tiny["layers"], num_attention_heads=tiny["heads"],
                       num_key_value_heads=tiny["heads"], bos_token_id=2, eos_token_id=3, pad_token_id=0)
    tiling = {"image_grid_pinpoints": [[size, size], [size, 2 * size], [2 * size, size]]} if tiny.get("next") else {}
    torch.manual_seed(tiny.get("seed", 0))
    model = model_cls(config_cls(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default", vision_feature_layer=-2, **tiling))
    processor = processor_cls(
        image_processor=image_processor_cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                            **tiling),
        tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1)
    return processor, model


def load_vlm(name: str, path: str | None, dtype: str, device_map: str | None):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return from_local(name, path, AutoProcessor, AutoModelForImageTextToText, dtype, device_map=device_map)


def load_image(path: str | None, size: int) -> torch.Tensor:
    """An RGB image [3, size, size] in [0, 1]; `None` gives a mid-gray image (for image-free prompts)."""
    if not path:
        return torch.full((3, size, size), 0.5)
    from PIL import Image

    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


@configured
class VisionLanguageModel:
    condition_kind = "image"
    reads = "prompts"            # not its noised images: prompts naming them (models.protocol.model_reads)
    differentiable = False    # no gradients through sampling: black-box attacks only
    output_kind = "text"          # no output_range / output_shape: its outputs are answers, not images

    def __init__(self, name: str, path: str | None, tiny: dict | None,
                 prompt_template: str, image_size: int,
                 max_new_tokens: int, dtype: str, device_map: str | None, *,
                 cache_dir: str = "outputs/cache", device: str | torch.device = "cpu"):
        self.name, self.template, self.max_new_tokens = name, prompt_template, int(max_new_tokens)
        self.device = torch.device(device)
        if tiny:
            self.processor, self.model = tiny_llava(tiny)
            image_size = tiny["image_size"]
        else:
            self.processor, self.model = load_vlm(name, path, resolve_dtype(dtype, device, device_map), device_map)
        if device_map is None:
            self.model.to(self.device)
        self.model.eval().requires_grad_(False)
        self.image_size = int(image_size)
        self.tokenizer = self.processor.tokenizer
        self.prompt = ""

    def encode_items(self, items, images: dict | None = None) -> torch.Tensor:
        """The clean images [B, 3, H, W] in [0, 1]; the last item's prompt becomes the model's own fixed text
        (an item's context holds `for_item(item)`, with the item's own prompt)."""
        self.prompt = self.template.format(prompt=items[-1].condition)
        images = images or {}
        return torch.stack([load_image(images.get(it.item_id), self.image_size) for it in items]).to(self.device)

    def encode(self, prompts) -> torch.Tensor:
        from types import SimpleNamespace

        return self.encode_items([SimpleNamespace(item_id=str(i), condition=p) for i, p in enumerate(prompts)])

    def for_item(self, item) -> ItemPrompt:
        return ItemPrompt(self, self.template.format(prompt=item.condition))

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, generator: torch.Generator, prompt: str | None = None) -> list[str]:
        """Answer `prompt` (the model's fixed prompt by default) for each (noisy) image; pixels are clipped
        to [0, 1] first."""
        images = list(z.clamp(0, 1).float().cpu())
        batch = self.processor(images=images, text=[prompt or self.prompt] * len(images), return_tensors="pt",
                               do_rescale=False).to(self.model.device)
        batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


class ItemPrompt:
    """A VisionLanguageModel with one item's prompt bound: what the item's samplers call. Every other
    attribute is the model's; `pack_key` keeps items with other prompts out of its generator calls."""

    def __init__(self, vlm: VisionLanguageModel, prompt: str):
        self.vlm, self.prompt, self.pack_key = vlm, prompt, prompt

    def __getattr__(self, name: str):
        return getattr(self.vlm, name)

    def generate(self, z: torch.Tensor, generator: torch.Generator) -> list[str]:
        return self.vlm.generate(z, generator, prompt=self.prompt)
