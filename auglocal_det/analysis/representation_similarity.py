"""Linear CKA between the layers of a local-rule model and a BP model.

The similarity analysis of the AugLocal paper (Ma et al., ICLR 2024):
every local layer (the stem and each residual block) of a model trained by
a local rule is compared with the same layer of the same network trained by
back-propagation, on a fixed set of validation images, with linear centred
kernel alignment (CKA; Kornblith et al., "Similarity of Neural Network
Representations Revisited", ICML 2019)::

    CKA(X, Y) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F),  K = XX^T, L = YY^T

where X and Y (n x p, n x q) hold the flattened features of the n images
and H = I - 11^T / n centres them. CKA is 1 for representations equal up
to an orthogonal transform and isotropic scaling.
"""
import glob
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from auglocal_det.engine.runner.checkpoint import (
    load_local_checkpoint,
    read_dumped_config,
)
from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.fileio import save_json_atomic
from auglocal_det.plot_style import new_figure, save_figure
from auglocal_det.registry import DATASETS, MODELS

__all__ = [
    'build_config_model', 'gram_matrix', 'cka_from_grams', 'linear_cka',
    'local_layer_grams', 'load_work_dir_model', 'validation_batch',
    'plot_layerwise_cka', 'representation_similarity'
]


def gram_matrix(feats: torch.Tensor) -> torch.Tensor:
    """``X X^T`` of the flattened features, in float64.

    Args:
        feats (Tensor): (n, ...) features of n samples.

    Returns:
        Tensor: (n, n) Gram matrix.
    """
    x = feats.reshape(len(feats), -1).double()
    return x @ x.t()


def _centre(gram: torch.Tensor) -> torch.Tensor:
    """``H K H``: subtract the row and column means, add the total mean."""
    return (gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) +
            gram.mean())


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor) -> float:
    """Linear CKA from the (uncentred) Gram matrices of two feature sets.

    Args:
        gram_x (Tensor): (n, n) ``X X^T``.
        gram_y (Tensor): (n, n) ``Y Y^T`` of the same n samples.

    Returns:
        float: CKA in [0, 1]; 0 if either representation is constant.
    """
    kx, ky = _centre(gram_x.double()), _centre(gram_y.double())
    denom = torch.sqrt((kx * kx).sum() * (ky * ky).sum())
    if denom <= 0:
        return 0.0
    return float((kx * ky).sum() / denom)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two feature sets of the same n samples.

    Args:
        x (Tensor): (n, ...) features.
        y (Tensor): (n, ...) features.

    Returns:
        float: CKA in [0, 1].
    """
    if len(x) != len(y):
        raise ValueError(f'{len(x)} and {len(y)} samples: CKA compares the '
                         'features of the same samples')
    return cka_from_grams(gram_matrix(x), gram_matrix(y))


@torch.no_grad()
def local_layer_grams(model: nn.Module,
                      inputs: torch.Tensor,
                      batch_size: int = 128) -> List[torch.Tensor]:
    """Gram matrix of the output of every local layer of a classifier.

    The images run through ``model.backbone.local_layers()`` (the stem and
    every block) in eval mode, in chunks of ``batch_size``; only one
    layer's outputs are held at a time.

    Args:
        model (nn.Module): A ``LocalImageClassifier`` (or subclass).
        inputs (Tensor): Preprocessed images (n, 3, H, W).
        batch_size (int): Images per forward. Defaults to 128.

    Returns:
        list[Tensor]: One (n, n) float64 Gram matrix per local layer.
    """
    was_training = model.training
    model.eval()
    grams = []
    feats = inputs
    try:
        for layer in model.backbone.local_layers():
            feats = torch.cat(
                [layer(chunk) for chunk in feats.split(batch_size)])
            grams.append(gram_matrix(feats).cpu())
    finally:
        model.train(was_training)
    return grams


def _find_config(work_dir: str) -> str:
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    if len(configs) != 1:
        what = 'no config' if not configs else (
            f'{len(configs)} configs ({", ".join(configs)})')
        raise InputFileNotFoundError(
            f'work dir {work_dir!r} has {what}; expected the one '
            'tools/train.py dumps there (<work_dir>/<config name>.py)')
    return configs[0]


def _find_checkpoint(work_dir: str) -> str:
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
        local = osp.join(work_dir, osp.basename(path))
        if osp.isfile(local):  # the work dir was moved
            return local
    found = glob.glob(osp.join(work_dir, 'epoch_*.pth'))
    if not found:
        raise InputFileNotFoundError(
            f'work dir {work_dir!r} has no checkpoint (last_checkpoint or '
            'epoch_*.pth)')

    def epoch(path: str) -> int:
        match = re.search(r'epoch_(\d+)\.pth$', path)
        return int(match.group(1)) if match else -1

    return max(found, key=epoch)


def build_config_model(cfg: Config, device: str = 'cpu') -> nn.Module:
    """Build a config's model as the Runner does.

    The data set's top-level ``data_preprocessor`` (its normalisation) is
    merged into the model config unless the model has its own.

    Args:
        cfg (Config): A training config.
        device (str): Device to build on (``'meta'`` builds no weights).
            Defaults to 'cpu'.

    Returns:
        nn.Module: The model.
    """
    model_cfg = dict(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with torch.device(device):
        return MODELS.build(model_cfg)


def load_work_dir_model(
        work_dir: str,
        checkpoint: Optional[str] = None,
        device: str = 'cpu',
        trust_checkpoint: bool = False) -> Tuple[nn.Module, Config, str]:
    """Build the model of a training work dir and load its weights.

    The checkpoint is read with the package's safe loader
    (:func:`~auglocal_det.engine.runner.checkpoint.load_local_checkpoint`).

    Args:
        work_dir (str): Work dir of ``tools/train.py`` (the dumped config,
            ``last_checkpoint`` or ``epoch_*.pth``).
        checkpoint (str, optional): Checkpoint to load instead of the
            latest one.
        device (str): Device of the model. Defaults to 'cpu'.
        trust_checkpoint (bool): Unpickle the checkpoint in full (the user
            vouched for it). Defaults to False.

    Returns:
        tuple: The model (eval mode), its config and the checkpoint path.
    """
    if not osp.isdir(work_dir):
        raise InputFileNotFoundError(f'work dir {work_dir!r} does not exist')
    cfg = read_dumped_config(_find_config(work_dir))
    checkpoint = checkpoint or _find_checkpoint(work_dir)
    model = build_config_model(cfg)
    state = load_local_checkpoint(
        checkpoint, map_location='cpu', trust=trust_checkpoint)
    state = state.get('state_dict', state) if isinstance(state,
                                                         dict) else state
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f'checkpoint {checkpoint!r} does not fit the model of '
            f'{work_dir!r}: {len(missing)} missing keys (e.g. '
            f'{missing[:3]}), {len(unexpected)} unexpected (e.g. '
            f'{unexpected[:3]})')
    return model.to(device).eval(), cfg, checkpoint


def validation_batch(cfg: Config,
                     num_images: int,
                     data_root: Optional[str] = None) -> dict:
    """The first ``num_images`` images of a config's validation set.

    Args:
        cfg (Config): A training config.
        num_images (int): Number of images (fewer if the set is smaller).
        data_root (str, optional): Overrides the data set's ``data_root``.

    Returns:
        dict: ``inputs`` (list of uint8 tensors) and ``data_samples``, as
        the data loader yields them.
    """
    dataset_cfg = dict(cfg.val_dataloader.dataset)
    if data_root is not None:
        dataset_cfg['data_root'] = data_root
    dataset = DATASETS.build(dataset_cfg)
    count = min(int(num_images), len(dataset))
    if count < 2:
        raise InputError('CKA needs at least 2 images; --num-images is '
                         f'{num_images} and the validation set has '
                         f'{len(dataset)}')
    samples = [dataset[i] for i in range(count)]
    return dict(
        inputs=[s['inputs'] for s in samples],
        data_samples=[s['data_samples'] for s in samples])


def _model_grams(model: nn.Module, batch: dict,
                 batch_size: int) -> List[torch.Tensor]:
    device = next(model.parameters()).device
    with torch.no_grad():
        data = model.data_preprocessor(
            dict(
                inputs=[x.to(device) for x in batch['inputs']],
                data_samples=batch['data_samples']), False)
    return local_layer_grams(model, data['inputs'], batch_size)


def plot_layerwise_cka(results: Dict[str, List[float]],
                       path: str,
                       layer_names: Optional[Sequence[str]] = None,
                       reference: str = 'BP') -> None:
    """CKA against the reference model, one line per model; save a PNG.

    Args:
        results (dict[str, list[float]]): Label -> CKA per local layer.
        path (str): Output PNG (written atomically).
        layer_names (Sequence[str], optional): Tick labels.
        reference (str): Name of the reference model. Defaults to 'BP'.
    """
    fig, ax = new_figure()
    for name, values in results.items():
        ax.plot(
            range(len(values)),
            values,
            marker='o',
            markersize=3,
            linewidth=1.6,
            label=name)
    npoints = max((len(v) for v in results.values()), default=0)
    if layer_names and len(layer_names) == npoints:
        step = max(1, npoints // 30)
        ticks = list(range(0, npoints, step))
        ax.set_xticks(ticks)
        ax.set_xticklabels([layer_names[i] for i in ticks],
                           rotation=60, ha='right', fontsize=7)
    ax.set_xlabel('local layer')
    ax.set_ylabel(f'linear CKA with the {reference} model')
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.set_title(f'Representation similarity to {reference}, layer by layer')
    ax.legend(loc='best', fontsize=8)
    save_figure(fig, path)


def representation_similarity(local_work_dirs: Sequence[str],
                              bp_work_dir: str,
                              out: str,
                              num_images: int = 512,
                              names: Optional[Sequence[str]] = None,
                              data_root: Optional[str] = None,
                              batch_size: int = 128,
                              device: str = 'cpu',
                              trust_checkpoint: bool = False) -> dict:
    """Layer-wise linear CKA of local-rule models against a BP model.

    The images are the first ``num_images`` of the BP config's validation
    set, each model normalising them with its own preprocessor.

    Args:
        local_work_dirs (Sequence[str]): Work dirs of local-rule runs.
        bp_work_dir (str): Work dir of the BP run of the same network.
        out (str): Output PNG; the numbers go to the same name with
            ``.json``.
        num_images (int): Number of validation images. Defaults to 512.
        names (Sequence[str], optional): Labels of the local runs.
        data_root (str, optional): Overrides the validation data root.
        batch_size (int): Images per forward. Defaults to 128.
        device (str): Device. Defaults to 'cpu'.
        trust_checkpoint (bool): Unpickle the work dirs' checkpoints in
            full (the user vouched for them); by default they are read
            with the package's safe loader. Defaults to False.

    Returns:
        dict: The numbers written to the JSON file.
    """
    if not out.endswith('.png'):
        raise InputError(f'--out must name a .png file, got {out!r}')
    if names is not None and len(names) != len(local_work_dirs):
        raise InputError(f'--names gives {len(names)} labels for '
                         f'{len(local_work_dirs)} work dirs')
    bp_model, bp_cfg, bp_ckpt = load_work_dir_model(bp_work_dir, None,
                                                    device, trust_checkpoint)
    layer_names = [spec.name for spec in bp_model.layer_specs]
    batch = validation_batch(bp_cfg, num_images, data_root)
    bp_grams = _model_grams(bp_model, batch, batch_size)
    del bp_model
    results, sources = {}, {}
    for index, work_dir in enumerate(local_work_dirs):
        model, _, ckpt = load_work_dir_model(work_dir, None, device,
                                             trust_checkpoint)
        names_here = [spec.name for spec in model.layer_specs]
        if names_here != layer_names:
            raise InputError(
                f'{work_dir!r} and {bp_work_dir!r} hold different networks '
                f'({len(names_here)} and {len(layer_names)} local layers); '
                'CKA compares the same layer of the same network')
        grams = _model_grams(model, batch, batch_size)
        name = names[index] if names else osp.basename(
            osp.normpath(work_dir))
        results[name] = [cka_from_grams(a, b) for a, b in zip(grams, bp_grams)]
        sources[name] = dict(work_dir=work_dir, checkpoint=ckpt)
    plot_layerwise_cka(results, out, layer_names)
    numbers = dict(
        reference=dict(work_dir=bp_work_dir, checkpoint=bp_ckpt),
        num_images=len(batch['inputs']),
        layer_names=layer_names,
        cka=results,
        models=sources)
    save_json_atomic(numbers, out[:-len('.png')] + '.json')
    return numbers
