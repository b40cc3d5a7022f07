"""genforce StyleGAN2 generator (config-f, 'skip' architecture), as FALCO uses it.

FALCO generates its faces with genforce's `StyleGAN2Generator` (vendored in the official repo
under models/genforce) loaded from `stylegan2_ffhq1024.pth`. This is a pure-PyTorch port that
reads the same state dict (same keys) and computes the same images:

    z (N,512) --pixel-norm, 8 dense layers (lr_mul 0.01)--> w (N,512)
      --repeat, truncation w_avg + psi * (w - w_avg) on the first trunc_layers--> W+ (N,18,512)
    W+ --per-layer affine--> styles S --modulated convs, constant noise--> image (N,3,R,R)

Images are RGB in a nominal [-1, 1] (no final tanh: real weights stay close to that range).
Noise is always the stored per-layer `noise` buffers (genforce `randomize_noise=False`), so
synthesis is deterministic.

The synthesis network and the StyleGAN2 ops shared with the NVIDIA port are in
stylegan2_synthesis.py; the partial synthesis the optimization uses is stylegan2_frozen.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from falco.backbones.base import Generator, LatentLayout
from falco.backbones.checkpoints import user_checkpoint
from falco.backbones.stylegan2_frozen import FrozenSynthesis
from falco.backbones.stylegan2_synthesis import DenseLayer, Synthesis


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float):
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            self.add_module(f"dense{i}", DenseLayer(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mul))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (N,z_dim) -> w (N,w_dim); z is pixel-normalized first (unit second moment)."""
        x = z / (z.square().mean(dim=1, keepdim=True) + 1e-8).sqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"dense{i}")(x)
        return x


class Truncation(nn.Module):
    def __init__(self, w_dim: int):
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, wp: torch.Tensor, psi: float, layers: int) -> torch.Tensor:
        """wp (N,L,D): layers [0, layers) become w_avg + psi * (wp - w_avg)."""
        coefs = torch.ones(wp.shape[1], dtype=wp.dtype, device=wp.device)
        coefs[:layers] = psi
        w_avg = self.w_avg.to(wp.dtype)
        return w_avg + (wp - w_avg) * coefs[None, :, None]


# ---- the generator role and the loader ----

class GenforceStyleGAN2(Generator):
    """FALCO's generator: W+ latents (num_layers, 512), layers 3-7 optimized by default.

    sample(n, seed): z ~ N(0, I) from a CPU torch.Generator seeded with `seed`, mapped and
        truncated with `truncation_psi` on all layers (FALCO's fake pool: psi 0.7) -> (n,L,512).
    synthesize(wp): W+ (n,L,512) -> image (n,3,R,R), RGB, nominally [-1, 1].
    """

    def __init__(self, resolution: int = 1024, *, z_dim: int = 512, w_dim: int = 512,
                 mapping_layers: int = 8, mapping_lr_mul: float = 0.01, fmaps_base: int = 32 << 10,
                 fmaps_max: int = 512, truncation_psi: float = 0.7,
                 trainable: tuple[int, int] = (3, 8)):
        super().__init__()
        self.resolution, self.z_dim, self.w_dim = resolution, z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul)
        self.truncation = Truncation(w_dim)
        self.synthesis = Synthesis(resolution, w_dim, fmaps_base, fmaps_max)
        self.num_layers = 2 * self.synthesis.num_blocks  # 18 at 1024px
        self.truncation_psi = truncation_psi
        start, stop = trainable
        self.layout = LatentLayout((self.num_layers, w_dim), (start, min(stop, self.num_layers)), True)

    def get_w(self, z: torch.Tensor, truncation_psi: float | None = None,
              trunc_layers: int | None = None) -> torch.Tensor:
        """z (N,z_dim) -> truncated W+ (N,L,w_dim), like genforce `get_w(z, psi, trunc_layers)`.
        Defaults: this generator's psi, on all layers."""
        psi = self.truncation_psi if truncation_psi is None else truncation_psi
        layers = self.num_layers if trunc_layers is None else trunc_layers
        w = self.mapping(z)
        wp = w[:, None, :].expand(-1, self.num_layers, -1)
        return self.truncation(wp, psi, layers)

    def get_s(self, wp: torch.Tensor) -> dict[str, torch.Tensor]:
        """W+ -> S-space style codes (genforce `get_s`), each (N, in_channels)."""
        return self.synthesis.get_s(wp)

    def synthesize_styles(self, styles: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """S-space style codes -> image (N,3,R,R) (genforce `G(styles)` with latent_is_s)."""
        return self.synthesis(styles)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Always float32, whatever autocast is active, so a seed gives the same latents."""
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(int(seed)))
        device = self.truncation.w_avg.device
        with torch.autocast(device.type, enabled=False):
            return self.get_w(z.to(device))

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.ndim != 3 or tuple(latent.shape[1:]) != self.layout.shape:
            raise ValueError(f"expected W+ latents of shape (N, {self.num_layers}, {self.w_dim}), "
                             f"got {tuple(latent.shape)}")
        return self.synthesis(self.synthesis.get_s(latent))

    def partial_synthesis(self, latent: torch.Tensor, exact: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """Synthesis of the trainable W+ layers with the fixed layers' work done once (see
        stylegan2_frozen.py): the same images, several times faster per Adam step; exact: bit
        for bit `synthesize`'s, only the constant leading layers done once."""
        return FrozenSynthesis(self.synthesis, latent.detach().float(), self.layout.trainable, exact)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.synthesize(latent)


def _arch_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """Constructor arguments implied by a genforce state dict (resolution, widths, depths)."""
    try:
        num_out = sum(1 for k in sd if re.fullmatch(r"synthesis\.output\d+\.weight", k))
        num_dense = sum(1 for k in sd if re.fullmatch(r"mapping\.dense\d+\.weight", k))
        resolution = 4 * 2 ** (num_out - 1)
        last = sd[f"synthesis.output{num_out - 1}.weight"].shape[1]  # channels at resolution R
        return dict(resolution=resolution, z_dim=sd["mapping.dense0.weight"].shape[1],
                    w_dim=sd["truncation.w_avg"].shape[0], mapping_layers=num_dense,
                    fmaps_max=sd["synthesis.early_layer.const"].shape[1], fmaps_base=last * resolution)
    except (KeyError, IndexError) as err:
        raise ValueError(f"not a genforce StyleGAN2 generator state dict (missing {err})") from err


def load_state_dict_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """load_state_dict(strict=True) with a message that lists missing/unexpected keys."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
        raise ValueError(f"{what}: state dict does not match the architecture. "
                         f"Missing keys: [{show(missing)}]. Unexpected keys: [{show(unexpected)}].")
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{what}: state dict does not match the architecture: {err}") from err


def load_genforce_stylegan2(path, *, truncation_psi: float = 0.7,
                            trainable: tuple[int, int] = (3, 8)) -> GenforceStyleGAN2:
    """Load genforce's `stylegan2_ffhq1024.pth` (FALCO's generator) in eval mode.

    The file is a torch.save'd dict; the EMA weights under 'generator_smooth' are preferred,
    else 'generator' (FALCO's load_generator does the same). Other keys are ignored.
    """
    p = user_checkpoint(path, what="StyleGAN2 FFHQ-1024 generator (genforce)",
                        filename="stylegan2_ffhq1024.pth",
                        source="genforce model zoo (https://github.com/genforce/genforce, MODEL_ZOO.md), "
                               "as downloaded by FALCO's download_models.py",
                        config_key="generator.checkpoint")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure gets the same explanation
        raise ValueError(f"could not read {str(p)!r} as a genforce checkpoint with weights_only "
                         f"loading (it must hold plain tensors and dicts): {err}") from err
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{str(p)!r}: expected a dict checkpoint, got {type(ckpt).__name__}")
    key = "generator_smooth" if "generator_smooth" in ckpt else "generator"
    if key not in ckpt:
        raise ValueError(f"{str(p)!r}: no 'generator_smooth' or 'generator' entry "
                         f"(keys: {sorted(map(str, ckpt))[:10]})")
    sd = ckpt[key]
    gen = GenforceStyleGAN2(**_arch_from_state_dict(sd), truncation_psi=truncation_psi, trainable=trainable)
    load_state_dict_strict(gen, sd, f"genforce generator {str(p)!r}")
    return gen.eval()
