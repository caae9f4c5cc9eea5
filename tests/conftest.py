"""Settings shared by the whole test suite."""

import torch

# The unit tests run tiny tensors, for which intra-op threads cost more than
# they give (and make timings erratic on shared CI machines).
torch.set_num_threads(1)
