"""Shared pytest setup: `slow` tests run only with MGD3_RUN_SLOW=1, `gpu` tests only where CUDA is present."""
import os, pytest, torch

def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get('MGD3_RUN_SLOW') == '1'
    for item in items:
        if 'slow' in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason='slow: set MGD3_RUN_SLOW=1 to run'))
        if 'gpu' in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason='needs a CUDA device'))
