"""Issue 8, security: nothing mgd3 loads can execute code (no pickle, `torch.load` only with weights_only=True,
safetensors for tensors, JSON for metadata), and class names from data or lists cannot escape `out_dir`."""
import ast, json, pickle
from pathlib import Path
import pytest, torch
import mgd3
from mgd3.sampler import ImageJob
from mgd3.testing import tiny_mnist_pipeline, TINY_RUN

SRC = Path(mgd3.__file__).parent

# ---------------------------------------------------------------- (a) a scan of the source tree
def _kw(call, name): return next((k.value for k in call.keywords if k.arg == name), None)
def _is_const(node, value): return isinstance(node, ast.Constant) and node.value == value
def _dotted(f):
    parts = []
    while isinstance(f, ast.Attribute): parts.append(f.attr); f = f.value
    if isinstance(f, ast.Name): parts.append(f.id)
    return '.'.join(reversed(parts))

def unsafe_loads(source:str, filename:str='<src>') -> list[str]:
    "Every unsafe-loading construct in a Python source: pickle, torch.load without weights_only=True, eval/exec, ..."
    bad = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split('.')[0] in ('pickle', 'cPickle', '_pickle', 'dill', 'cloudpickle', 'marshal', 'shelve') for n in names):
                bad.append(f"{where}: imports a pickle-like module")
        if not isinstance(node, ast.Call): continue
        name = _dotted(node.func)
        if (isinstance(node.func, ast.Name) and name in ('eval', 'exec', 'compile')) or name in ('builtins.eval', 'builtins.exec'):
            bad.append(f"{where}: {name}()")   # (a method such as `model.eval()` is not the builtin)
        if name == '__import__' and not (node.args and isinstance(node.args[0], ast.Constant)):
            bad.append(f"{where}: __import__ of a computed name")
        if name.endswith('torch.load'):
            if not _is_const(_kw(node, 'weights_only'), True): bad.append(f"{where}: torch.load without weights_only=True")
        if name in ('yaml.load', 'yaml.load_all'):
            loader = _kw(node, 'Loader') or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or 'Safe' not in _dotted(loader): bad.append(f"{where}: yaml.load without SafeLoader")
        if name in ('yaml.unsafe_load', 'yaml.full_load', 'joblib.load', 'pd.read_pickle', 'pandas.read_pickle'):
            bad.append(f"{where}: {name}")
        if name.endswith(('np.load', 'numpy.load')) and _kw(node, 'allow_pickle') is not None \
                and not _is_const(_kw(node, 'allow_pickle'), False):
            bad.append(f"{where}: np.load with allow_pickle")
        if name.endswith('.from_pretrained') and 'Tokenizer' not in name and 'Scheduler' not in name \
                and not _is_const(_kw(node, 'use_safetensors'), True):
            bad.append(f"{where}: {name} without use_safetensors=True (it would fall back to pickled .bin files)")
    return bad

def test_scanner_catches_each_unsafe_construct():
    cases = ["import pickle", "from pickle import loads", "import dill", "torch.load(p)", "torch.load(p, weights_only=False)",
             "eval(s)", "exec(s)", "yaml.load(s)", "yaml.load(s, Loader=yaml.Loader)", "yaml.unsafe_load(s)",
             "np.load(p, allow_pickle=True)", "joblib.load(p)", "__import__(name)",
             "AutoencoderKL.from_pretrained(p)", "DiTTransformer2DModel.from_pretrained(p, subfolder='t')"]
    for c in cases: assert unsafe_loads(c), c
    ok = ["torch.load(p, map_location='cpu', weights_only=True)", "yaml.load(s, Loader=yaml.SafeLoader)", "json.loads(s)",
          "AutoencoderKL.from_pretrained(p, use_safetensors=True)", "CLIPTokenizer.from_pretrained(p)",
          "__import__('mgd3.core', fromlist=['x'])", "np.load(p)", "net.eval()", "m.to(d).eval()"]
    for c in ok: assert not unsafe_loads(c), c

def test_source_tree_loads_nothing_unsafely():
    files = sorted(SRC.rglob('*.py'))
    assert len(files) >= 10
    bad = [b for f in files for b in unsafe_loads(f.read_text(encoding='utf-8'), str(f.relative_to(SRC.parent)))]
    assert not bad, '\n'.join(bad)

# ---------------------------------------------------------------- (b) path traversal
@pytest.mark.parametrize('name', ['../x', '..', '.', '', '/abs', '/etc/passwd', 'a/b', 'a\\b', '../../tmp/evil'])
def test_image_job_refuses_names_that_escape(name, tmp_path):
    with pytest.raises(ValueError, match="not a plain folder name; rename the class"):
        ImageJob(name, 0, 0, 0).path(tmp_path / 'out')

@pytest.mark.parametrize('name', ['../x', '..', '/abs', 'a/b', ''])
def test_dataset_spec_refuses_names_that_escape(name):
    "Class names become the latent shards' and the images' file names: a spec cannot hold one that escapes."
    with pytest.raises(ValueError, match="not plain folder names; rename"):
        mgd3.DatasetSpec('evil', ('ok', name), (0, 1), ('ok', 'evil'), 32, 1)

def test_writes_stay_inside_out_dir_for_odd_but_plain_names(tmp_path):
    out = tmp_path / 'out'
    for name in ('...', '.hidden', 'n01440764', 'a b', 'ünï', '..x', 'x..'):
        p = ImageJob(name, 3, 0, 0).path(out)
        assert p.resolve().is_relative_to(out.resolve()) and p.name == '3.png'

def test_image_folder_with_symlinked_class_is_handled_safely(tmp_path):
    "A class folder that is a symlink out of the root is read like any folder, but every file mgd3 writes stays inside."
    from PIL import Image
    import numpy as np
    outside = tmp_path / 'outside'; outside.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(outside / '0.png')
    root = tmp_path / 'root'; (root / 'train' / 'a').mkdir(parents=True)
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(root / 'train' / 'a' / '0.png')
    (root / 'train' / 'up').symlink_to(outside, target_is_directory=True)
    (root / 'train' / 'dots').symlink_to('..', target_is_directory=True)   # a link named like a folder, pointing up
    spec = mgd3.folder_spec(root, image_size=32, channels=1)
    assert set(spec.wnids) == {'a', 'dots', 'up'}          # plain names only: '..' itself is never a listed entry
    out = tmp_path / 'run'
    for w in spec.wnids:
        assert ImageJob(w, 0, 0, 0).path(out / 'images').resolve(strict=False).parent.parent == (out / 'images').resolve()
    cache = mgd3.LatentCache(out / 'latents' / 'x', spec, {})
    for c in range(spec.num_classes): assert cache.shard_path(c).parent == out / 'latents' / 'x'

# ---------------------------------------------------------------- (c) config files cannot execute code
EVIL = "__import__('os').system('touch pwned')"

def test_manifest_and_config_values_are_data_not_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / 'run'; out.mkdir()
    (out / 'manifest.json').write_text(json.dumps({'config': {'dataset': EVIL, 'ipc': EVIL}, 'status': EVIL,
                                                   'images': {EVIL: EVIL}, 'timings': {EVIL: 1}}))
    m = mgd3.Manifest.load(out / 'manifest.json')
    assert m.status == EVIL and m.config['dataset'] == EVIL   # read back as strings
    with pytest.raises(ValueError, match='holds a run with another config'):
        mgd3.distill(**TINY_RUN, out_dir=str(out))
    # a run config read from JSON: the strings stay strings, the check refuses them
    cfg = json.loads(json.dumps({'dataset': 'mnist5k', 'ipc': 2, 'seeds': [0], 'stop_t': 2, 'num_inference_steps': 4,
                                 'mode_method': EVIL, 'out_dir': str(tmp_path / 'r2')}))
    with pytest.raises(ValueError, match='unknown mode_method'):
        mgd3.DistillConfig(**cfg).resolved().check()
    # safetensors metadata and a latent-cache header are JSON too
    ms = mgd3.ModeSet(torch.zeros(2, 1, 4, 2, 2), torch.ones(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long),
                      EVIL, 0, {'note': EVIL})
    assert mgd3.ModeSet.load(ms.save(tmp_path / 'm.safetensors')).method == EVIL
    (tmp_path / 'cache').mkdir()
    (tmp_path / 'cache' / 'cache.json').write_text(json.dumps({'key': {'x': EVIL}, 'spec': {
        'name': EVIL, 'wnids': ['a'], 'class_ids': [0], 'class_names': [EVIL], 'image_size': 32, 'channels': 1,
        'source': EVIL, 'embedded': False, 'num_classes': 1}}))
    assert mgd3.LatentCache.open(tmp_path / 'cache').spec.name == EVIL
    assert not (tmp_path / 'pwned').exists() and not Path('pwned').exists()

# ---------------------------------------------------------------- (d) a pickle disguised as safetensors
class _Marker:
    "Unpickling this creates a marker file (what an attacker's payload would do)."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (open, (self.path, 'w'))

def _evil_pickle(path, marker):
    path.write_bytes(pickle.dumps({'centroids': _Marker(marker)}))
    return path

def test_pickle_renamed_safetensors_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / 'pwned'
    # the payload really runs when unpickled (the test of the test)
    pickle.loads(_evil_pickle(tmp_path / 'probe.pkl', marker).read_bytes()); assert marker.exists(); marker.unlink()
    for name in ('modes.safetensors', 'class_0000_a.safetensors'):
        p = _evil_pickle(tmp_path / name, marker)
        with pytest.raises(ValueError, match=r"is not a readable safetensors file .*delete it"):
            mgd3.ModeSet.load(p) if name.startswith('modes') else mgd3.load_tensors(p)
    # torch.save's zip format holds a pickle too
    torch.save({'centroids': _Marker(marker)}, tmp_path / 'zip.safetensors')
    with pytest.raises(ValueError, match='not a readable safetensors file'): mgd3.ModeSet.load(tmp_path / 'zip.safetensors')
    assert not marker.exists()

def test_pickled_weights_are_never_loaded(tmp_path):
    "A backbone whose weights are a pickle (.bin), and a teacher .pth with a payload: refused, nothing executed."
    marker = tmp_path / 'pwned'
    pipe = tiny_mnist_pipeline(tmp_path / 'pipe')
    for f in (pipe / 'transformer').glob('*.safetensors'): f.unlink()
    torch.save({'w': _Marker(marker)}, pipe / 'transformer' / 'diffusion_pytorch_model.bin')
    with pytest.raises(FileNotFoundError, match=r"only safetensors weights are loaded"):
        mgd3.load_backbone(pipe, device='cpu')
    torch.save({'w': _Marker(marker)}, tmp_path / 'teacher.pth')
    with pytest.raises(ValueError, match=r"teacher\.pth is not a \.safetensors file: pickled checkpoints are never "
                                         r"loaded"):   # refused before it is opened
        mgd3.load_teacher('resnet18', weights=tmp_path / 'teacher.pth', num_classes=10, device='cpu')
    assert not marker.exists()
