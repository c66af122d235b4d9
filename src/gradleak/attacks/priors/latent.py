"""Generative priors in the matching problem: what the optimisers move is a generator's input.

GGL (Li et al. 2022) searches the latent space of a generator trained on auxiliary images
for the latent whose image reproduces the shared update; GIAS (Jeon et al. 2021) then also
fine-tunes the generator's weights, one copy per image, starting from that latent. Both
are `Decoder`s of the matching problem (`gradleak.attacks.matching.problem`): each trial's
variable is decoded into normalised candidate images, and a penalty on the variable joins
the loss.

- `LatentDecoder` (GGL): one sample's variable is its latent z (d values); the penalty is
  GGL's KL term, the divergence of N(mean(z), var(z)) from N(0, 1), weighted.
- `GeneratorDecoder` (GIAS): one sample's variable is [z, u], u the change of the
  generator's weights scaled by `weight_scale` (θ = θ₀ + s·u, so one step size moves the
  latent and the weights at their own scales); the penalty adds ‖s·u‖² / P, keeping each
  image's generator near the trained one.

Both generators run without batch norm, so each image is decoded on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.func import functional_call, vmap

from gradleak.attacks.priors.generative import GenerativePrior
from gradleak.data.normalize import normalize

LATENT_WEIGHT = 0.01  # the KL term's weight
WEIGHT_SCALE = 1e-4  # GIAS: weight change per unit of the optimised variable
WEIGHT_DECAY = 1.0  # GIAS: weight of ‖θ − θ₀‖² / P


def latent_kl(z: torch.Tensor) -> torch.Tensor:
    """Mean over samples of KL(N(mean(z_i), var(z_i)) ‖ N(0, 1)) (GGL's latent constraint)."""
    mean = z.mean(dim=-1)
    var = z.var(dim=-1, unbiased=False).clamp_min(1e-8)
    return (0.5 * (mean.pow(2) + var - var.log() - 1)).mean()


class LatentDecoder:
    """GGL: a sample's variable is its latent; images are the generator's, normalised.

    Args:
        prior: the trained generator and what it was trained for.
        mean: the attacked data's normalisation means (one per channel).
        std: its standard deviations.
        latent_weight: the KL term's weight (>= 0).
    """

    def __init__(
        self,
        prior: GenerativePrior,
        mean: Sequence[float],
        std: Sequence[float],
        latent_weight: float = LATENT_WEIGHT,
    ) -> None:
        self.prior = prior
        self.generator = prior.generator
        self.params = {n: p.detach() for n, p in prior.generator.named_parameters()}
        self.buffers = {n: b.detach() for n, b in prior.generator.named_buffers()}
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.latent_weight = float(latent_weight)
        self.latent_dim = prior.latent_dim

    def to(self, device: torch.device) -> LatentDecoder:
        """This decoder with its generator on `device` (moved in place)."""
        self.generator.to(device)
        self.params = {n: p.detach() for n, p in self.generator.named_parameters()}
        self.buffers = {n: b.detach() for n, b in self.generator.named_buffers()}
        return self

    def start(self, trials: int, batch: int, generator: torch.Generator) -> torch.Tensor:
        """K×B×d standard-normal latents, the search's start, on the generator's device (a
        CPU generator draws the same start for any device; the engine moves it)."""
        shape = (trials, batch, self.latent_dim)
        return torch.randn(shape, generator=generator, device=generator.device)

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        """B×C×H×W pixels in [0, 1] from B latents."""
        return functional_call(self.generator, (self.params, self.buffers), (z,))

    def decode(self, variable: torch.Tensor) -> torch.Tensor:
        return normalize(self.pixels(variable), self.mean, self.std)

    def penalty(self, variable: torch.Tensor) -> torch.Tensor:
        return self.latent_weight * latent_kl(variable)


class GeneratorDecoder:
    """GIAS: a sample's variable is [z, u]; its image comes from its own weights θ₀ + s·u.

    Args:
        latent: the GGL decoder whose generator is fine-tuned.
        weight_scale: s, the weight change per unit of u (> 0).
        weight_decay: the weight of ‖s·u‖² / P in the penalty (>= 0).
    """

    def __init__(
        self,
        latent: LatentDecoder,
        weight_scale: float = WEIGHT_SCALE,
        weight_decay: float = WEIGHT_DECAY,
    ) -> None:
        self.latent = latent
        self.scale = float(weight_scale)
        self.weight_decay = float(weight_decay)
        self.names = list(latent.params)
        self.shapes = [latent.params[n].shape for n in self.names]
        self.sizes = [latent.params[n].numel() for n in self.names]
        self.weights = sum(self.sizes)

    def to(self, device: torch.device) -> GeneratorDecoder:
        """This decoder with its generator on `device` (moved in place)."""
        self.latent.to(device)
        return self

    def start(self, latents: torch.Tensor) -> torch.Tensor:
        """K×B×(d + P) variables from K×B×d latents, every generator at its trained weights."""
        change = latents.new_zeros(*latents.shape[:-1], self.weights)
        return torch.cat([latents, change], dim=-1)

    def _one(self, row: torch.Tensor) -> torch.Tensor:
        """One sample's pixels C×H×W from its [z, u]."""
        d = self.latent.latent_dim
        z, change = row[:d], row[d:]
        params = {}
        for name, shape, part in zip(
            self.names, self.shapes, change.split(self.sizes), strict=True
        ):
            params[name] = self.latent.params[name] + self.scale * part.reshape(shape)
        out = functional_call(self.latent.generator, (params, self.latent.buffers), (z[None],))
        return out[0]

    def decode(self, variable: torch.Tensor) -> torch.Tensor:
        pixels = vmap(self._one)(variable)
        return normalize(pixels, self.latent.mean, self.latent.std)

    def penalty(self, variable: torch.Tensor) -> torch.Tensor:
        d = self.latent.latent_dim
        z, change = variable[..., :d], variable[..., d:]
        drift = (self.scale * change).pow(2).sum(dim=-1).mean() / self.weights
        return self.latent.penalty(z) + self.weight_decay * drift
