"""The Runner the package's tools build."""
from mmengine.runner import Runner

from auglocal_det.registry import RUNNERS

from .checkpoint import trusted_local_checkpoints

__all__ = ['LocalRunner']


@RUNNERS.register_module()
class LocalRunner(Runner):
    """MMEngine's :class:`~mmengine.runner.Runner`, reading the user's
    ``--resume`` and ``load_from`` checkpoints under torch >= 2.6.

    A full training checkpoint holds more than tensors (numpy scalars in
    the message hub, the config text), which torch's default
    ``weights_only=True`` refuses. :meth:`load_or_resume` reads these files
    inside :func:`trusted_local_checkpoints`; nothing else the run loads is
    affected. ``tools/train.py`` and ``tools/test.py`` build this runner
    unless the config names another one in ``runner_type``.
    """

    def load_or_resume(self) -> None:
        """Resume or load ``load_from``, trusting local checkpoint files."""
        with trusted_local_checkpoints():
            return super().load_or_resume()
