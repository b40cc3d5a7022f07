"""FaRL ViT-B/16 image tower: FALCO's attribute network (and its pairing space).

FaRL (FacePerceiver/FaRL) has exactly the OpenAI CLIP ViT-B/16 architecture (openai/CLIP
`clip/model.py` VisionTransformer): 16x16 patch conv (no bias) -> 196 patch tokens + a class
token, width 768 -> + positional embedding -> LayerNorm (ln_pre) -> 12 pre-norm residual blocks
(12-head self-attention, MLP 768->3072->768 with QuickGELU) -> ln_post on the class token ->
projection 768->512. CLIP's LayerNorm runs in float32 whatever the input dtype.

FALCO uses two outputs (`lib/attr_loss.py`, `create_fake_dataset.py`):
- `tokens`: all 197 outputs of the last block, before ln_post, (N,197,768): the attribute
  loss target (sum over tokens of the mean absolute difference).
- `encode`: the projected class token, (N,512), not normalized: the pairing space (cosine).
Input 224x224 after Resize(224) + CenterCrop(224). The correct input is CLIP's mean/std applied
to [0,1] pixels (`normalize=True`). FALCO's attribute loss feeds [-1,1] images with no
normalization (its Normalize is commented out); `normalize=False` reproduces that.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import AttributeEncoder, resize
from .checkpoints import user_checkpoint

FILENAME = "FaRL-Base-Patch16-LAIONFace20M-ep64.pth"
SOURCE = ("FacePerceiver/FaRL README, 'Pre-trained Backbones' (GitHub release "
          "'pretrained_weights'); FALCO's download_models.py ships it in its FARL tar")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """CLIP's LayerNorm: computed in float32, returned in the input dtype (bf16 under autocast)."""
    return F.layer_norm(x.float(), ln.normalized_shape, ln.weight.float(), ln.bias.float(),
                        ln.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x) (the weights were trained with it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """nn.MultiheadAttention's parameter layout (in_proj_weight = [Wq; Wk; Wv]), batch first."""

    autocast_params = ("in_proj_weight", "in_proj_bias")  # used only by F.linear (autocast_weights.py)

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (N,L,3D)
        qkv = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N,H,L,D/H), no mask
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)); (N,L,D) -> (N,L,D)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(_layer_norm(self.ln_1, x))
        return x + self.mlp(_layer_norm(self.ln_2, x))


class Transformer(nn.Module):
    """The block stack; a module of its own so keys read `transformer.resblocks.<i>.*`."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class FaRLVisual(AttributeEncoder):
    """CLIP ViT-B/16 visual tower with FaRL weights. Parameter names = the checkpoint's
    `visual.*` keys without the `visual.` prefix."""

    name = "farl"
    crops: tuple[str, ...] = ()  # works on the whole aligned image, as FALCO does
    input_size = 224

    def __init__(self, normalize: bool = True, width: int = 768, layers: int = 12,
                 patch: int = 16, output_dim: int = 512):
        super().__init__()
        self.normalize = normalize
        grid = self.input_size // patch
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads=width // 64)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, output_dim))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Network input (N,3,224,224) -> (N,197,768) last-block outputs before ln_post."""
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (N,196,768) patch tokens, row-major
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (N,197,768)
        return self.transformer(_layer_norm(self.ln_pre, x))

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N,197,768) tokens -> (N,512) projected class token (CLIP's encode_image)."""
        return _layer_norm(self.ln_post, tokens[:, 0]) @ self.proj.to(tokens.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Network input (N,3,224,224) -> (N,512) = CLIP `encode_image`."""
        return self.head(self.tokens(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input -> (embedding (N,512), tokens (N,197,768)), like FALCO's extract_visual."""
        tokens = self.tokens(x)
        return self.head(tokens), tokens

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] -> network input: Resize(224)+CenterCrop(224), then CLIP's
        mean/std on [0,1] pixels (normalize=True) or the raw [-1,1] values (FALCO's loss)."""
        x = _resize_center_crop(image, self.input_size)
        if self.normalize:
            x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x

    def features(self, image: torch.Tensor,
                 thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] -> (N,197,768) tokens, the attribute-loss target."""
        return self.tokens(self.preprocess(image)).float()  # fp32 for the loss, also under autocast

    def pairing_features(self, image: torch.Tensor,
                         thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] -> (N,512) projected embedding (compared by cosine)."""
        return self.encode(self.preprocess(image)).float()


def _resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision Resize(size, antialias=True) + CenterCrop(size) on a tensor batch."""
    h, w = image.shape[-2:]
    if (h, w) == (size, size):
        return image
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)
    new_hw = (size, new_long) if h <= w else (new_long, size)
    image = resize(image, new_hw)
    top, left = int(round((new_hw[0] - size) / 2.0)), int(round((new_hw[1] - size) / 2.0))
    return image[:, :, top:top + size, left:left + size]


def visual_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image-tower entries of a CLIP-layout state dict, `visual.` and any prefix stripped.

    The prefix is whatever precedes `visual.conv1.weight` (FaRL's files use none; wrappers add
    `module.` or a model name). Text-tower keys and `logit_scale` are ignored."""
    anchor = "visual.conv1.weight"
    prefixes = {k[: -len(anchor)] for k in state if k.endswith(anchor)}
    prefixes = {p for p in prefixes if p == "" or p.endswith(".")}
    if len(prefixes) != 1:
        sample = ", ".join(list(state)[:5])
        raise ValueError(f"expected exactly one CLIP image tower ('...{anchor}') in the checkpoint, "
                         f"found {len(prefixes)} (prefixes {sorted(prefixes)}; first keys: {sample})")
    start = prefixes.pop() + "visual."
    return {k[len(start):]: v for k, v in state.items() if k.startswith(start)}


def load_farl(path: str | os.PathLike | None, *, normalize: bool = True) -> FaRLVisual:
    """Load the visual tower from a FaRL checkpoint ({'state_dict': CLIP-layout keys}); strict
    on the image-tower keys (FALCO's strict=False would silently keep OpenAI CLIP values)."""
    p = user_checkpoint(path, what="FaRL ViT-B/16 (LAION-Face, ep64)", filename=FILENAME,
                        source=SOURCE, config_key="attributes.checkpoint")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{p}: refused to unpickle (weights_only loading failed, nothing was "
                         f"executed): {err}") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    with torch.device("meta"):  # skip the random init; every parameter comes from the file
        model = FaRLVisual(normalize=normalize)
    model.load_state_dict(visual_state_dict(state), strict=True, assign=True)
    model.mean, model.std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    # fp32 like FALCO's CPU path (clip.load(...).float() before load_state_dict copies into it).
    return model.float().eval().requires_grad_(False)
