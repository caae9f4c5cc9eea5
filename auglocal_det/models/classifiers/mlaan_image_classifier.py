"""Image classifier trained with MLAAN's two-stream local losses."""
import itertools
from collections import OrderedDict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from auglocal_det.errors import InputError, InputTypeError
from auglocal_det.registry import MODELS

from ..aux_heads import AuxBatch
from ..aux_heads.mlaan import MLAANAuxHead
from .local_image_classifier import LocalImageClassifier, LocalStep

__all__ = ['MLAANImageClassifier']


@MODELS.register_module()
class MLAANImageClassifier(LocalImageClassifier):
    """Image classifier trained with MLAAN (Zhang et al., arXiv:2406.16633).

    The backbone's local layers are grouped into K local modules f_0 ..
    f_{K-1}; by default every residual block is a module and the stem joins
    the first one (ResNet-34: K = 16, the authors' split). One iteration
    computes, for i = 0 .. K-1 (``s = span``, ``h_{-1}`` = the input)::

        x_i = f_i(sg(x_{i-1}))                      # independent stream
        z_i = f_i(... f_{i-s+1}(sg(h_{i-s})))      # cascaded stream
        loss_i = w_x * L_x(x_i) + w_y * L_y(z_i)     # for i >= s - 1

    where ``h_j`` = ``x_j`` (the same values), ``L_x`` is the loss of the
    independent head and ``L_y`` the cross-entropy of the leap augmented
    module (both in ``aux_heads[i]``, an :class:`MLAANAuxHead`); for the
    last module both streams go through the network's own classifier
    (``head``) with cross-entropy, weighted by ``last_loss_weights``. The
    cascade of module ``s - 1`` starts at the input image, so the first
    modules (which have no loss of their own) learn through it; the stem
    (local layer 0) runs once per iteration, as in the authors' code: its
    output, with its graph, is shared by both streams, which then run the
    rest of module 0 each. A parameter of module j therefore receives the
    gradients of ``loss_j`` (independent stream) and of the cascades of
    ``loss_j .. loss_{j+s-1}``.

    The reference definition of the iteration's gradients is those of
    ``sum_i loss_i`` with exactly these detach points;
    ``forward(mode='loss')`` returns the ``loss_i`` in one graph. Only the
    steps differ from :class:`LocalImageClassifier`
    (:meth:`local_steps`): the inherited ``train_step`` back-propagates
    each ``loss_i`` as soon as it exists (the cascade recomputes its
    modules from the detached ``h_{i-s}``, so every step's graph is freed
    before the next step runs), reports a parameter as final only with the
    last loss that reaches it, steps the optimizer once, and then
    :meth:`after_update` moves every EMA twin of the leap augmented
    modules one step towards its primary layer.

    Each step logs the accuracy of both streams: ``acc_lXX`` is the
    cascaded stream's (the leap augmented module's prediction, which the
    w_y-weighted loss trains), ``acc_lXX_x`` the independent head's.

    Args:
        backbone (dict): Backbone config (``LocalResNet`` or
            ``LocalCifarResNet``).
        aux_head (dict | list[dict], optional): Config of the
            :class:`MLAANAuxHead` of every module but the last (its
            ``independent_head`` may be DGL's or InfoPro's head). ``span``
            and ``loss_weights`` are set from this classifier's arguments.
            Defaults to None, i.e. ``dict(type='MLAANAuxHead')``.
        head (dict, optional): Arguments of the network's classifier.
            Defaults to None.
        num_classes (int): Number of classes. Defaults to 1000.
        image_size (int | Sequence[int]): Training crop size. Defaults to
            224.
        split_points (Sequence[int], optional): Index of the last local
            layer of each module. Defaults to None: one module per residual
            block, the stem joining the first (K = number of blocks).
        span (int): Modules spanned by the cascaded stream: 3 in the
            authors' ImageNet code, 2 in their CIFAR code. The first
            ``span - 1`` modules have no loss of their own. Defaults to 3.
        loss_weights (Sequence[float]): ``(w_x, w_y)``, the weights of the
            independent and cascaded streams. Defaults to (0.001, 0.999).
        last_loss_weights (Sequence[float], optional): ``(w_x, w_y)`` of
            the last module, whose streams both go through ``head``. The
            authors' ImageNet code uses ``loss_weights`` there; their CIFAR
            code back-propagates the cascaded stream's cross-entropy alone,
            ``(0, 1)``. Defaults to None: ``loss_weights``.
        rule (str): Must be ``'local'``; accepted so that configs can
            inherit from a ``LocalImageClassifier`` config. Defaults to
            ``'local'``.
        data_preprocessor (dict, optional): See
            :class:`LocalImageClassifier`.
        aux_head_offload (dict, optional): Must be None: MLAAN's cascades
            and EMA twins read heads and layers of other modules, so its
            heads cannot rest in host memory between uses. Accepted so
            that the refusal names the key. Defaults to None.
        init_cfg (dict | list[dict], optional): Initialization config.
            Defaults to None.

    Examples:
        >>> model = MODELS.build(dict(
        ...     type='MLAANImageClassifier',
        ...     backbone=dict(type='LocalResNet', depth=34),
        ...     aux_head=dict(type='MLAANAuxHead'),
        ...     span=3))
        >>> model.num_modules
        16
    """

    def __init__(self,
                 backbone: dict,
                 aux_head: Optional[Union[dict, List[dict]]] = None,
                 head: Optional[dict] = None,
                 num_classes: int = 1000,
                 image_size: Union[int, Sequence[int]] = 224,
                 split_points: Optional[Sequence[int]] = None,
                 span: int = 3,
                 loss_weights: Sequence[float] = (0.001, 0.999),
                 last_loss_weights: Optional[Sequence[float]] = None,
                 rule: str = 'local',
                 data_preprocessor: Optional[dict] = None,
                 aux_head_offload: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if aux_head_offload is not None:
            raise InputError(
                'MLAANImageClassifier cannot keep its auxiliary heads in '
                'host memory: the cascaded stream and the EMA twins use '
                'heads and layers of other modules than the one being '
                'updated; set model.aux_head_offload=None')
        if rule != 'local':
            raise InputError(
                f"MLAANImageClassifier trains with local losses (model.rule="
                f"'local'); got rule={rule!r}. Use LocalImageClassifier for "
                "rule='bp'")
        if int(span) != span or span < 1:
            raise InputError(
                f'model.span must be a positive integer, got {span}')
        weights = self._weight_pair(loss_weights, 'loss_weights')
        last_weights = weights if last_loss_weights is None else \
            self._weight_pair(last_loss_weights, 'last_loss_weights')
        if aux_head is None:
            aux_head = dict(type='MLAANAuxHead')
        cfgs = [aux_head] if isinstance(aux_head, dict) else list(aux_head)
        for cfg in cfgs:
            self._check_head_type(cfg)
        cfgs = [
            dict(cfg, span=int(span), loss_weights=weights) for cfg in cfgs
        ]
        aux_head = cfgs[0] if isinstance(aux_head, dict) else cfgs
        super().__init__(
            backbone=backbone,
            aux_head=aux_head,
            head=head,
            num_classes=num_classes,
            image_size=image_size,
            split_points=split_points,
            rule='local',
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self.span = int(span)
        self.loss_weights = weights
        self.last_loss_weights = last_weights
        num_modules = self.num_modules
        #: Index of the last step whose loss reaches module j.
        self.last_step = [
            min(j + self.span - 1, num_modules - 1)
            for j in range(num_modules)
        ]

    @staticmethod
    def _weight_pair(value: Sequence[float],
                     name: str) -> Tuple[float, float]:
        """``value`` as a pair of floats ``(w_x, w_y)``."""
        weights = tuple(float(w) for w in value)
        if len(weights) != 2:
            raise InputError(
                f'model.{name} must be (w_x, w_y), got {value}')
        return weights

    @staticmethod
    def _check_head_type(cfg: dict) -> None:
        """Refuse auxiliary heads other than :class:`MLAANAuxHead`."""
        head_type = cfg.get('type')
        if isinstance(head_type, str):
            head_type = MODELS.get(head_type)
        if not (isinstance(head_type, type)
                and issubclass(head_type, MLAANAuxHead)):
            raise InputTypeError(
                f'MLAAN needs model.aux_head.type MLAANAuxHead, got '
                f'{cfg.get("type")!r}; put DGL or InfoPro heads in its '
                "independent_head, e.g. aux_head=dict(type='MLAANAuxHead', "
                "independent_head=dict(type='DGLAuxHead'))")

    @staticmethod
    def _split(split_points: Optional[Sequence[int]],
               num_layers: int) -> List[Tuple[int, int]]:
        """Layer ranges of the modules; by default one per residual block,
        with the stem (layer 0) in the first block's module."""
        if split_points is None and num_layers > 2:
            split_points = list(range(1, num_layers))
        return LocalImageClassifier._split(split_points, num_layers)

    # ------------------------------------------------------------ structure
    def has_loss(self, index: int) -> bool:
        """Whether module ``index`` has a loss of its own.

        Args:
            index (int): Module index i.

        Returns:
            bool: ``i >= span - 1`` or i is the last module.
        """
        return index >= self.span - 1 or index == self.num_modules - 1

    def cascade_range(self, index: int) -> Tuple[int, int]:
        """First and last module (inclusive) of the cascade of step i.

        Args:
            index (int): Module index i.

        Returns:
            tuple[int, int]: ``(max(0, i - span + 1), i)``.
        """
        return max(0, index - self.span + 1), index

    def pipeline_refusal(self, num_stages: int) -> Optional[str]:
        """MLAAN runs as one stage only: the cascaded stream of module i
        re-runs modules i - span + 1 .. i, and the EMA twins of its leap
        augmented modules follow layers of later modules."""
        if num_stages == 1:
            return None
        return (f'{type(self).__name__} cannot be pipelined exactly: the '
                f'cascaded stream of module i re-runs modules i - '
                f'{self.span - 1} .. i, and the EMA twins of its leap '
                'augmented modules follow layers of later modules, so every '
                'stage boundary would be crossed; train MLAAN with '
                "model_wrapper_cfg.type='LocalDistributedDataParallel'")

    def module_needs_grad(self, index: int) -> bool:
        """Only modules with a loss of their own back-propagate through
        their independent-stream output."""
        return self.has_loss(index)

    def after_update(self) -> None:
        """Move the EMA twins after every update (:meth:`update_ema`)."""
        self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move every EMA twin one step towards its primary layer.

        ``theta <- m * theta + (1 - m) * theta_primary``.
        ``train_step`` calls it (through :meth:`after_update`) once per
        optimizer update, after the step, so every twin follows the weights
        the next iteration uses
        (as a mean-teacher or momentum encoder does). The authors' code
        averages before the step (a lag of one iteration, negligible at
        m = 0.995) and only for the last twin; averaging after the step is
        also consistent when ``LayerwiseLocalOptimWrapper`` updates modules
        during the iteration. With gradient accumulation the twins move
        only in the iterations that update the weights.
        """
        for aux in self.aux_heads:
            if aux.lam is not None:
                aux.lam.update_ema(
                    self.backbone.get_submodule(aux.lam.ema_source))

    # -------------------------------------------------------------- steps
    def _last_module_loss(
        self, feat: torch.Tensor, cascade: torch.Tensor, batch: AuxBatch
    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """Both streams of the last module through the network's head,
        weighted by ``last_loss_weights``."""
        weight_x, weight_y = self.last_loss_weights
        logits_x = self.head(feat)
        logits_y = self.head(cascade)
        losses = OrderedDict(
            loss_x_ce=weight_x * F.cross_entropy(logits_x, batch.labels),
            loss_y_ce=weight_y * F.cross_entropy(logits_y, batch.labels))
        return losses, OrderedDict([('', logits_y), ('x', logits_x)])

    def _independent_stream(self, stem_out: torch.Tensor,
                            modules: List[nn.Sequential]
                            ) -> Iterator[torch.Tensor]:
        """The independent stream from the stem's output.

        Module 0 continues from ``stem_out`` (detached unless module 0 has
        a loss of its own); modules 1 .. K-1 are the inherited
        :meth:`forward_modules` loop.

        Args:
            stem_out (Tensor): Output of the stem (local layer 0).
            modules (list[nn.Sequential]): :meth:`local_modules`.

        Yields:
            Tensor: The output x_i of module i, for i = 0 .. K-1.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and self.module_needs_grad(0)):
            feat = modules[0][1:](
                stem_out if self.has_loss(0) else stem_out.detach())
        del stem_out  # the first cascade holds it while it needs it
        yield feat
        yield from self.forward_modules(feat, range(1, len(modules)))

    def local_steps(self,
                    inputs: torch.Tensor,
                    batch: AuxBatch,
                    modules: Optional[range] = None) -> Iterator[LocalStep]:
        """Yield the loss of every module that has one, one at a time.

        The forward of step i runs when the step is requested, so a caller
        that back-propagates each loss before asking for the next one holds
        one step's graph at a time. The stem (local layer 0) runs once:
        its output, with its graph, feeds both module 0 of the independent
        stream and the first cascade (which runs the rest of module 0
        again), so the stem's BatchNorm statistics move once per
        iteration.

        Args:
            inputs (Tensor): Preprocessed images.
            batch (AuxBatch): Labels and images.
            modules (range, optional): Must be None or all modules: a
                cascade runs over earlier modules. Defaults to None.

        Yields:
            LocalStep: The step's summed loss, its weighted parts, the
            logits of both streams (``''``: cascaded, ``'x'``: independent)
            and the parameters whose gradients are final once the loss has
            been back-propagated.
        """
        if modules is not None and modules != range(self.num_modules):
            raise InputError(
                f'{type(self).__name__} yields the steps of all its '
                f'{self.num_modules} modules at once (the cascade of '
                f'module i re-runs modules i - {self.span - 1} .. i); got '
                f'modules={modules}')
        modules = self.local_modules()
        num_modules = len(modules)
        # the stem's output with its graph, until the first cascade ran
        stem_out: Optional[torch.Tensor] = modules[0][0](inputs)
        del inputs  # the stem's graph holds it while it needs it
        # detached outputs still needed by a later cascade
        detached: Dict[int, torch.Tensor] = {}
        outputs = self._independent_stream(stem_out, modules)
        for index, feat in enumerate(outputs):
            if not self.has_loss(index):
                detached[index] = feat.detach()
                continue
            first, last = self.cascade_range(index)
            if first == 0:
                cascade = modules[0][1:](stem_out)
                stem_out = None  # no later cascade starts at the input
            else:
                cascade = modules[first](detached[first - 1])
            for j in range(first + 1, last + 1):
                cascade = modules[j](cascade)
            if index < num_modules - 1:
                aux = self.aux_heads[index]
                losses, logits_x, logits_y = aux.loss_both_streams(
                    feat, batch, cascade)
                logits = OrderedDict([('', logits_y), ('x', logits_x)])
                owned = [aux.parameters()]
            else:
                losses, logits = self._last_module_loss(feat, cascade, batch)
                owned = [self.head.parameters()]
            owned += [
                modules[j].parameters() for j in range(num_modules)
                if self.last_step[j] == index
            ]
            detached[index] = feat.detach()
            detached.pop(index - self.span, None)
            del cascade
            yield LocalStep(
                index=index,
                name=self._module_desc(index),
                output=feat,
                loss=sum(losses.values()),
                losses=losses,
                logits=OrderedDict(
                    (k, v) for k, v in logits.items() if v is not None),
                params=list(itertools.chain(*owned)))
