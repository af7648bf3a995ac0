"""How strongly the generator's output moves with its condition: Jacobian statistics by random probes.

For J = d vec(G(z, u)) / dz at a fixed internal draw u, E_v[(J^T v)(J^T v)^T] = J^T J for v ~ N(0, I),
so `probes` vector-Jacobian products give an unbiased estimate of J^T J (and of ||J||_F^2, its trace)
at any output size, without materialising J.
"""

from __future__ import annotations

import torch


@torch.inference_mode(False)
@torch.enable_grad()
def jtj_estimate(model, z: torch.Tensor, seed: int, probes: int = 32, draws: int = 4) -> torch.Tensor:
    """Estimate of J^T J [d, d] at condition z (shape [d]), averaged over `draws` internal draws u.

    Runs outside inference mode (callers such as the item loop may be inside it).
    """
    d = z.numel()
    acc = torch.zeros(d, d, dtype=torch.float64, device=z.device)
    for draw in range(draws):
        zz = z.detach().clone().requires_grad_(True)
        out = model.generate(zz[None], torch.Generator(device=z.device).manual_seed(seed + draw)).reshape(-1)
        probe_gen = torch.Generator(device=z.device).manual_seed(seed + 10_000 + draw)
        for _ in range(probes):
            v = torch.randn(out.shape, generator=probe_gen, device=z.device, dtype=out.dtype)
            (g,) = torch.autograd.grad(out, zz, v, retain_graph=True)
            g = g.reshape(-1).double()
            acc += torch.outer(g, g)
    return acc / (draws * probes)
