"""Pictures of a run: a preview grid of baseline and smoothed generations."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def preview_grid(previews: list, path: Path) -> None:
    """One column per item: the prompt, the baseline generation and the smoothed output.

    previews: (item, baseline_class, smoothed_row, baseline_image, smoothed_image or None). The smoothed
    output's class (`smoothed_prediction`) is shown with what its class certificate says (`certificate_note`):
    the aggregator's class is not certified where the certifier abstains.
    """
    fig, axes = plt.subplots(2, len(previews), figsize=(max(1.6 * len(previews), 3.2), 4.4), squeeze=False,
                             layout="constrained")
    for j, (item, b_cls, s_row, b_img, s_img) in enumerate(previews):
        axes[0, j].set_title(item.condition, fontsize=6, wrap=True)
        s_cls, note = s_row.get("smoothed_prediction"), certificate_note(s_row)
        for i, (img, cls, name) in enumerate(((b_img, b_cls, "baseline"), (s_img, s_cls, "smoothed"))):
            ax = axes[i, j]
            if img is not None:
                _show(ax, img)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            shown = "abstain" if cls == -1 else cls
            extra = f"\n{note}" if name == "smoothed" and note else ""
            if item.label < 0:                             # no label (GAN latent seeds): no class to judge
                ax.set_xlabel(name + extra, fontsize=7)
                continue
            ax.set_xlabel(f"{name}: {shown}{extra}", fontsize=7, color="k" if cls == item.label else "r")
    labelled = any(item.label >= 0 for item, *_ in previews)     # no labels (GAN latent seeds): no classes
    fig.suptitle("condition → baseline generation (top)\nand smoothed output (bottom)"
                 + ("; red = wrong class" if labelled else ""), fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def certificate_note(row: dict) -> str:
    """What a smoothed row's certificate says, for a figure: `certified c, r = 0.42` (the certified class
    c, which can differ from the shown output's class; `certified, r = ...` for a certificate without a
    class, such as `feature`'s cosine radius), `not certified`, `nominal ...` where the certificate is not
    valid, or "" for certifiers without a radius."""
    if row.get("certified") is None or row.get("radius") is None:
        return ""
    if not row["certified"] or row.get("abstained"):
        return "not certified"
    cls = "" if row.get("prediction") is None else f" {row['prediction']}"
    text = f"certified{cls}, r = {float(row['radius']):.2g}"
    return text if row.get("certificate_valid") else f"nominal: {text}"


def _show(ax, img) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if img.shape[0] == 3:                                  # RGB [3, H, W]
        ax.imshow(img.permute(1, 2, 0).float().clamp(0, 1).numpy())
    else:                                                  # grey [1, H, W]: ink on paper
        ax.imshow(img.squeeze().float().numpy(), cmap="gray_r", vmin=0, vmax=1)


def image_rows(rows: list[tuple[str, list]], path: Path, title: str) -> None:
    """A grid with one labelled row per (label, images [C, H, W]) and one column per image."""
    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(0.9 * cols + 1.2, 0.95 * len(rows) + 0.5), squeeze=False,
                             layout="constrained")
    for i, (label, images) in enumerate(rows):
        for j in range(cols):
            if j < len(images):
                _show(axes[i, j], images[j])
            else:
                axes[i, j].axis("off")
        axes[i, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_figures(run_dir: Path, previews: list, attacked: dict[str, list], columns: int = 10) -> None:
    """samples.png (the previews); for image outputs under an attack, attacked_outputs.safetensors (every
    clean and attacked output of each variant, in item order) and attacked.png (the first `columns` items)."""
    if previews:
        preview_grid(previews, run_dir / "samples.png")
    pairs = {v: [(c, a) for c, a in ps if getattr(a, "dim", lambda: 0)() == 3] for v, ps in attacked.items()}
    if not any(pairs.values()):
        return
    import torch
    from safetensors.torch import save_file

    save_file({f"{v}/{kind}": torch.stack([p[k] for p in ps]).float().contiguous()
               for v, ps in pairs.items() if ps for k, kind in enumerate(("clean", "attacked"))},
              str(run_dir / "attacked_outputs.safetensors"))
    rows = [(f"{v}\n{kind}", [p[k] for p in ps[:columns]]) for v, ps in pairs.items() if ps
            for k, kind in enumerate(("clean", "attacked"))]
    image_rows(rows, run_dir / "attacked.png", "outputs at the clean input and at the attacked input, per variant")
