"""Mode discovery: planted modes are recovered, results are deterministic, ModeSets round-trip, errors are clear."""
import numpy as np, pytest, torch
from sklearn.cluster import KMeans
from mgd3.modes import (discover_modes, discover_modes_cached, ModeSet, list_mode_methods, register_mode_method,
                        MODE_METHODS, plot_modes, plot_cluster_sizes)

def planted(C=4, k=5, n=20, shape=(4, 3, 3), noise=0.05, seed=0, shuffle=False):
    "C classes, each a mixture of k tight Gaussian blobs of n points; returns latents, labels, the true centres."
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, k, *shape, generator=g) * 2
    lat = centres.repeat_interleave(n, 1).reshape(C * k * n, *shape)
    lat = lat + noise * torch.randn(lat.shape, generator=g)
    lab = torch.arange(C).repeat_interleave(k * n)
    if shuffle:
        p = torch.randperm(len(lab), generator=g); lat, lab = lat[p], lab[p]
    return lat, lab, centres

@pytest.mark.parametrize('method', ['kmeans', 'gmm', 'kmeans-closest'])
@pytest.mark.parametrize('shuffle', [False, True])
def test_planted_modes_are_recovered(method, shuffle):
    lat, lab, centres = planted(shuffle=shuffle)
    ms = discover_modes(lat, lab, ipc=5, method=method)
    assert ms.centroids.shape == (4, 5, 4, 3, 3) and ms.centroids.dtype == torch.float32
    assert ms.sizes.tolist() == [[20] * 5] * 4 and ms.method == method and ms.seed == 0
    for c in range(4):
        d = torch.cdist(ms.centroids[c].flatten(1), centres[c].flatten(1))
        assert d.min(1).values.max() < 0.3                            # each mode sits on a planted centre ...
        assert sorted(d.argmin(1).tolist()) == list(range(5))          # ... and every planted centre is found
        assert (lab[ms.closest[c]] == c).all()                         # closest samples belong to the class
        closest_d = (lat[ms.closest[c]] - ms.centroids[c]).double().flatten(1).norm(dim=1)
        all_d = ((ms.centroids[c].double().flatten(1)[:, None] - lat[lab == c].double().flatten(1)[None]) ** 2).sum(-1)
        torch.testing.assert_close(closest_d, all_d.min(1).values.sqrt(), rtol=1e-6, atol=1e-6)

def test_kmeans_is_the_papers_sklearn_call():
    lat, lab, _ = planted(noise=0.8)
    ms = discover_modes(lat, lab, ipc=5, seed=3)
    for c in range(4):
        x = lat[lab == c].flatten(1).numpy()
        km = KMeans(n_clusters=5, random_state=3, n_init='auto').fit(x)
        np.testing.assert_allclose(ms.centroids[c].flatten(1).numpy(), km.cluster_centers_, rtol=1e-5, atol=1e-6)
        assert ms.sizes[c].tolist() == np.bincount(km.labels_, minlength=5).tolist()

def _same(a, b): return torch.equal(a.centroids, b.centroids) and torch.equal(a.sizes, b.sizes) and torch.equal(a.closest, b.closest)

@pytest.mark.parametrize('method', ['kmeans', 'gmm', 'random', 'kmeans-closest'])
def test_same_seed_same_modeset(method):
    lat, lab, _ = planted(noise=0.8)
    assert _same(discover_modes(lat, lab, ipc=5, method=method, seed=1), discover_modes(lat, lab, ipc=5, method=method, seed=1))

def test_same_modeset_whatever_the_parallelism():
    lat, lab, _ = planted(noise=0.8)
    assert _same(discover_modes(lat, lab, ipc=5, seed=1, n_jobs=1), discover_modes(lat, lab, ipc=5, seed=1, n_jobs=2))

def test_random_modes_are_distinct_real_latents():
    lat, lab, _ = planted()
    ms = discover_modes(lat, lab, ipc=5, method='random', seed=0)
    for c in range(4):
        assert len(set(ms.closest[c].tolist())) == 5 and (lab[ms.closest[c]] == c).all()
        assert torch.equal(ms.centroids[c], lat[ms.closest[c]])
    assert not torch.equal(ms.closest, discover_modes(lat, lab, ipc=5, method='random', seed=1).closest)

def test_too_few_images_names_the_class():
    lat, lab, _ = planted()
    keep = torch.ones(len(lab), dtype=torch.bool); keep[(lab == 2).nonzero()[3:]] = False   # class 2 keeps 3
    with pytest.raises(ValueError, match=r"class 2 \(n01729322\) has 3 images but ipc=5 .*lower ipc"):
        discover_modes(lat[keep], lab[keep], ipc=5, class_names=['a', 'b', 'n01729322', 'd'])
    with pytest.raises(ValueError, match=r'class 1 has 0 images'):
        discover_modes(lat[lab != 1], lab[lab != 1], ipc=2)
    with pytest.raises(ValueError, match='unknown mode method'):
        discover_modes(lat, lab, ipc=2, method='dbscan')

def test_modeset_roundtrip(tmp_path):
    lat, lab, _ = planted()
    ms = discover_modes(lat, lab, ipc=5, method='gmm', seed=2)
    ms.meta['dataset'] = 'planted'
    path = ms.save(tmp_path / 'modes.safetensors')
    back = ModeSet.load(path)
    assert torch.equal(back.centroids, ms.centroids) and torch.equal(back.sizes, ms.sizes)
    assert torch.equal(back.closest, ms.closest)
    assert (back.method, back.seed, back.meta['dataset'], back.ipc, back.latent_shape) == ('gmm', 2, 'planted', 5, (4, 3, 3))
    from mgd3.core import save_tensors
    save_tensors(tmp_path / 'other.safetensors', {'x': torch.zeros(1)})
    with pytest.raises(ValueError, match='not a ModeSet'): ModeSet.load(tmp_path / 'other.safetensors')

def test_custom_method_registers():
    @register_mode_method('first-k')
    def first_k(x, k, seed):
        return x[:k], np.arange(len(x)) % k
    try:
        lat, lab, _ = planted()
        ms = discover_modes(lat, lab, ipc=5, method='first-k')
        assert 'first-k' in list_mode_methods() and torch.equal(ms.closest[1], torch.arange(100, 105))
    finally:
        MODE_METHODS.pop('first-k')

def test_cached_discovery_matches_in_memory(tmp_path):
    from PIL import Image
    from diffusers import AutoencoderKL
    from mgd3.data import folder_spec
    from mgd3.latents import cache_latents
    rng = np.random.default_rng(0)
    for c, n in (('ant', 7), ('bee', 9), ('cat', 8)):
        (tmp_path / 'pets' / c).mkdir(parents=True)
        for i in range(n): Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / 'pets' / c / f'{i}.png')
    torch.manual_seed(0)
    vae = AutoencoderKL(down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2,
                        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8,
                        mid_block_add_attention=False).eval()
    spec = folder_spec(tmp_path / 'pets', image_size=16)
    cache = cache_latents(vae, spec, tmp_path / 'pets', tmp_path / 'cache', split=None, progress=False)
    lat, lab = cache.load()
    a = discover_modes(lat, lab, ipc=3)
    b = discover_modes_cached(cache, ipc=3, n_jobs=2)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.closest, b.closest)
    assert b.meta['dataset'] == 'pets' and b.meta['num_latents'] == 24 and (lab[b.closest[1]] == 1).all()
    with pytest.raises(ValueError, match=r'class 0 \(ant\) has 7 images but ipc=8'):
        discover_modes_cached(cache, ipc=8)

def test_figures():
    import matplotlib; matplotlib.use('Agg')
    lat, lab, _ = planted(C=2, k=3, shape=(1, 8, 8))
    ms = discover_modes(lat, lab, ipc=3)
    real = (lat.clamp(-1, 1) * 127.5 + 127.5).to(torch.uint8)
    fig = plot_modes(ms, real_images=real, class_names=['a', 'b'])
    assert len(fig.axes) == 2 * 3
    assert len(plot_cluster_sizes(ms).axes[0].lines) == 3            # 2 classes + the uniform line
    with pytest.raises(ValueError, match='nothing to show'): plot_modes(ms)


def _planted_cache(tmp_path, C=5, n=40, k=4):
    from mgd3.latents import LatentCache
    from mgd3.data import DatasetSpec
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(C, k, 4, 4, 4, generator=g) * 3
    spec = DatasetSpec('planted', tuple('abcde'[:C]), tuple(range(C)), tuple('abcde'[:C]), 32, 1, embedded=True)
    cache = LatentCache.create(tmp_path, spec, {'split': 'train', 'image_size': 32, 'dtype': 'float32'})
    for c in range(C):
        z = centres[c].repeat_interleave(n // k, 0) + 0.1 * torch.randn(n, 4, 4, 4, generator=g)
        cache.write_class(c, z[torch.randperm(n, generator=g)], torch.arange(n), None)
    return cache

@pytest.mark.parametrize('max_group_bytes', [1, 3 * 40 * 64 * 4, 2**31])   # one class, three classes, all per group
def test_kmeans_torch_batched_over_groups_equals_one_class_at_a_time(tmp_path, max_group_bytes):
    from mgd3.modes import discover_modes_cached, class_groups
    cache = _planted_cache(tmp_path)
    one = discover_modes_cached(cache, 4, method='kmeans-torch', device='cpu', batched=False)
    grouped = discover_modes_cached(cache, 4, method='kmeans-torch', device='cpu', batched=True,
                                    max_group_bytes=max_group_bytes)
    assert grouped.meta['groups'] == len(class_groups(cache.counts(), 64, max_group_bytes)) and grouped.meta['device'] == 'cpu'
    torch.testing.assert_close(grouped.centroids, one.centroids, rtol=0, atol=1e-5)
    assert torch.equal(grouped.sizes, one.sizes) and torch.equal(grouped.closest, one.closest)
    assert (grouped.closest // 40 == torch.arange(5)[:, None]).all()   # cache rows, class by class

@pytest.mark.gpu
def test_kmeans_torch_on_the_gpu_groups_classes(tmp_path):
    from mgd3.modes import discover_modes_cached
    cache = _planted_cache(tmp_path)
    gpu = discover_modes_cached(cache, 4, method='kmeans-torch')   # device None: CUDA, batched
    cpu = discover_modes_cached(cache, 4, method='kmeans-torch', device='cpu')
    assert gpu.meta['device'].startswith('cuda') and gpu.meta['groups'] == 1
    torch.testing.assert_close(gpu.centroids, cpu.centroids, rtol=0, atol=1e-4)
    assert torch.equal(gpu.sizes, cpu.sizes) and torch.equal(gpu.closest, cpu.closest)

def test_kmeans_stays_sklearn_one_class_at_a_time_whatever_the_device(tmp_path):
    from mgd3.modes import discover_modes_cached
    cache = _planted_cache(tmp_path)
    a = discover_modes_cached(cache, 4, method='kmeans', device='cuda', batched=True)   # ignored for sklearn
    b = discover_modes_cached(cache, 4)
    assert torch.equal(a.centroids, b.centroids) and 'groups' not in a.meta
