"""Pictures of a run: a preview grid of baseline and smoothed generations."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def preview_grid(previews: list, path: Path) -> None:
    """One column per item: the prompt, the baseline generation and the smoothed output.

    previews: (item, baseline_class, smoothed_class, baseline_image, smoothed_image or None).
    """
    fig, axes = plt.subplots(2, len(previews), figsize=(1.6 * len(previews), 4.2), squeeze=False,
                             layout="constrained")
    for j, (item, b_cls, s_cls, b_img, s_img) in enumerate(previews):
        axes[0, j].set_title(item.condition, fontsize=6, wrap=True)
        for i, (img, cls, name) in enumerate(((b_img, b_cls, "baseline"), (s_img, s_cls, "smoothed"))):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is not None and img.shape[0] == 3:      # RGB [3, H, W]
                ax.imshow(img.permute(1, 2, 0).float().clamp(0, 1).numpy())
            elif img is not None:                          # grey [1, H, W]: ink on paper
                ax.imshow(img.squeeze().float().numpy(), cmap="gray_r", vmin=0, vmax=1)
            shown = "abstain" if cls == -1 else cls
            if item.label < 0:                             # no label (GAN latent seeds): no class to judge
                ax.set_xlabel(name, fontsize=7)
                continue
            ax.set_xlabel(f"{name}: {shown}", fontsize=7, color="k" if cls == item.label else "r")
    fig.suptitle("prompt → baseline generation (top) and smoothed output (bottom); red = wrong class",
                 fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
