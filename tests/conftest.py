"""Shared pytest setup: `slow` tests run only with MGD3_RUN_SLOW=1, `gpu` tests only where CUDA is present; a tiny
random DiT pipeline shaped like tiny-mnist (1x32x32 images, 4x8x8 latents, 10 classes) for fast end-to-end runs."""
import os, pytest, torch

def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get('MGD3_RUN_SLOW') == '1'
    for item in items:
        if 'slow' in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason='slow: set MGD3_RUN_SLOW=1 to run'))
        if 'gpu' in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason='needs a CUDA device'))


@pytest.fixture(scope='session')
def tiny_mnist_pipeline(tmp_path_factory):
    "A random DiTPipeline folder with tiny-mnist's shapes (see mgd3.testing)."
    from mgd3.testing import tiny_mnist_pipeline
    return tiny_mnist_pipeline(tmp_path_factory.mktemp('tiny-mnist-random') / 'pipe')
