"""Shared pytest setup: hermetic tests (Hugging Face offline mode and a network guard), `slow` tests only with
MGD3_RUN_SLOW=1, `gpu` tests only where CUDA is present; a tiny random DiT pipeline shaped like tiny-mnist (1x32x32
images, 4x8x8 latents, 10 classes) for fast end-to-end runs."""
import os, sys
from pathlib import Path

# Offline first: huggingface_hub (and transformers, datasets) read these when they are imported, so they are set
# before anything below imports them; subprocesses inherit them.
for _var in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE'): os.environ[_var] = '1'
if 'huggingface_hub' in sys.modules:   # imported before this file (by a plugin): switch its read-once constant too
    import huggingface_hub.constants; huggingface_hub.constants.HF_HUB_OFFLINE = True

# The network guard (tests/netguard): connections to anything but loopback/AF_UNIX raise, here and, through
# sitecustomize on PYTHONPATH, in every Python subprocess; children report refusals through MGD3_NETGUARD_LOG.
_GUARD_DIR = Path(__file__).resolve().parent / 'netguard'
sys.path.insert(0, str(_GUARD_DIR))
import netguard
netguard.install()
_paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p and Path(p).resolve() != _GUARD_DIR]
os.environ['PYTHONPATH'] = os.pathsep.join([str(_GUARD_DIR)] + _paths)
if not os.environ.get(netguard.LOG_ENV):
    import tempfile
    os.environ[netguard.LOG_ENV] = str(Path(tempfile.mkdtemp(prefix='mgd3-netguard-')) / 'refusals.log')
_LOG = Path(os.environ[netguard.LOG_ENV])

def _log_size() -> int: return _LOG.stat().st_size if _LOG.exists() else 0
def _log_since(offset:int) -> list[str]:
    if not _LOG.exists(): return []
    with open(_LOG, encoding='utf-8', errors='replace') as f: f.seek(offset); lines = f.read().splitlines()
    return [l for l in lines if not l.startswith(f'pid {os.getpid()} ')]   # this process's are in netguard.blocked

_SESSION_LOG_START = _log_size()

import pytest, torch

@pytest.fixture(autouse=True)
def _no_network():
    "Fail the test when it (or a subprocess) tried to reach the network, even if the code swallowed the error."
    n, offset = len(netguard.blocked), _log_size()
    yield
    refused = netguard.blocked[n:] + _log_since(offset)
    if refused: pytest.fail('the test tried to use the network:\n' + '\n'.join(refused), pytrace=False)

def pytest_sessionfinish(session, exitstatus):
    "Fail the session on any refusal, also outside tests (collection, imports)."
    refused = netguard.blocked + _log_since(_SESSION_LOG_START)
    if refused:
        print('\nnetwork guard: the session tried to use the network:\n' + '\n'.join(refused), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

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
