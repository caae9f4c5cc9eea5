"""Tests of the auxiliary heads kept in host memory between their uses.

Host and compute device are both the CPU here: the heads still go to
separate host copies and come back as new tensors, so the bookkeeping, the
optimizer state's travels and the exactness of the updates are all
checked; only the side stream of CUDA is not. The tests that train run
with both kinds of host copy, memory (``host='cpu'``) and memory-mapped
files (``host='file'``).
"""
import copy
import os

import pytest
import torch
from common_utils import make_batch, sgd

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.offload import HostOffload
from auglocal_det.engine.optim_wrappers import (
    LayerwiseLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS
from auglocal_det.utils.memory import LiveTensorTracker


def _cfg(offload=None, **aux):
    return dict(
        type='LocalImageClassifier',
        backbone=dict(type='LocalResNet', depth=18, base_channels=8),
        aux_head=dict(type='AugLocalAuxHead', depth=2, **aux),
        num_classes=5,
        image_size=16,
        aux_head_offload=offload)


def _build(offload=None, **aux):
    torch.manual_seed(0)
    return MODELS.build(_cfg(offload, **aux)).train()


def _momentum(optimizer, params):
    return [optimizer.state[p]['momentum_buffer'] for p in params]


#: the two kinds of host copy
HOSTS = ['cpu', 'file']


def _mapped(directory):
    """(mapped bytes, resident bytes) of this process's mappings of files
    in ``directory`` (deleted or not), from /proc/self/smaps."""
    mapped = resident = 0
    inside = False
    with open('/proc/self/smaps') as f:
        for line in f:
            fields = line.split()
            if not fields[0].endswith(':'):  # a mapping's header line
                inside = len(fields) > 5 and fields[5].startswith(
                    str(directory) + os.sep)
            elif inside and fields[0] == 'Size:':
                mapped += int(fields[1]) << 10
            elif inside and fields[0] == 'Rss:':
                resident += int(fields[1]) << 10
    return mapped, resident


def _host_ptrs(offload):
    return {t.data_ptr() for t in offload.host_tensors()}


def _train(model, iters=3, start=0):
    wrapper = LayerwiseLocalOptimWrapper(sgd(model))
    logs = [model.train_step(make_batch(start + it), wrapper)
            for it in range(iters)]
    return wrapper, logs


@pytest.mark.parametrize('host', HOSTS)
@pytest.mark.parametrize('aux', [dict(), dict(with_cp=1)])
def test_same_updates_bit_for_bit(aux, host):
    """Weights, BatchNorm statistics, momentum and logged losses equal
    those of the heads kept in place, exactly, over three iterations (the
    first creates the momentum on the compute device, the later ones bring
    it in from host memory)."""
    ref = _build(**aux)
    model = _build(dict(host=host), **aux)
    ref_wrapper, ref_logs = _train(ref)
    wrapper, logs = _train(model)
    for log, ref_log in zip(logs, ref_logs):
        assert list(log) == list(ref_log)
        for key in ref_log:
            assert torch.equal(log[key], ref_log[key]), key
    state, ref_state = model.state_dict(), ref.state_dict()
    assert list(state) == list(ref_state)
    for key, value in ref_state.items():
        assert torch.equal(state[key], value), key
    for buf, ref_buf in zip(
            _momentum(wrapper.optimizer, list(model.parameters())),
            _momentum(ref_wrapper.optimizer, list(ref.parameters()))):
        assert torch.equal(buf, ref_buf)


@pytest.mark.parametrize('host', HOSTS)
def test_heads_rest_in_host_memory(host):
    """Between iterations every head's parameters, buffers and momentum
    are their host copies; while head j computes, only heads j and j + 1
    are on the compute device, as copies of their own."""
    model = _build(dict(host=host))
    offload = model.aux_head_offload
    assert isinstance(offload, HostOffload)
    seen = []

    def spy(index):
        def hook(module, args):
            ptrs = _host_ptrs(offload)
            on_device = {
                j for j, head in enumerate(model.aux_heads)
                if all(p.data_ptr() not in ptrs for p in head.parameters())
            }
            seen.append((index, set(offload.resident), on_device))
        return hook

    for j, head in enumerate(model.aux_heads):
        head.register_forward_pre_hook(spy(j))
    wrapper, _ = _train(model, iters=2)
    last = model.num_aux - 1
    # the second iteration starts from heads at rest
    second = seen[len(seen) // 2:]
    assert [j for j, _, _ in second] == list(range(model.num_aux))
    for j, resident, on_device in second:
        expected = {j, j + 1} if j < last else {j}
        assert resident == expected
        assert on_device == expected
    assert offload.resident == set()
    ptrs = _host_ptrs(offload)
    for head in model.aux_heads:
        tensors = list(head.parameters()) + list(head.buffers())
        tensors += _momentum(wrapper.optimizer, head.parameters())
        assert all(t.data_ptr() in ptrs for t in tensors)
    # the backbone, the classifier and their momentum stay where they are
    backbone = list(model.backbone.parameters()) + list(
        model.head.parameters())
    assert not any(p.data_ptr() in ptrs for p in backbone)
    assert not any(
        b.data_ptr() in ptrs
        for b in _momentum(wrapper.optimizer, backbone))


@pytest.mark.parametrize('host', HOSTS)
def test_validation_checkpoint_and_resume(host):
    """Predictions bring each head in and send it back; the state dicts
    load into a model without offloading (and back), and training resumed
    from them continues exactly."""
    ref = _build()
    model = _build(dict(host=host))
    ref_wrapper, _ = _train(ref, iters=2)
    wrapper, _ = _train(model, iters=2)
    data = model.data_preprocessor(make_batch(9), False)
    ref.eval()
    model.eval()
    preds = model.predict(**data)
    ref_preds = ref.predict(**data)
    assert model.aux_head_offload.resident == set()
    for pred, ref_pred in zip(preds, ref_preds):
        assert torch.equal(pred.aux_pred_labels, ref_pred.aux_pred_labels)
        assert torch.equal(pred.pred_score, ref_pred.pred_score)
    ref.train()
    model.train()

    # resume an offloading run from the plain run's checkpoint and the
    # reverse: both continue as the plain run does (the optimizer states
    # are copied as a checkpoint file would: loading keeps their tensors)
    resumed = _build(dict(host=host))
    resumed.load_state_dict(ref.state_dict())
    resumed_wrapper = LayerwiseLocalOptimWrapper(sgd(resumed))
    resumed_wrapper.load_state_dict(copy.deepcopy(ref_wrapper.state_dict()))
    plain = _build()
    plain.load_state_dict(model.state_dict())
    plain_wrapper = LayerwiseLocalOptimWrapper(sgd(plain))
    plain_wrapper.load_state_dict(copy.deepcopy(wrapper.state_dict()))
    for it in (2, 3):
        ref.train_step(make_batch(it), ref_wrapper)
        resumed.train_step(make_batch(it), resumed_wrapper)
        plain.train_step(make_batch(it), plain_wrapper)
    for other in (resumed, plain):
        for key, value in ref.state_dict().items():
            assert torch.equal(other.state_dict()[key], value), key


def test_needs_the_per_layer_step_and_checks_its_keys():
    model = _build(dict(host='cpu'))
    with pytest.raises(InputError, match='LayerwiseLocalOptimWrapper'):
        model.train_step(make_batch(0), LocalOptimWrapper(sgd(model)))
    with pytest.raises(InputError, match="unknown keys \\['device'\\]"):
        _build(dict(device='cpu'))
    with pytest.raises(InputError, match='aux_head_offload.host'):
        _build(dict(host='nowhere'))
    with pytest.raises(InputError, match='auxiliary heads'):
        MODELS.build(dict(
            type='LocalImageClassifier',
            backbone=dict(type='LocalResNet', depth=18, base_channels=8),
            num_classes=5, rule='bp', aux_head_offload=dict()))


def test_release_with_a_gradient_is_a_bug():
    head = torch.nn.Linear(2, 2)
    offload = HostOffload([head])
    offload.fetch(0, torch.device('cpu'))
    head(torch.ones(1, 2)).sum().backward()
    with pytest.raises(RuntimeError, match='gradient still alive'):
        offload.release(0)


def test_count_leaves_out_the_host_copies():
    """On the meta device (the benchmark's dry run) the host copies are
    meta tensors too; a tracker that leaves them out counts what the
    compute device would hold: the heads at rest cost it nothing."""
    with torch.device('meta'):
        ref = _build().to('meta')
        model = _build(dict(host='cpu')).to('meta')
    peaks = []
    for net in (ref, model):
        # a meta tensor has no value to check
        wrapper = LayerwiseLocalOptimWrapper(sgd(net), check_finite=False)
        net.train_step(make_batch(0), wrapper)  # creates the momentum
        offload = net.aux_head_offload
        tracker = LiveTensorTracker(
            net, wrapper.optimizer,
            exclude=offload.host_tensors() if offload else None)
        with tracker:
            net.train_step(make_batch(1), wrapper)
        peaks.append(tracker.report)
    ref_report, report = peaks
    heads = sum(p.numel() * 4 for p in model.aux_heads.parameters())
    assert len(model.aux_head_offload.host_tensors()) == len(
        list(model.aux_heads.parameters())) * 2 + len(
            list(model.aux_heads.buffers()))
    # at rest: neither the heads' parameters nor their momentum
    assert ref_report.baseline_bytes - report.baseline_bytes >= 2 * heads
    assert report.peak_bytes < ref_report.peak_bytes


@pytest.mark.parametrize('host', HOSTS)
def test_a_failed_iteration_leaves_nothing_behind(host):
    """An error in the middle of an iteration drops the gradients of the
    heads on the device and sends them back, so the next iteration
    trains."""
    model = _build(dict(host=host))
    wrapper = LayerwiseLocalOptimWrapper(sgd(model))
    model.train_step(make_batch(0), wrapper)

    def fail(module, args, out):
        raise RuntimeError('injected')

    # after head 4's forward, before its backward
    handle = model.aux_heads[4].register_forward_hook(fail)
    with pytest.raises(RuntimeError, match='injected'):
        model.train_step(make_batch(1), wrapper)
    handle.remove()
    offload = model.aux_head_offload
    assert offload.resident == set()
    assert all(p.grad is None for p in model.aux_heads.parameters())
    ptrs = _host_ptrs(offload)
    assert all(p.data_ptr() in ptrs for p in model.aux_heads.parameters())
    before = copy.deepcopy(model.aux_heads[4].state_dict())
    model.train_step(make_batch(2), wrapper)
    assert offload.resident == set()
    assert any(not torch.equal(v, before[k])
               for k, v in model.aux_heads[4].state_dict().items())


def test_a_head_goes_back_once_all_its_parameters_are_updated():
    """Under data parallelism one head's parameters may be reduced in two
    buckets: it stays until the last of them is updated."""
    head = torch.nn.Linear(2, 2)
    offload = HostOffload([head])
    offload.fetch(0, torch.device('cpu'))
    head(torch.ones(1, 2)).sum().backward()
    head.weight.grad = None  # the first bucket's update
    offload.release_params([head.weight])
    assert offload.resident == {0}
    head.bias.grad = None
    offload.release_params([head.bias])
    assert offload.resident == set()


def test_the_optimizer_state_dict_waits_for_the_copies(monkeypatch):
    model = _build(dict(host='cpu'))
    wrapper = LayerwiseLocalOptimWrapper(sgd(model))
    model.train_step(make_batch(0), wrapper)
    calls = []
    monkeypatch.setattr(model.aux_head_offload, 'synchronize',
                        lambda: calls.append(1))
    state = wrapper.state_dict()
    assert len(calls) == 1
    wrapper.load_state_dict(copy.deepcopy(state))
    model.state_dict()
    assert len(calls) == 3


def test_refuses_fused_state_and_buffer_broadcasts():
    model = _build(dict(host='cpu'))
    fused = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    with pytest.raises(InputError, match='fused Adam'):
        model.train_step(make_batch(0), LayerwiseLocalOptimWrapper(fused))
    from auglocal_det.engine.model_wrappers import (
        LocalDistributedDataParallel,
    )
    with pytest.raises(InputError, match='broadcast_buffers'):
        LocalDistributedDataParallel(model, broadcast_buffers=True)


@pytest.mark.parametrize('host', HOSTS)
def test_channels_last_weights_stay_channels_last(host):
    """The heads' copies keep their strides: a channels-last head trains
    as it would without offloading."""
    ref = _build().to(memory_format=torch.channels_last)
    model = _build(dict(host=host)).to(memory_format=torch.channels_last)
    _train(ref, iters=2)
    _train(model, iters=2)
    convs = [m.weight for m in model.aux_heads.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(
        w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    for key, value in ref.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize('through', ['descriptor', 'mapping'])
def test_files_leave_the_resident_set(tmp_path, monkeypatch, through):
    """host='file': a head at rest is a mapping of deleted files in
    ``directory`` with no resident page, before and after a round trip
    with its momentum, and it comes back with the same values; copied
    through the files' descriptors, or through the mapping where there is
    no ``os.preadv``."""
    if through == 'mapping':
        monkeypatch.delattr(os, 'preadv')
    head = torch.nn.Linear(1024, 1024)  # 4 MiB of weights
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    offload = HostOffload([head], host='file', directory=str(tmp_path))
    assert _mapped(tmp_path) == (0, 0)
    cpu = torch.device('cpu')
    offload.fetch(0, cpu, optimizer)
    head(torch.ones(4, 1024)).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    expected = [t.clone() for t in list(head.parameters()) + [
        optimizer.state[p]['momentum_buffer'] for p in head.parameters()]]
    offload.release(0, optimizer)
    # the weight and its momentum in files; the 4 KiB bias stays in memory
    mapped, resident = _mapped(tmp_path)
    assert mapped == 2 * head.weight.numel() * 4 and resident == 0
    assert os.listdir(tmp_path) == []  # unlinked once mapped
    files = [getattr(h, '_offload_file', None)
             for h in offload.host_tensors()]
    assert sum(f is not None for f in files) == 2  # weight, momentum
    assert all((f.fd is None) == (through == 'mapping')
               for f in files if f is not None)
    offload.fetch(0, cpu, optimizer)
    assert _mapped(tmp_path)[1] == 0  # read and dropped again
    got = list(head.parameters()) + [
        optimizer.state[p]['momentum_buffer'] for p in head.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert not set(t.data_ptr() for t in got) & _host_ptrs(offload)
    offload.release(0, optimizer)
    assert _mapped(tmp_path)[1] == 0
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    # written at rest through the mapping (loading a checkpoint), read
    # back through the descriptor by the next fetch
    new_weight = torch.randn_like(head.weight)
    head.load_state_dict(dict(weight=new_weight, bias=head.bias.detach()))
    assert _mapped(tmp_path)[1] > 0
    offload.fetch(0, cpu, optimizer)
    assert torch.equal(head.weight, new_weight)
    assert _mapped(tmp_path)[1] == 0


def test_file_options_are_checked(tmp_path):
    with pytest.raises(InputError, match='not a writable directory'):
        _build(dict(host='file', directory=str(tmp_path / 'missing')))
    with pytest.raises(InputError, match="is for host='file'"):
        _build(dict(host='cpu', directory=str(tmp_path)))
    with pytest.raises(InputError, match='cannot be pinned'):
        _build(dict(host='file', pin_memory=True))
    # a GPU run is refused before any copy (and without a GPU here)
    offload = HostOffload([torch.nn.Linear(2, 2)], host='file')
    with pytest.raises(InputError, match="host='cpu' \\(pinned"):
        offload.fetch(0, torch.device('cuda'))


def test_file_descriptors_go_with_their_copies(tmp_path):
    """One descriptor per file-backed copy, of an unlinked file, closed
    once the copy and the tensor resting in it are gone."""
    import gc
    head = torch.nn.Linear(1024, 1024)
    offload = HostOffload([head], host='file', directory=str(tmp_path))
    offload.release_all()
    files = [h._offload_file for h in offload.host_tensors()
             if hasattr(h, '_offload_file')]
    assert len(files) == 1  # the weight; the bias stays in memory
    fd = files[0].fd
    inode = os.fstat(fd)
    assert inode.st_nlink == 0  # unlinked
    del head, offload, files
    gc.collect()
    try:
        now = os.fstat(fd)
    except OSError:  # closed
        return
    # the number was taken again since, by another file
    assert (now.st_dev, now.st_ino) != (inode.st_dev, inode.st_ino)
