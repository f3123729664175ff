"""Test double for the CUDA-graph step: "replay" = rerun of the recorded Python step, on CPU."""
import contextlib

from smlib.train import cuda_graph as graph


@contextlib.contextmanager
def emulated_graphs(capturable: bool = True):
    """Let `smlib.train.cuda_graph.plan` choose :class:`GraphStep` on CPU, with "replay" = rerun.

    The emulated graph reruns the recorded Python step on the static buffers, so it checks
    everything around the capture (warm-up, static input, guard flags, snapshot and restore,
    partial batches, capturable Adam with a tensor learning rate and a scheduler, portable
    checkpoints, resume) but not CUDA's capture itself. With ``capturable=True`` torch's
    capturable Adam is allowed on CPU for the duration (by patching torch's list of devices).
    """
    import torch.optim.adam as _adam
    import torch.optim.optimizer as _optimizer

    original = _optimizer._get_capturable_supported_devices
    old = dict(graph.EMULATE)
    graph.EMULATE.update(on=True, capturable=capturable)
    if capturable:
        patched = lambda supports_xla=True: [*original(supports_xla), "cpu"]  # noqa: E731
        _optimizer._get_capturable_supported_devices = patched
        _adam._get_capturable_supported_devices = patched
    try:
        yield
    finally:
        _optimizer._get_capturable_supported_devices = original
        _adam._get_capturable_supported_devices = original
        graph.EMULATE.clear()
        graph.EMULATE.update(old)
