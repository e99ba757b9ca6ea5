"""Interaction matrices from per-task gradients, exact or through a random sketch.

A_ij = g_i . g_j / ||g_j|| is the first-order decrease of task i's loss after a unit-length step
along task j's gradient (the column normalisation chosen by Michel, Ruder & Yogatama, "Balancing
Average and Worst-Case Accuracy in Multitask Learning"). Everything here is a pure function or
class over tensors; collecting per-task gradients and all-reducing them is the caller's job.

Example:
    >>> g = torch.tensor([[3.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    >>> interaction_matrix(g)[2].tolist()  # task 2 against unit steps along tasks 0, 1, 2
    [3.0, 4.0, 5.0]
"""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Columns of the gradient stack converted at a time, so an upcast copy of a low-precision
# [N, d] stack never exists in full: N x 2^20 float64 entries is 8 MiB per task.
_GRAM_CHUNK = 1 << 20

SKETCH_DISTRIBUTIONS = ("countsketch", "gaussian", "rademacher")

# Rows of the projection drawn from one seed. Fixed, so the projection depends only on
# (seed, dim_in, dim_out, distribution), never on how the input is processed.
_DENSE_BLOCK_ROWS = 4096
_COUNTSKETCH_BLOCK_ROWS = 1 << 20


def gram_matrix(gradients: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Return G G^T, computed and returned in `dtype`, for a [N, d] stack of any floating dtype.

    The product is accumulated over chunks of columns, so the stack may be bfloat16 or float16
    without a full upcast copy. The result stays on the gradients' device.
    """
    if gradients.dim() != 2:
        raise ValueError(
            f"gradients must be a [num_tasks, dim] tensor, got shape {tuple(gradients.shape)}."
        )
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"The Gram matrix dtype must be torch.float32 or torch.float64, got {dtype}."
        )
    num_tasks = gradients.shape[0]
    gram = torch.zeros(num_tasks, num_tasks, dtype=dtype, device=gradients.device)
    for start in range(0, gradients.shape[1], _GRAM_CHUNK):
        chunk = gradients[:, start : start + _GRAM_CHUNK].to(dtype)
        gram += chunk @ chunk.T
    return gram


def interaction_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Return A_ij = G_ij / sqrt(G_jj), with column j all zero when task j's gradient is zero."""
    norms = torch.sqrt(torch.clamp(torch.diagonal(gram), min=0.0))
    nonzero = norms > 0
    safe_norms = torch.where(nonzero, norms, torch.ones_like(norms))
    interaction = gram / safe_norms.unsqueeze(0)
    return torch.where(nonzero.unsqueeze(0), interaction, torch.zeros_like(interaction))


def interaction_matrix(gradients: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Return the [N, N] interaction matrix A_ij = g_i . g_j / ||g_j|| of a [N, d] gradient stack.

    Computed in `dtype` (float64 by default, or float32) from gradients stored in any floating
    dtype, on the gradients' device. The result has the gradients' dtype when that is float32 or
    float64, and float32 for half-precision storage. A zero gradient gives a zero column and a
    zero row, never NaN.

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
        >>> interaction_matrix(g)[:, 1].tolist()
        [0.0, 2.0, 0.0]
    """
    result_dtype = (
        gradients.dtype if gradients.dtype in (torch.float32, torch.float64) else torch.float32
    )
    return interaction_from_gram(gram_matrix(gradients, dtype)).to(result_dtype)


def _block_generator(seed: int, block: int) -> torch.Generator:
    """Return a CPU generator for one block of the projection, independent of every other block."""
    state = np.random.SeedSequence([seed, block]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state) & ((1 << 63) - 1))


class GradientSketch:
    """A fixed random projection S of flat gradients from dimension d (`dim_in`) to r (`dim_out`).

    Inner products are preserved in expectation, E[<S x, S y>] = <x, y>, with variance at most
    2 ||x||^2 ||y||^2 / r (Johnson-Lindenstrauss), so the interaction matrix of sketched gradients
    approaches the exact one as r grows. Project before the all-reduce and DDP traffic is N x r.

    Distributions:
        "countsketch" (default): each input coordinate k is added, with a random sign, to one
            random output coordinate. Costs O(d) per projection, which is what makes it usable on
            a full model's gradient.
        "gaussian": dense S with N(0, 1/r) entries.
        "rademacher": dense S with entries +-1/sqrt(r).
        The dense ones cost O(d r) per projection: use them for d * r up to about 1e9.

    Determinism and memory: S is generated block by block (4096 rows for the dense distributions,
    2^20 for CountSketch), each block from its own CPU generator seeded by (seed, block index).
    The same (dim_in, dim_out, seed, distribution) therefore gives the same S on every rank, run
    and device. When S fits in `cache_bytes` (dense: 4 d r bytes; CountSketch: 12 d bytes) it is
    kept after the first projection. Otherwise each projection regenerates it, holding one block
    at a time: 16 KiB x r for the dense distributions, 12 MiB for CountSketch.

    Args:
        dim_in: d, the length of the flat gradients.
        dim_out: r, the sketch dimension.
        seed: seed of the projection.
        dtype: dtype of the projected vectors. The projection itself runs in float32 (float64
            when `dtype` is float64).
        distribution: one of `SKETCH_DISTRIBUTIONS`.
        cache_bytes: largest projection kept in memory between calls.

    Example:
        >>> sketch = GradientSketch(dim_in=1000, dim_out=64, seed=0)
        >>> sketch.project(torch.ones(1000)).shape
        torch.Size([64])
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        *,
        distribution: str = "countsketch",
        cache_bytes: int = 256 * 2**20,
    ):
        if isinstance(dim_in, bool) or int(dim_in) != dim_in or dim_in < 1:
            raise ValueError(f"sketch dim_in must be an integer >= 1, got {dim_in!r}.")
        if isinstance(dim_out, bool) or int(dim_out) != dim_out or dim_out < 1:
            raise ValueError(f"sketch dimension dim_out must be an integer >= 1, got {dim_out!r}.")
        if distribution not in SKETCH_DISTRIBUTIONS:
            raise ValueError(
                f"Unknown sketch distribution {distribution!r}: use one of "
                f"{', '.join(SKETCH_DISTRIBUTIONS)}."
            )
        if not dtype.is_floating_point:
            raise ValueError(f"sketch dtype must be a floating dtype, got {dtype}.")
        self.dim_in = int(dim_in)
        self.dim_out = int(dim_out)
        self.seed = int(seed)
        self.dtype = dtype
        self.distribution = distribution
        self.compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.block_rows = (
            _COUNTSKETCH_BLOCK_ROWS if distribution == "countsketch" else _DENSE_BLOCK_ROWS
        )
        self.cache_bytes = int(cache_bytes)
        self._cache: list | None = None

    @property
    def matrix_bytes(self) -> int:
        """Memory the whole projection takes when cached."""
        if self.distribution == "countsketch":
            return 12 * self.dim_in  # int64 bucket + float32 sign per input coordinate
        return 4 * self.dim_in * self.dim_out

    def _generate_block(self, block: int, rows: int):
        generator = _block_generator(self.seed, block)
        if self.distribution == "countsketch":
            buckets = torch.randint(0, self.dim_out, (rows,), generator=generator)
            signs = (
                torch.randint(0, 2, (rows,), generator=generator).to(torch.float32).mul_(2).sub_(1)
            )
            return buckets, signs
        if self.distribution == "gaussian":
            matrix = torch.randn(rows, self.dim_out, generator=generator)
        else:
            matrix = torch.randint(0, 2, (rows, self.dim_out), generator=generator).to(
                torch.float32
            )
            matrix.mul_(2).sub_(1)
        return matrix.div_(self.dim_out**0.5)

    def _blocks(self):
        """Yield (start, block) pairs covering the input coordinates, from the cache if any."""
        if self._cache is not None:
            yield from self._cache
            return
        keep = self.matrix_bytes <= self.cache_bytes
        blocks = []
        for index, start in enumerate(range(0, self.dim_in, self.block_rows)):
            rows = min(self.block_rows, self.dim_in - start)
            entry = (start, self._generate_block(index, rows))
            if keep:
                blocks.append(entry)
            yield entry
        if keep:
            self._cache = blocks

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        """Return S x for a [d] vector, or S x_n for each row of a [n, d] stack, in `dtype`.

        The input may have any floating dtype and device; the result is on the input's device.
        """
        if flat.dim() not in (1, 2) or flat.shape[-1] != self.dim_in:
            raise ValueError(
                f"The sketch projects vectors of length {self.dim_in} (shape [{self.dim_in}] or "
                f"[n, {self.dim_in}]), got shape {tuple(flat.shape)}."
            )
        stacked = flat.reshape(1, -1) if flat.dim() == 1 else flat
        device = flat.device
        out = torch.zeros(stacked.shape[0], self.dim_out, dtype=self.compute_dtype, device=device)
        for start, block in self._blocks():
            if self.distribution == "countsketch":
                buckets, signs = block
                rows = buckets.shape[0]
                chunk = stacked[:, start : start + rows].to(self.compute_dtype)
                signed = chunk * signs.to(device=device, dtype=self.compute_dtype)
                out.index_add_(1, buckets.to(device), signed)
            else:
                rows = block.shape[0]
                chunk = stacked[:, start : start + rows].to(self.compute_dtype)
                out += chunk @ block.to(device=device, dtype=self.compute_dtype)
        out = out.to(self.dtype)
        return out.reshape(-1) if flat.dim() == 1 else out
