"""The candidate methods of mgd3.candidates through `distill` on a tiny random backbone: what each one must change,
and what it must leave exactly as the paper's `mgd3`."""
import json
from pathlib import Path
import pytest, torch
import mgd3
from mgd3.core import sha256_file
from mgd3.candidates import latent_bound, mode_radii
from mgd3.testing import TINY_RUN

def _hashes(out, method, seed=0):
    return [sha256_file(p) for p in sorted((Path(out) / 'images' / method / f'seed{seed}').rglob('*.png'))]

def _run(pipe, out, methods, **kw):
    return mgd3.distill(**{**TINY_RUN, 'backbone': str(pipe), 'out_dir': str(out), 'methods': methods,
                           'num_inference_steps': 3, 'stop_t': 1, 'tsne': False, **kw})

def test_matching_at_ipc1_is_the_paper(tiny_mnist_pipeline, tmp_path):
    "One noise and one mode per class: nothing to match, so the images are mgd3's, byte for byte."
    _run(tiny_mnist_pipeline, tmp_path / 'r', ['mgd3', 'mgd3_matched'], ipc=1)
    assert _hashes(tmp_path / 'r', 'mgd3_matched') == _hashes(tmp_path / 'r', 'mgd3')

@pytest.mark.slow   # ~2 min on 2 cores (5 candidates × kill and resume); MGD3_RUN_SLOW=1 runs it
def test_every_candidate_resumes_and_keeps_its_images(tiny_mnist_pipeline, tmp_path):
    methods = ['mgd3_clip', 'mgd3_adaptive', 'mgd3_matched', 'mgd3_semantic', 'mgd3_select']
    _run(tiny_mnist_pipeline, tmp_path / 'r', methods)
    before = {m: _hashes(tmp_path / 'r', m) for m in methods}
    assert all(len(h) == 20 for h in before.values())
    for m in methods:   # lose one image of each set and resume: the same bytes come back
        next((tmp_path / 'r' / 'images' / m / 'seed0').rglob('1.png')).unlink()
    man = json.loads((tmp_path / 'r' / 'manifest.json').read_text())
    man['status'] = 'running'
    (tmp_path / 'r' / 'manifest.json').write_text(json.dumps(man))
    (tmp_path / 'r' / 'metrics.json').unlink()
    _run(tiny_mnist_pipeline, tmp_path / 'r', methods)
    assert {m: _hashes(tmp_path / 'r', m) for m in methods} == before
    sem = mgd3.load_tensors(tmp_path / 'r' / 'images' / 'mgd3_semantic' / 'semantic_modes.safetensors')[0]
    assert sem['centroids'].shape == (10, 2, 4, 8, 8)
    assert not torch.allclose(sem['centroids'], mgd3.ModeSet.load(tmp_path / 'r' / 'modes' / 'seed0.safetensors').centroids)

def test_latent_bound_and_radii_are_data_driven():
    class Cache:
        spec = type('S', (), {'num_classes': 2})
        def class_latents(self, c): return torch.arange(1000.).reshape(250, 4) * (1 if c == 0 else -1)
    assert 990 < latent_bound(Cache()) <= 999
    z = torch.tensor([[0.], [1.], [3.], [10.], [12.]])
    assert mode_radii(z, torch.tensor([[0.], [11.]])).tolist() == [1.0, 1.0]

def test_every_candidate_writes_at_the_runs_save_size(tiny_mnist_pipeline, tmp_path):
    "save_size reaches every candidate's writer, as it reaches mgd3's (SD runs save 256 px, not the decoded 512)."
    from PIL import Image
    from mgd3.methods import MethodContext, get_method
    bb = mgd3.load_backbone(tiny_mnist_pipeline, device='cpu')
    cache = mgd3.cache_latents(bb.vae, 'mnist5k', None, tmp_path / 'latents', progress=False)
    cfg = mgd3.DistillConfig.from_params(ipc=1, num_inference_steps=3, stop_t=1, teacher='mnist5k', save_size=12,
                                         out_dir=str(tmp_path / 'run'))
    ctx = MethodContext(cfg, mgd3.dataset_spec('mnist5k'), bb, cache, mgd3.discover_modes_cached(cache, 1),
                        list(range(10)), cfg.sampler_settings())
    methods = ['mgd3', 'mgd3_clip', 'mgd3_adaptive', 'mgd3_matched', 'mgd3_semantic', 'mgd3_select']
    for m in methods: get_method(m).make(ctx, 0, tmp_path / m)
    sizes = {m: {Image.open(p).size for p in (tmp_path / m).rglob('*.png')} for m in methods}
    assert sizes == {m: {(12, 12)} for m in methods}
