"""distill() end to end on the embedded dataset with a tiny random backbone: artefacts, resume, config mismatch."""
import json, time
from pathlib import Path
import pytest, torch
import mgd3
from mgd3.core import sha256_file

def _params(pipe, out):
    return dict(backbone=str(pipe), out_dir=str(out), ipc=2, seeds=[0, 1], num_inference_steps=4, stop_t=2,
                epochs=2, quick=True)

def _snapshot(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(Path(out).rglob('*')) if p.is_file()}

@pytest.fixture(scope='module')
def finished(tiny_mnist_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp('run') / 'r'
    return out, mgd3.distill(**_params(tiny_mnist_pipeline, out))

def test_run_folder_holds_every_artefact(finished):
    out, r = finished
    man = json.loads((out / 'manifest.json').read_text())
    assert man['status'] == 'complete' and man['config']['ipc'] == 2
    assert set(man['versions']) >= {'torch', 'diffusers', 'mgd3'} and man['device']['device']
    assert {'encode', 'modes', 'images/mgd3', 'evaluate/mgd3', 'metrics'} <= set(man['timings'])
    pngs = sorted(p for p in (out / 'images').rglob('*.png'))
    assert len(pngs) == 5 * 10 * 2   # 5 methods (quick: seed 0 only), 10 classes, IPC 2
    assert man['images'] == {str(p.relative_to(out)): sha256_file(p) for p in pngs}
    assert (out / 'images' / 'mgd3' / 'seed0' / '7' / '1.png').exists()   # digit folders, <k>.png
    assert mgd3.ModeSet.load(out / 'modes' / 'seed0.safetensors').centroids.shape == (10, 2, 4, 8, 8)
    m = json.loads((out / 'metrics.json').read_text())
    assert set(m['methods']) == set(mgd3.METHODS)
    acc = m['methods']['mgd3']['accuracy']['convnet3']
    assert set(acc) >= {'best', 'final', 'mean', 'std'} and acc['best'][0] >= acc['final'][0]
    assert 0 <= m['methods']['mgd3']['coverage'] <= 1
    assert {'samples.png', 'modes.png', 'accuracy.png'} <= {p.name for p in (out / 'figures').iterdir()}
    assert 'mgd3' in r.table and 'mode_discovery_only' in r.table

def test_rerun_of_a_finished_run_does_nothing(finished, tiny_mnist_pipeline):
    out, _ = finished
    before = _snapshot(out)
    t0 = time.perf_counter(); mgd3.distill(**_params(tiny_mnist_pipeline, out)); dt = time.perf_counter() - t0
    assert _snapshot(out) == before and dt < 5

def test_another_config_in_the_same_out_dir_is_refused(finished, tiny_mnist_pipeline):
    out, _ = finished
    before = (out / 'manifest.json').read_bytes()
    with pytest.raises(ValueError, match=r"another config \(differs in \['mode_guidance_scale'\]\)"):
        mgd3.distill(**{**_params(tiny_mnist_pipeline, out), 'mode_guidance_scale': 0.2})
    assert (out / 'manifest.json').read_bytes() == before

def test_resume_after_losing_each_stage_reproduces_the_same_bytes(finished, tiny_mnist_pipeline, tmp_path):
    out, _ = finished
    ref = _snapshot(out)
    import shutil
    run = tmp_path / 'r'; shutil.copytree(out, run)
    man = json.loads((run / 'manifest.json').read_text()); man['status'] = 'running'
    (run / 'manifest.json').write_text(json.dumps(man))
    # as if interrupted: a latent shard, the modes, some images, an evaluation, the metrics and a figure are missing
    next((run / 'latents').rglob('class_0003_*.safetensors')).unlink()
    (run / 'modes' / 'seed0.safetensors').unlink()
    shutil.rmtree(run / 'images' / 'mgd3' / 'seed0' / '4'); (run / 'images' / 'unguided' / 'seed0' / '0' / '1.png').unlink()
    (run / 'images' / 'random_real' / 'seed0' / 'done.json').unlink()
    (run / 'eval' / 'mgd3' / 'seed0' / 'convnet3.json').unlink()
    (run / 'metrics.json').unlink(); (run / 'figures' / 'samples.png').unlink()
    mgd3.distill(**_params(tiny_mnist_pipeline, run))
    again = _snapshot(run)
    for k in ref:
        if k.startswith('eval/'):   # the same numbers; only the wall time differs
            a, b = json.loads(again[k]), json.loads(ref[k]); a.pop('seconds'); b.pop('seconds')
            assert a == b, k
        elif k.startswith(('images/', 'latents/')) or k in ('modes/seed0.safetensors', 'metrics.json'):
            assert again[k] == ref[k], k
    assert json.loads(again['manifest.json'])['images'] == json.loads(ref['manifest.json'])['images']

def _coin(seed, c, i):
    "The seeded flip coin, from its definition (see test_latents)."
    import hashlib
    return int.from_bytes(hashlib.sha256(f"mgd3:{seed}:{c}:{i}:flip".encode()).digest()[:8], 'little') & 1 == 1

def _kmeans_of_flipped_images(vae, seed, ipc):
    "Per class: encode MNIST-5k's train images, each flipped when the seed's coin says so, and run the authors' KMeans."
    from sklearn.cluster import KMeans
    x, y = mgd3.load_mnist5k('train')
    out = []
    for c in range(10):
        imgs = x[y == c].float() / 127.5 - 1
        if seed is not None:
            coins = torch.tensor([_coin(seed, c, i) for i in range(len(imgs))])
            imgs = torch.where(coins[:, None, None, None], imgs.flip(-1), imgs)
        with torch.no_grad(): z = vae.encode(imgs).latent_dist.mean * vae.config.scaling_factor
        km = KMeans(n_clusters=ipc, random_state=0, n_init='auto').fit(z.flatten(1).numpy())
        out.append(torch.from_numpy(km.cluster_centers_).float().reshape(ipc, *z.shape[1:]))
    return torch.stack(out)

@pytest.mark.parametrize('flips', ['authors', 'none'])
def test_each_generation_seed_has_the_modes_of_its_own_flips(tiny_mnist_pipeline, tmp_path, flips):
    from mgd3.run import Run
    from mgd3.distill import prepare
    cfg = mgd3.DistillConfig.from_params(**{**_params(tiny_mnist_pipeline, tmp_path / 'r'), 'quick': False,
                                            'mode_flips': flips})
    run = Run.open(cfg)
    ctx = prepare(run, torch.device('cpu'))
    files = sorted(str(p.relative_to(run.folder)) for p in run.folder.rglob('*.safetensors') if 'latents' not in str(p))
    assert files == (['modes/seed0.safetensors', 'modes/seed1.safetensors'] if flips == 'authors'
                     else ['modes.safetensors'])
    for seed in (0, 1):
        ref = _kmeans_of_flipped_images(ctx.backbone.vae, seed if flips == 'authors' else None, 2)
        torch.testing.assert_close(ctx.modes_for(seed).centroids, ref, atol=1e-4, rtol=1e-4)
        assert ctx.modes_for(seed).meta['flip_seed'] == (seed if flips == 'authors' else None)
    differ = not torch.equal(ctx.modes_for(0).centroids, ctx.modes_for(1).centroids)
    assert differ == (flips == 'authors')
    assert ctx.modes is ctx.modes_for(0)
