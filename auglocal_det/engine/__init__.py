from .hooks import *  # noqa: F401,F403
from .model_wrappers import *  # noqa: F401,F403
from .offload import *  # noqa: F401,F403
from .optim_wrappers import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
from .schedulers import *  # noqa: F401,F403
