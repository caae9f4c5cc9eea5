"""Image classifier trained by supervised local learning.

The iteration is written once, as a contract between three parts:

- :meth:`LocalImageClassifier.forward_modules`, the one loop over the local
  modules (each runs on the detached output of the previous one);
- :meth:`LocalImageClassifier.local_steps`, which turns that loop into
  *local steps*: per local loss, the loss and its named parts, the logits,
  and the parameters whose gradients the loss makes final
  (:class:`LocalStep`). A rule with other losses (MLAAN) overrides this
  generator and nothing else of the iteration;
- ``run_iteration`` (:class:`LocalTrainingMixin`, ``local_training.py``),
  the one driver of a training iteration, which ``train_step`` is.

``loss()`` (the reference definition), ``extract_feat``, ``predict``
(:class:`LocalPredictionMixin`, ``local_prediction.py``) and the FLOP
counter consume the same generators.
"""
import inspect
import itertools
from collections import OrderedDict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel

from auglocal_det.errors import InputError
from auglocal_det.local_protocol import AuxHeadPlacement
from auglocal_det.registry import AUX_HEAD_PLACEMENTS, MODELS
from auglocal_det.structures import ClsDataSample

from ..aux_heads import AuxBatch, build_aux_heads
from ..heads import GlobalPoolFcHead
from .local_prediction import LocalPredictionMixin
from .local_training import LocalStep, LocalTrainingMixin

__all__ = ['LocalImageClassifier', 'LocalStep']

#: ImageNet mean and standard deviation of RGB images in [0, 255].
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module()
class LocalImageClassifier(LocalTrainingMixin, LocalPredictionMixin,
                           BaseModel):
    """Image classifier whose local modules each learn from their own loss.

    The backbone's local layers (``backbone.local_layers()``: the stem and
    every residual block) are grouped into K local modules. Module j
    (j < K - 1) is trained only by the loss of its auxiliary head
    ``aux_heads[j]``; the last module is trained by the cross-entropy of
    the network's own classifier ``head``. No gradient crosses between
    modules: module j receives the detached output of module j - 1.

    The reference definition of one iteration is: for j = 0..K-1,
    ``h_j = f_j(sg(h_{j-1}))``, ``loss_j`` = local loss of module j, and the
    gradients are those of ``sum_j loss_j``. ``forward(mode='loss')``
    returns exactly these losses in one graph. :meth:`train_step` produces
    the same gradients while calling backward on each ``loss_j`` as soon as
    it exists, so module j's graph is freed before module j + 1 runs, and
    steps the optimizer once per iteration.

    With ``rule='bp'`` the same network is trained end to end (one loss,
    one backward), which is the baseline the local rules are compared with.

    Args:
        backbone (dict): Config of a backbone with ``local_layers()`` and
            ``local_layer_specs()``, e.g. ``dict(type='LocalResNet',
            depth=34)``.
        aux_head (dict | list[dict], optional): Config of the auxiliary
            head, used for every local module but the last (or one config
            per head), e.g. ``dict(type='AugLocalAuxHead', depth=4)``. The
            classifier adds
            ``layer_index``, ``layer_specs``, ``module_index``,
            ``num_aux``, ``num_classes`` and ``image_size``. Must be None
            when ``rule='bp'``. Defaults to None.
        head (dict, optional): Arguments of the network's classifier
            (:class:`GlobalPoolFcHead`): ``in_channels`` (defaults to the
            backbone's last layer's channels); with a ``type``, the config
            of another registered head (e.g. ``VGGClassifierHead``), which
            also receives ``num_classes``. Defaults to None.
        num_classes (int): Number of classes. Defaults to 1000.
        image_size (int | Sequence[int]): Training crop size, passed to the
            auxiliary heads whose shapes depend on it. Defaults to 224.
        split_points (Sequence[int], optional): Index of the last local
            layer of each module; the last module always ends at the last
            layer. None means one module per local layer (K = number of
            local layers). Defaults to None.
        rule (str): ``'local'`` or ``'bp'``. Defaults to ``'local'``.
        data_preprocessor (dict, optional): Config of the data
            preprocessor. Defaults to MMEngine's ``ImgDataPreprocessor``
            with ImageNet mean/std and ``bgr_to_rgb=False`` (the datasets
            emit RGB).
        aux_head_offload (dict, optional): Keep the auxiliary heads'
            parameters, buffers and optimizer state in host memory between
            their uses (``HostOffload`` of ``engine/offload``;
            keys ``host``, default ``'cpu'``, or ``'file'`` for training
            on the CPU (memory-mapped files, out of the process's resident
            memory between uses), ``pin_memory`` and ``directory``, where
            ``host='file'`` puts its files): in
            training each head is brought in just before its module's loss
            (the next one on a side stream on CUDA) and goes back right
            after its per-layer update, so it needs
            ``LayerwiseLocalOptimWrapper`` (and an optimizer without
            ``fused`` or ``capturable`` state). The updates are unchanged.
            Under data parallelism a head waits on the device for its
            all-reduce. The reference ``forward(mode='loss')`` brings the
            heads in and leaves them (its backward comes later); the next
            ``train_step`` sends them back. Defaults to None: the heads stay
            where the model is.
        init_cfg (dict | list[dict], optional): Initialization config.
            Defaults to None.

    Examples:
        >>> model = MODELS.build(dict(
        ...     type='LocalImageClassifier',
        ...     backbone=dict(type='LocalResNet', depth=34),
        ...     aux_head=dict(type='AugLocalAuxHead', depth=4),
        ...     num_classes=1000))
        >>> model.num_modules
        17
    """

    def __init__(self,
                 backbone: dict,
                 aux_head: Optional[Union[dict, List[dict]]] = None,
                 head: Optional[dict] = None,
                 num_classes: int = 1000,
                 image_size: Union[int, Sequence[int]] = 224,
                 split_points: Optional[Sequence[int]] = None,
                 rule: str = 'local',
                 data_preprocessor: Optional[dict] = None,
                 aux_head_offload: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(
                mean=list(IMAGENET_MEAN),
                std=list(IMAGENET_STD),
                bgr_to_rgb=False)
        if isinstance(data_preprocessor, dict):
            data_preprocessor = dict(data_preprocessor)
            data_preprocessor.setdefault('type', 'ImgDataPreprocessor')
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if rule not in ('local', 'bp'):
            raise InputError(
                f"model.rule must be 'local' or 'bp', got {rule!r}")
        if rule == 'bp' and aux_head is not None:
            raise InputError(
                "model.rule='bp' trains end to end and builds no auxiliary "
                'head; set model.aux_head=None')
        self.rule = rule
        self.num_classes = num_classes
        self.image_size = image_size

        # Training from scratch updates the BN statistics; the backbone's
        # own default (mmdet's norm_eval=True) is the fine-tuning setting.
        backbone = dict(backbone)
        backbone.setdefault('norm_eval', False)
        self.backbone = MODELS.build(backbone)
        specs = self.backbone.local_layer_specs()
        self.layer_specs = specs
        num_layers = len(specs)
        if rule == 'bp':
            self.module_ranges = [(0, num_layers - 1)]
        else:
            self.module_ranges = self._split(split_points, num_layers)
        num_aux = self.num_modules - 1
        if num_aux > 0 and aux_head is None:
            raise InputError(
                f"model.rule='local' with {self.num_modules} local modules "
                'needs a model.aux_head config')

        self.aux_heads = build_aux_heads(
            aux_head,
            specs,
            split_points=[last for _, last in self.module_ranges],
            num_classes=num_classes,
            image_size=image_size)

        head = dict(head or {})
        head.setdefault('type', GlobalPoolFcHead)
        head.setdefault('in_channels', specs[-1].out_channels)
        self.head = MODELS.build(dict(num_classes=num_classes, **head))
        width = max(2, len(str(self.num_modules - 1)))
        self._tags = [f'l{j:0{width}d}' for j in range(self.num_modules)]
        self._offload: Optional[AuxHeadPlacement] = None
        #: where the heads are between their uses
        self.head_placement = AuxHeadPlacement()
        if aux_head_offload is not None:
            self._offload = self._build_offload(aux_head_offload)
            self.head_placement = self._offload

    def _build_offload(self, cfg: dict) -> AuxHeadPlacement:
        """The ``HostOffload`` of ``model.aux_head_offload``."""
        if self.rule == 'bp':
            raise InputError(
                "model.aux_head_offload needs auxiliary heads; model.rule="
                "'bp' has none")
        offload_type = AUX_HEAD_PLACEMENTS.get('HostOffload')
        # its own keyword arguments, all but the modules
        known = list(inspect.signature(offload_type).parameters)[1:]
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise InputError(
                f'model.aux_head_offload has unknown keys {unknown}; it '
                f'takes {", ".join(map(repr, known))}')
        try:
            return offload_type(self.aux_heads, **cfg)
        except RuntimeError as err:  # torch.device of a bad string
            raise InputError(
                f'model.aux_head_offload.host={cfg.get("host")!r}: '
                f'{err}') from None
        except ValueError as err:  # directory, pin_memory
            raise InputError(f'model.aux_head_offload: {err}') from None

    @property
    def aux_head_offload(self) -> Optional[AuxHeadPlacement]:
        """HostOffload: Where the auxiliary heads rest between uses (None
        without ``aux_head_offload``)."""
        return self._offload

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # called first by state_dict() (and by MMEngine's checkpoint
        # writer): the host copies must be complete before they are read
        self.head_placement.synchronize()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):
        self.head_placement.synchronize()
        super()._load_from_state_dict(*args, **kwargs)

    def pipeline_refusal(self, num_stages: int) -> Optional[str]:
        """Why the model cannot be trained as a pipeline of ``num_stages``
        stages with the updates of sequential training, or None if it can.
        """
        if self.rule == 'bp':
            return ("model.rule='bp' cannot be pipelined: end-to-end "
                    "backpropagation's backward crosses every stage; use "
                    "rule='local' or model_wrapper_cfg.type="
                    "'LocalDistributedDataParallel'")
        if self._offload is not None:
            return ('model.aux_head_offload sends each auxiliary head back '
                    'to host memory after its per-layer update, which '
                    'LocalPipelineParallel does not make (it takes one '
                    'optimizer step per update); set model.aux_head_offload'
                    '=None')
        return None

    @staticmethod
    def _split(split_points: Optional[Sequence[int]],
               num_layers: int) -> List[Tuple[int, int]]:
        """Turn split points into inclusive ``(first, last)`` layer ranges.
        """
        if split_points is None:
            ends = list(range(num_layers))
        else:
            ends = [int(i) for i in split_points]
            if ends and ends[-1] == num_layers - 1:
                ends = ends[:-1]
            if any(b <= a for a, b in zip(ends, ends[1:])) or any(
                    not 0 <= i < num_layers - 1 for i in ends):
                raise InputError(
                    'model.split_points must be increasing layer indices in '
                    f'[0, {num_layers - 1}], got {list(split_points)}')
            ends.append(num_layers - 1)
        starts = [0] + [end + 1 for end in ends[:-1]]
        return list(zip(starts, ends))

    # ------------------------------------------------------------ structure
    @property
    def num_modules(self) -> int:
        """int: Number of local modules K (1 for ``rule='bp'``)."""
        return len(self.module_ranges)

    @property
    def num_aux(self) -> int:
        """int: Number of auxiliary heads (K - 1)."""
        return len(self.aux_heads)

    def local_modules(self) -> List[nn.Sequential]:
        """The local modules, in order, as (unregistered) sequentials of the
        backbone's local layers."""
        layers = self.backbone.local_layers()
        return [
            nn.Sequential(*layers[first:last + 1])
            for first, last in self.module_ranges
        ]

    def module_parameters(self, index: int,
                          module: Optional[nn.Module] = None
                          ) -> Iterator[nn.Parameter]:
        """Parameters trained by the loss of local module ``index``.

        These are the module's backbone parameters and those of its
        auxiliary head (of ``head`` for the last module).

        Args:
            index (int): Module index j.
            module (nn.Module, optional): The module as returned by
                :meth:`local_modules`, to avoid building it again.

        Returns:
            Iterator[Parameter]: The parameters.
        """
        if module is None:
            module = self.local_modules()[index]
        loss_head = (
            self.aux_heads[index] if index < self.num_aux else self.head)
        return itertools.chain(module.parameters(), loss_head.parameters())

    # ------------------------------------------------------------ helpers
    def aux_batch(self, inputs: torch.Tensor,
                   data_samples: Optional[List[ClsDataSample]]) -> AuxBatch:
        """What the heads read besides the features.

        Args:
            inputs (Tensor): Preprocessed images.
            data_samples (list[ClsDataSample]): Samples with ``gt_label``.

        Returns:
            AuxBatch: The labels, and the [0, 1] images on demand when a
            head reads them (only then does the batch keep ``inputs``
            alive).
        """
        if not data_samples:
            raise InputError(
                'training needs data_samples with gt_label (check the '
                "dataset's pipeline: it must end with PackClsInputs)")
        labels = torch.cat([s.gt_label for s in data_samples]).to(
            inputs.device)
        if not self.reads_images():
            return AuxBatch(labels=labels)
        return AuxBatch(
            labels=labels, make_images=lambda: self.unnormalize(inputs))

    def reads_images(self, modules: Optional[range] = None) -> bool:
        """Whether the auxiliary head of one of ``modules`` (default: all)
        reads the [0, 1] images (InfoPro's reconstruction target)."""
        if modules is None:
            modules = range(self.num_aux)
        return any(self.aux_heads[j].reads_images for j in modules
                   if j < self.num_aux)

    def unnormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Recover the images in [0, 1] from the preprocessed inputs.

        Inverts the preprocessor's normalisation (if any) and divides by
        255; this is the reconstruction target of InfoPro.

        Args:
            inputs (Tensor): Normalised images, (N, 3, H, W).

        Returns:
            Tensor: Images in [0, 1], without gradient.
        """
        pre = self.data_preprocessor
        images = inputs.detach()
        if getattr(pre, '_enable_normalize', False):
            images = images * pre.std + pre.mean
        return (images / 255.).clamp_(0., 1.)

    def _module_loss(
        self, index: int, feat: torch.Tensor, batch: AuxBatch
    ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """Local loss of module ``index`` on its output ``feat``.

        Returns:
            tuple: The weighted loss parts (their sum is the local loss)
            and the logits (or None).
        """
        if index < self.num_aux:
            self.head_placement.before_loss(index, feat.device)
            losses, logits = self.aux_heads[index].loss(feat, batch)
            if not losses:
                raise RuntimeError(
                    f'auxiliary head {index} returned no loss')
            return losses, logits
        logits = self.head(feat)
        return dict(loss_cls=F.cross_entropy(logits, batch.labels)), logits

    def _tag(self, index: int) -> str:
        """Log name of module ``index``: ``'lXX'`` (``'cls'`` for BP)."""
        return 'cls' if self.rule == 'bp' else self._tags[index]

    def _module_desc(self, index: int) -> str:
        """E.g. ``'local module 3 (layer1.2, loss_l03)'``, for messages."""
        first, last = self.module_ranges[index]
        names = self.layer_specs[first].name
        if last != first:
            names += f' .. {self.layer_specs[last].name}'
        return f'local module {index} ({names}, loss_{self._tag(index)})'

    # ------------------------------------------------------------ forward
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[ClsDataSample]] = None,
                mode: str = 'tensor'):
        """The three modes of MMEngine models.

        Args:
            inputs (Tensor): Preprocessed images, (N, 3, H, W).
            data_samples (list[ClsDataSample], optional): Annotations.
            mode (str): ``'tensor'`` (logits of the network's classifier),
                ``'loss'`` (dict of the reference losses, in one graph) or
                ``'predict'`` (list of data samples with predictions).

        Returns:
            Tensor | dict | list[ClsDataSample]: Depending on ``mode``.
        """
        if mode == 'tensor':
            return self.head(self.extract_feat(inputs))
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}".')

    def forward_modules(self,
                        inputs: torch.Tensor,
                        modules: Optional[range] = None
                        ) -> Iterator[torch.Tensor]:
        """The loop over the local modules: yield each module's output.

        Module j runs on the detached output of module j - 1 (the input
        for j = 0), with autograd on only where :meth:`module_needs_grad`
        says so. The output of module j is computed when it is requested,
        so a caller that back-propagates a module's loss before asking for
        the next output holds one module's graph at a time.

        Args:
            inputs (Tensor): Preprocessed images, or, when ``modules``
                starts at module i > 0, the output of module i - 1.
            modules (range, optional): The consecutive modules to run (a
                pipeline stage runs its own). Defaults to None: all.

        Yields:
            Tensor: The output of module j, for j in ``modules``.
        """
        local_modules = self.local_modules()
        if modules is None:
            modules = range(len(local_modules))
        feat = inputs
        del inputs  # module 0's autograd graph holds it while it needs it
        for index in modules:
            with torch.set_grad_enabled(torch.is_grad_enabled()
                                        and self.module_needs_grad(index)):
                feat = local_modules[index](feat.detach())
            yield feat

    def module_needs_grad(self, index: int) -> bool:
        """Whether anything back-propagates through module ``index``'s
        output as :meth:`forward_modules` computes it (True here: its
        local loss does)."""
        return True

    def local_steps(self,
                    inputs: torch.Tensor,
                    batch: AuxBatch,
                    modules: Optional[range] = None) -> Iterator[LocalStep]:
        """Yield the local losses of one iteration, one at a time.

        Module j's forward and local loss run when step j is requested;
        the step carries the parameters its loss trains (the module's and
        its head's): no later loss reaches them.

        Args:
            inputs (Tensor): Preprocessed images (or the output of the
                module before ``modules``, see :meth:`forward_modules`).
            batch (AuxBatch): Labels and images.
            modules (range, optional): The consecutive modules whose steps
                to yield. Defaults to None: all.

        Yields:
            LocalStep: One step per local module.
        """
        if modules is None:
            modules = range(self.num_modules)
        local_modules = self.local_modules()
        outputs = self.forward_modules(inputs, modules)
        del inputs  # let go of the network input after the first module
        for index, feat in zip(modules, outputs):
            losses, logits = self._module_loss(index, feat, batch)
            yield LocalStep(
                index=index,
                name=self._module_desc(index),
                output=feat,
                loss=sum(losses.values()),
                losses=losses,
                logits={} if logits is None else {'': logits},
                params=list(
                    self.module_parameters(index, local_modules[index])))

    def extract_feat(
        self,
        inputs: torch.Tensor,
        all_modules: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Run the backbone's local layers.

        Args:
            inputs (Tensor): Preprocessed images.
            all_modules (bool): Return the output of every local module
                instead of the last feature map only. Defaults to False.

        Returns:
            Tensor | tuple[Tensor]: The last feature map, or one output
            per local module.
        """
        outs = tuple(self.forward_modules(inputs))
        return outs if all_modules else outs[-1]

    def loss(self, inputs: torch.Tensor,
             data_samples: List[ClsDataSample]) -> Dict[str, torch.Tensor]:
        """The reference losses of one iteration, in one graph.

        Every step's loss depends only on the parameters that step trains
        (module j runs on the detached output of module j - 1), so one
        backward of the sum gives every module the gradient of its own
        local loss. Also returns the top-1 accuracy of every head.

        Args:
            inputs (Tensor): Preprocessed images.
            data_samples (list[ClsDataSample]): Samples with ``gt_label``.

        Returns:
            dict[str, Tensor]: ``loss_lXX`` per step (``loss_cls`` for
            ``rule='bp'``) with its graph, and the detached parts and
            accuracies of :meth:`step_log`.
        """
        batch = self.aux_batch(inputs, data_samples)
        losses: Dict[str, torch.Tensor] = OrderedDict()
        for step in self.local_steps(inputs, batch):
            losses.update(self.step_log(step, batch.labels))
            losses[f'loss_{self._tag(step.index)}'] = step.loss
        return losses

