"""Floating-point operations of locally trained classifiers.

Counts are taken with :class:`torch.utils.flop_counter.FlopCounterMode`,
which counts the matrix products and convolutions of every operator that
actually runs (forward and, when autograd runs, backward). It counts one
multiply-add as **two** FLOPs and ignores element-wise operators
(BatchNorm, ReLU, pooling, additions, the loss functions). The figures
usually quoted for CNNs ("0.25 GFLOPs" for a CIFAR ResNet-110, "3.6
GFLOPs" for a ResNet-34) are multiply-accumulates (MACs) of the
convolutions and linear layers: ``MACs = FLOPs / 2``. Every report below
gives both.

:func:`count_forward_flops` follows the convention of the local-learning
papers: the *forward* cost per image of the backbone, of the network's own
classifier and of every auxiliary network (its whole training-time loss
computation, e.g. InfoPro's decoder and PredSim's similarity branch), on
one crop of the training size. :func:`count_train_step_flops` counts a
whole training iteration instead (forward, backward and optimizer step,
where the backward of a convolution costs about twice its forward).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from auglocal_det.engine.profiling import count_flops, module_profile

__all__ = [
    'FlopsReport', 'count_flops', 'count_forward_flops',
    'count_train_step_flops'
]


@dataclass
class FlopsReport:
    """Forward FLOPs per image of a locally trained classifier.

    All figures are FLOPs as counted by ``FlopCounterMode`` (two per
    multiply-add); the ``*_macs`` properties halve them.

    Attributes:
        backbone (float): The backbone's local layers.
        head (float): The network's own classifier (pooling + FC).
        aux (list[float]): Every auxiliary network, in module order,
            including the computation of its local loss.
    """
    backbone: float = 0.
    head: float = 0.
    aux: List[float] = field(default_factory=list)

    @property
    def network(self) -> float:
        """float: Backbone and classifier: the cost of inference."""
        return self.backbone + self.head

    @property
    def aux_total(self) -> float:
        """float: All auxiliary networks together."""
        return float(sum(self.aux))

    @property
    def total(self) -> float:
        """float: Network and auxiliary networks: the forward cost of one
        training iteration per image."""
        return self.network + self.aux_total

    @property
    def network_macs(self) -> float:
        """float: :attr:`network` in multiply-accumulates."""
        return self.network / 2

    @property
    def aux_macs(self) -> float:
        """float: :attr:`aux_total` in multiply-accumulates."""
        return self.aux_total / 2

    @property
    def total_macs(self) -> float:
        """float: :attr:`total` in multiply-accumulates."""
        return self.total / 2

    def to_dict(self) -> Dict[str, Any]:
        """Plain-Python form (FLOPs and MACs), e.g. for JSON."""
        return dict(
            backbone_flops=self.backbone,
            head_flops=self.head,
            aux_flops=list(self.aux),
            network_flops=self.network,
            aux_total_flops=self.aux_total,
            total_flops=self.total,
            network_macs=self.network_macs,
            aux_macs=self.aux_macs,
            total_macs=self.total_macs)


def count_forward_flops(model: nn.Module,
                        image_size: Union[int, Sequence[int], None] = None,
                        batch_size: int = 1,
                        device: Union[str, torch.device, None] = None
                        ) -> FlopsReport:
    """Forward FLOPs per image of a :class:`LocalImageClassifier`.

    Counts with :func:`~auglocal_det.engine.profiling.module_profile`, in
    eval mode (every module keeps its mode; the count does not depend on
    it) on a synthetic batch, each output of the model's module loop
    (``forward_modules``: the backbone) and each of its local steps
    (``local_steps``: the module forward and everything its loss
    computes). A step's cost beyond the backbone modules it ran is
    its auxiliary network's; for the last step, beyond the network's own
    classifier, it is the rule's extra training-time computation (MLAAN's
    cascade through the classifier), reported as one more auxiliary entry
    when it is not zero. Works for every classifier that implements the
    two generators, MLAAN included.

    Args:
        model (nn.Module): A ``LocalImageClassifier`` or a subclass.
        image_size (int | Sequence[int], optional): Input crop size.
            Defaults to None: ``model.image_size``.
        batch_size (int): Images per counted batch; the result is divided
            by it. Defaults to 1.
        device (str | torch.device, optional): Device of the input. Defaults
            to None: the device of the model's parameters. A model built
            on the ``'meta'`` device is counted without computing anything.

    Returns:
        FlopsReport: The FLOPs per image. ``aux[j]`` is the auxiliary
        network of module j (0 for a module without a loss of its own).
    """
    profile = module_profile(model, image_size, batch_size, device)
    modules, head = profile['module_flops'], profile['head_flops']
    report = FlopsReport(
        backbone=sum(modules), head=head, aux=[0.] * model.num_aux)
    previous = -1
    for index, flops in zip(profile['step_indices'],
                            profile['step_flops']):
        # the step ran the forward of modules previous + 1 .. index
        extra = flops - sum(modules[previous + 1:index + 1])
        if index < model.num_aux:
            report.aux[index] = extra
        elif extra - head > 0:
            report.aux.append(extra - head)
        previous = index
    return report


def count_train_step_flops(model: nn.Module,
                           data: dict,
                           optim_wrapper: Any,
                           batch_size: Optional[int] = None) -> float:
    """FLOPs per image of one real ``train_step`` (forward + backward).

    The step really runs: the parameters are updated as in training.

    Args:
        model (nn.Module): The model, in the mode it is trained in.
        data (dict): A batch as given by the dataloader.
        optim_wrapper: The optimizer wrapper passed to ``train_step``.
        batch_size (int, optional): Images in ``data``. Defaults to None:
            ``len(data['inputs'])``.

    Returns:
        float: FLOPs per image.
    """
    if batch_size is None:
        batch_size = len(data['inputs'])
    flops, _ = count_flops(model.train_step, data, optim_wrapper)
    return flops / batch_size
