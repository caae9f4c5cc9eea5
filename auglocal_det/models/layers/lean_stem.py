"""A ResNet stem that processes the batch in chunks and keeps nothing big.

The stem (convolution, BatchNorm, ReLU and, in ImageNet ResNets, a 3x3/2
max-pool) works at the highest resolution of the network. Trained as usual,
autograd keeps the full-batch convolution output for BatchNorm and the ReLU
output for the max-pool, and the backward adds the gradients of both: at
224 x 224 and batch 128 that is four tensors of 392 MiB, twice the size of
everything else one local module needs. :class:`LeanStem` gives the same
outputs, gradients and BatchNorm running statistics while keeping only the
input and the (4x smaller) output alive:

- forward: a first pass over the chunks of the batch computes the
  convolution and reduces it to BatchNorm's full-batch mean and variance; a
  second pass recomputes the convolution chunk by chunk and writes the
  normalised, rectified and pooled result into the output;
- backward: a first pass recomputes each chunk's normalised convolution
  output and reduces the gradient to BatchNorm's two batch sums (those of
  the gradient and of the gradient times the normalised input); a second
  pass recomputes each chunk again and computes its share of the
  convolution's weight (and input) gradient. The gradient reaching the
  BatchNorm output comes from the saved output (the ReLU's mask) and the
  max-pool's argmax positions, kept from the forward in 16 bits.

The convolution is recomputed three times per iteration: the stem is about
3% of a ResNet-34's forward FLOPs.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from auglocal_det.errors import InputError

__all__ = ['LeanStem']


class _StemGeometry:
    """The fixed arguments of the stem's convolution and pooling."""

    def __init__(self, conv: nn.Conv2d, pool: Optional[nn.MaxPool2d],
                 eps: float, chunk_size: int) -> None:
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups
        self.pool = None if pool is None else dict(
            kernel_size=pool.kernel_size,
            stride=pool.stride,
            padding=pool.padding,
            dilation=pool.dilation,
            ceil_mode=pool.ceil_mode)
        self.eps = eps
        self.chunk_size = chunk_size

    def conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, None, self.stride, self.padding,
                        self.dilation, self.groups)

    def chunks(self, num: int):
        """``slice`` objects covering ``range(num)``."""
        for start in range(0, num, self.chunk_size):
            yield slice(start, min(start + self.chunk_size, num))


def _channel_sum(x: torch.Tensor) -> torch.Tensor:
    return x.sum(dim=(0, 2, 3))


def _view(vector: torch.Tensor) -> torch.Tensor:
    return vector.view(1, -1, 1, 1)


class _LeanStemFunction(torch.autograd.Function):
    """Chunked conv -> BatchNorm -> ReLU [-> max-pool], exact.

    Inputs: images, conv weight, BN weight and bias, the statistics to
    normalise with (None: the batch's, computed here) and the geometry.
    Returns the stem output and the batch mean and biased variance (empty
    when statistics were given).

    The backward needs, per chunk, the gradient at the BatchNorm output:
    the output gradient, masked where the (saved) output is 0 (the ReLU),
    and scattered to the max-pool's argmax positions, kept from the forward
    in 16 bits where the feature map allows it (a quarter of the output's
    size); and the normalised convolution output, recomputed.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor,
                bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                stats: Optional[Tuple[torch.Tensor, torch.Tensor]],
                geom: _StemGeometry
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num = x.size(0)
        batch_stats = stats is None
        if batch_stats:
            # per-chunk mean and M2 combined exactly (Chan et al.)
            count = 0
            mean = m2 = None
            for part in geom.chunks(num):
                z = geom.conv(x[part], weight)
                n = z.numel() // z.size(1)
                var_c, mean_c = torch.var_mean(
                    z, dim=(0, 2, 3), unbiased=False)
                m2_c = var_c * n
                if mean is None:
                    mean, m2 = mean_c, m2_c
                else:
                    delta = mean_c - mean
                    total = count + n
                    mean = mean + delta * (n / total)
                    m2 = m2 + m2_c + delta * delta * (count * n / total)
                count += n
                del z
            var = m2 / count
        else:
            mean, var = stats
            count = 0
        out = indices = None
        for part in geom.chunks(num):
            a = torch.relu_(
                F.batch_norm(
                    geom.conv(x[part], weight), mean, var, bn_weight,
                    bn_bias, False, 0., geom.eps))
            if geom.pool is not None:
                a, index = F.max_pool2d(a, return_indices=True, **geom.pool)
                if indices is None:
                    positions = a.numel() * 4 // a.size(0) // a.size(1)
                    dtype = torch.int16 if positions < 2**15 else torch.int32
                    indices = index.new_empty((num, ) + index.shape[1:],
                                              dtype=dtype)
                indices[part] = index
            if out is None:
                out = a.new_empty((num, ) + a.shape[1:])
            out[part] = a
            del a
        ctx.geom = geom
        ctx.batch_stats = batch_stats
        ctx.count = count
        ctx.save_for_backward(x, weight, bn_weight, mean, var, out, indices)
        ctx.mark_non_differentiable(mean, var)
        if not batch_stats:
            mean, var = mean.new_empty(0), var.new_empty(0)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor, *unused):
        x, weight, bn_weight, mean, var, out, indices = ctx.saved_tensors
        geom: _StemGeometry = ctx.geom
        scale = bn_weight * torch.rsqrt(var + geom.eps)
        need_x, need_w, need_g, need_b = ctx.needs_input_grad[:4]

        def recompute(part: slice) -> Tuple[torch.Tensor, torch.Tensor]:
            """Normalised conv output of one chunk and the gradient at its
            BatchNorm output (before the ReLU)."""
            z = geom.conv(x[part], weight)
            grad = grad_out[part].masked_fill(out[part] <= 0, 0)
            if geom.pool is not None:
                grad = torch.ops.aten.max_pool2d_with_indices_backward(
                    grad, z, geom.pool['kernel_size'], geom.pool['stride'],
                    geom.pool['padding'], geom.pool['dilation'],
                    geom.pool['ceil_mode'], indices[part].long())
            xhat = F.batch_norm(z, mean, var, None, None, False, 0.,
                                geom.eps)
            return xhat, grad

        num = x.size(0)
        grad_beta = grad_gamma = None
        if ctx.batch_stats or need_g or need_b:
            grad_beta = torch.zeros_like(mean)
            grad_gamma = torch.zeros_like(mean)
            for part in geom.chunks(num):
                xhat, grad_u = recompute(part)
                grad_beta += _channel_sum(grad_u)
                grad_gamma += _channel_sum(grad_u * xhat)
                del xhat, grad_u
        grad_x = torch.zeros_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        if need_x or need_w:
            for part in geom.chunks(num):
                xhat, grad_z = recompute(part)
                if ctx.batch_stats:
                    grad_z -= _view(grad_beta / ctx.count)
                    grad_z -= xhat * _view(grad_gamma / ctx.count)
                grad_z *= _view(scale)
                del xhat
                x_part = x[part]
                if need_x:
                    grad_x[part] = torch.nn.grad.conv2d_input(
                        x_part.shape, weight, grad_z, geom.stride,
                        geom.padding, geom.dilation, geom.groups)
                if need_w:
                    grad_w += torch.nn.grad.conv2d_weight(
                        x_part, weight.shape, grad_z, geom.stride,
                        geom.padding, geom.dilation, geom.groups)
                del grad_z
        return (grad_x, grad_w, grad_gamma if need_g else None,
                grad_beta if need_b else None, None, None)


class LeanStem(nn.Module):
    """Conv -> BatchNorm -> ReLU [-> max-pool] of a ResNet, run in chunks.

    A drop-in view of an existing stem: it holds the given modules (their
    parameters and buffers are the stem's own) and computes exactly what
    ``nn.Sequential(conv, norm, relu, pool)`` computes, in training and
    eval mode, including the update of the BatchNorm running statistics,
    up to float32 round-off; it only keeps tensors of one chunk of
    ``chunk_size`` images alive at the input resolution (see the module
    docstring).

    Under autocast the stem computes in float32 (the plain stem would run
    its convolution in the autocast dtype).

    Args:
        conv1 (nn.Conv2d): The stem convolution (no bias).
        bn1 (nn.BatchNorm2d): Its BatchNorm (affine).
        relu (nn.Module): The ReLU (only its position matters).
        maxpool (nn.MaxPool2d, optional): The pooling, or None for stems
            without one (CIFAR ResNets). Defaults to None.
        chunk_size (int): Images per chunk. Defaults to 16.
    """

    def __init__(self,
                 conv1: nn.Conv2d,
                 bn1: _BatchNorm,
                 relu: nn.Module,
                 maxpool: Optional[nn.MaxPool2d] = None,
                 chunk_size: int = 16) -> None:
        super().__init__()
        if conv1.bias is not None or conv1.padding_mode != 'zeros':
            raise InputError('LeanStem needs a convolution without bias and '
                             'with zero padding')
        if type(bn1) is not nn.BatchNorm2d or not bn1.affine:
            raise InputError('LeanStem needs an affine nn.BatchNorm2d (not '
                             f'{type(bn1).__name__}; SyncBN reduces over '
                             'processes and is not supported)')
        if not isinstance(relu, nn.ReLU):
            raise InputError(f'LeanStem needs nn.ReLU, got {relu!r}')
        if maxpool is not None and (not isinstance(maxpool, nn.MaxPool2d)
                                    or maxpool.return_indices):
            raise InputError(f'LeanStem needs nn.MaxPool2d, got {maxpool!r}')
        if int(chunk_size) < 1:
            raise InputError(
                f'LeanStem: chunk_size must be >= 1 '
                f'(model.backbone.stem_chunk_size), got {chunk_size}')
        self.conv1 = conv1
        self.bn1 = bn1
        self.relu = relu
        self.maxpool = maxpool
        self.chunk_size = int(chunk_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stem output of images ``x`` (N, C, H, W)."""
        device = x.device.type
        if torch.amp.is_autocast_available(device) and \
                torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self.forward(x.float())
        bn = self.bn1
        batch_stats = bn.training or bn.running_mean is None
        stats = None if batch_stats else (bn.running_mean, bn.running_var)
        geom = _StemGeometry(self.conv1, self.maxpool, bn.eps,
                             self.chunk_size)
        out, mean, var = _LeanStemFunction.apply(x, self.conv1.weight,
                                                 bn.weight, bn.bias, stats,
                                                 geom)
        if bn.training and bn.track_running_stats:
            self._update_running_stats(mean, var, self._conv_count(x))
        return out

    def _conv_count(self, x: torch.Tensor) -> int:
        """Elements per channel of the convolution output (N * H * W)."""
        conv = self.conv1
        count = x.size(0)
        for size, k, s, p, d in zip(x.shape[2:], conv.kernel_size,
                                    conv.stride, conv.padding,
                                    conv.dilation):
            count *= (size + 2 * p - d * (k - 1) - 1) // s + 1
        return count

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor,
                              count: int) -> None:
        """What ``nn.BatchNorm2d`` does to its buffers in training mode."""
        bn = self.bn1
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
        else:
            factor = bn.momentum
        # the running variance is the unbiased estimate over N * H * W
        unbiased = var * (count / max(count - 1, 1))
        bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)

    def extra_repr(self) -> str:
        return f'chunk_size={self.chunk_size}'
