"""A sampler that shards the data over pipeline replicas, not ranks."""
import math
from typing import Optional, Sized

from mmengine.dataset import DefaultSampler
from mmengine.dist import get_dist_info

from auglocal_det.errors import InputError
from auglocal_det.registry import DATA_SAMPLERS

__all__ = ['PipelineSampler']


@DATA_SAMPLERS.register_module()
class PipelineSampler(DefaultSampler):
    """:class:`~mmengine.dataset.DefaultSampler` for pipelined training.

    Under ``LocalPipelineParallel`` the ``num_stages`` ranks of a replica
    train on the same batches (only its first stage reads them), so the
    data set is split into one shard per replica: rank r reads the shard
    of replica ``r // num_stages``. With one stage this is
    ``DefaultSampler``.

    Args:
        dataset (Sized): The data set.
        num_stages (int): Stages per replica, as in
            ``model_wrapper_cfg.num_stages``.
        shuffle (bool): Shuffle the indices every epoch. Defaults to True.
        seed (int, optional): Shuffle seed, shared by all ranks. Defaults
            to None (synchronised random seed).
        round_up (bool): Pad the indices to a multiple of the number of
            replicas. Defaults to True.
    """

    def __init__(self,
                 dataset: Sized,
                 num_stages: int,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 round_up: bool = True) -> None:
        super().__init__(dataset, shuffle=shuffle, seed=seed,
                         round_up=round_up)
        rank, world_size = get_dist_info()
        if num_stages < 1 or world_size % num_stages:
            raise InputError(
                f'train_dataloader.sampler.num_stages={num_stages} must '
                f'divide the number of processes ({world_size})')
        self.num_stages = num_stages
        self.rank = rank // num_stages
        self.world_size = world_size // num_stages
        if self.round_up:
            self.num_samples = math.ceil(len(self.dataset) / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil(
                (len(self.dataset) - self.rank) / self.world_size)
            self.total_size = len(self.dataset)
