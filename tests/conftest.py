"""Settings shared by the whole test suite."""

import pytest
import torch

# The unit tests run tiny tensors, for which intra-op threads cost more than
# they give (and make timings erratic on shared CI machines).
torch.set_num_threads(1)


@pytest.fixture(scope='module')
def single_thread():
    """One intra-op thread for a module, restoring the count after it.

    Tiny tensors on a busy CPU: more threads only add contention. A test
    module opts in with ``pytestmark = pytest.mark.usefixtures(
    'single_thread')``.
    """
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)
