"""Torch k-means against scikit-learn step by step (k-means++ picks, Lloyd iterations, empty clusters, stopping rule),
batched == one class at a time, determinism, errors, the mode-method adapter, and (on a GPU) device agreement."""
import numpy as np, pytest, torch
from sklearn.cluster import KMeans
from mgd3.kmeans import kmeans, kmeans_batched, kmeans_plusplus, lloyd, kmeans_torch_modes, full_fp32, KMeansResult

def blobs(n=400, d=32, centres=8, sd=1.0, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centres, d, generator=g) * scale
    return c[torch.randint(0, centres, (n,), generator=g)] + sd * torch.randn(n, d, generator=g)

class DrawsAsRandomState:
    "Feeds torch k-means++'s uniforms to scikit-learn's `_kmeans_plusplus` (which calls `choice`, then `uniform`)."
    def __init__(self, seed, k, L):
        self.u = torch.rand(1 + (k - 1) * L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
        self.pos = 1
    def choice(self, n, p=None): return min(int(self.u[0] * n), n - 1)
    def uniform(self, size):
        out = self.u[self.pos:self.pos + size]; self.pos += size
        return out

@pytest.mark.parametrize('k', [1, 2, 7, 20])
def test_kmeans_plusplus_picks_what_sklearn_picks_with_the_same_draws(k):
    from sklearn.cluster._kmeans import _kmeans_plusplus
    x = blobs(500, 64, seed=k); xc = x - x.mean(0)
    L = 2 + int(np.log(k))
    _, idx = kmeans_plusplus(xc[None], torch.ones(1, 500, dtype=torch.bool), k, [torch.Generator().manual_seed(5)])
    xn = xc.numpy()
    _, ref = _kmeans_plusplus(xn, k, (xn.astype(np.float64) ** 2).sum(1), np.ones(500, np.float32),
                              DrawsAsRandomState(5, k, L))
    assert idx[0].tolist() == ref.tolist()

@pytest.mark.parametrize('max_iter, tol', [(300, 1e-4), (300, 0.0), (1, 1e-4), (300, 5e-2)])
def test_lloyd_matches_sklearn_from_the_same_start(max_iter, tol):
    x = blobs(600, 32, centres=12, sd=2.5, seed=1); xc = x - x.mean(0)
    init = x[torch.randperm(600, generator=torch.Generator().manual_seed(0))[:9]]
    var = float(xc.double().var(0, unbiased=False).mean())
    C, lab, dist, it = lloyd(xc[None], torch.ones(1, 600, dtype=torch.bool), (init - x.mean(0))[None], var * tol,
                             max_iter)
    direct = (xc.double() - C[0].double()[lab[0]]).pow(2).sum(1)          # distances to the returned centres
    torch.testing.assert_close(dist[0].double(), direct, rtol=1e-4, atol=1e-2)
    ref = KMeans(9, init=init.numpy(), n_init=1, max_iter=max_iter, tol=tol).fit(x.numpy())
    assert int(it) == ref.n_iter_
    assert (lab[0].numpy() == ref.labels_).all()
    np.testing.assert_allclose((C[0] + x.mean(0)).numpy(), ref.cluster_centers_, rtol=0, atol=1e-4)

def test_empty_clusters_are_refilled_like_sklearn():
    x = blobs(300, 16, centres=5, seed=2)
    far = torch.full((2, 16), 50.0); far[1] *= -1             # centres no point is nearest: clusters 3, 4 start empty
    init = torch.cat([x[:3], far])
    xc, mu = x - x.mean(0), x.mean(0)
    C, lab, dist, it = lloyd(xc[None], torch.ones(1, 300, dtype=torch.bool), (init - mu)[None], 0.0, 300)
    torch.testing.assert_close(dist[0].double(), (xc.double() - C[0].double()[lab[0]]).pow(2).sum(1), rtol=1e-4,
                               atol=1e-2)
    ref = KMeans(5, init=init.numpy(), n_init=1, tol=0.0).fit(x.numpy())
    assert int(it) == ref.n_iter_ and (lab[0].numpy() == ref.labels_).all()
    np.testing.assert_allclose((C[0] + mu).numpy(), ref.cluster_centers_, atol=1e-4)
    assert len(np.unique(ref.labels_)) == 5

def test_inertia_within_one_percent_of_sklearn_over_seeds():
    x = blobs(800, 128, centres=20, sd=1.5, scale=1.0, seed=3)
    for k in (5, 15):
        ours = [kmeans(x, k, seed=s).inertia for s in range(6)]
        ref = [KMeans(k, random_state=s, n_init='auto').fit(x.numpy()).inertia_ for s in range(6)]
        assert abs(np.mean(ours) / np.mean(ref) - 1) < 0.01, (k, ours, ref)

def test_reported_inertia_is_the_direct_sum():
    x = blobs(300, 24, seed=4) + 100.0                        # far from the origin: centring matters
    r = kmeans(x, 6, seed=0)
    direct = float((x.double() - r.centroids.double()[r.labels]).pow(2).sum())
    assert abs(r.inertia / direct - 1) < 1e-5

def test_batched_is_bit_identical_to_one_class_at_a_time_on_cpu():
    sizes = [300, 211, 300, 57, 144, 299]
    xs = [blobs(n, 48, seed=10 + i) * (1 + i) for i, n in enumerate(sizes)]
    for k in (1, 5, 57):
        rb = kmeans_batched(xs, k, seed=list(range(6)))
        r2 = kmeans_batched(xs, k, seed=list(range(6)), batch_classes=4)
        for i, x in enumerate(xs):
            r = kmeans(x, k, seed=i)
            for other in (rb[i], r2[i]):
                assert torch.equal(r.centroids, other.centroids) and torch.equal(r.labels, other.labels)
                assert r.inertia == other.inertia and r.n_iter == other.n_iter
    assert sorted(torch.bincount(kmeans(xs[3], 57).labels).tolist()) == [1] * 57   # n == k: one point per cluster

def test_deterministic_and_seed_dependent():
    x = blobs(500, 32, centres=30, seed=5)
    a, b, c = kmeans(x, 12, seed=7), kmeans(x, 12, seed=7), kmeans(x, 12, seed=8)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.centroids, c.centroids)
    assert isinstance(a, KMeansResult) and a.centroids.dtype == torch.float32 and a.labels.dtype == torch.int64

def test_numpy_and_float64_inputs_and_seed_types():
    x = blobs(200, 16, seed=6)
    r = kmeans(x, 4, seed=np.int64(3))
    r64 = kmeans(x.double().numpy(), 4, seed=3)
    assert torch.equal(r.labels, r64.labels) and torch.equal(r.centroids, r64.centroids)

def test_full_fp32_restores_the_matmul_precision_even_on_error():
    prev = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision('high')
        with pytest.raises(RuntimeError):
            with full_fp32('cpu'):
                assert torch.get_float32_matmul_precision() == 'highest'
                raise RuntimeError('boom')
        assert torch.get_float32_matmul_precision() == 'high'
        x = blobs(200, 16, seed=7)
        with torch.autocast('cpu', dtype=torch.bfloat16):   # k-means inside a bf16 region still runs in float32
            r = kmeans(x, 4, seed=0)
        assert torch.equal(r.centroids, kmeans(x, 4, seed=0).centroids)
    finally: torch.set_float32_matmul_precision(prev)

@pytest.mark.parametrize('call, message', [
    (lambda x: kmeans(x, 0), 'positive int'),
    (lambda x: kmeans(x, 500), 'lower k'),
    (lambda x: kmeans(x, 3, max_iter=0), 'max_iter'),
    (lambda x: kmeans_batched([], 3), 'no point sets'),
    (lambda x: kmeans_batched([x, x[:, :4]], 3), 'features'),
    (lambda x: kmeans_batched([x, x], 3, seed=[1, 2, 3]), 'one per class'),
    (lambda x: kmeans(x[None], 3), 'flatten'),
    (lambda x: kmeans_batched([x, torch.where(x > 2, float('inf'), x)], 3), 'class 1 has NaN, infinite'),
    (lambda x: kmeans(x, 3, device='mps'), 'MPS'),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message): call(blobs(100, 8, seed=8))

def test_mode_method_adapter_plugs_into_discover_modes():
    from mgd3.modes import MODE_METHODS, register_mode_method, discover_modes
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 4, 2, 3, 3, generator=g) * 3                    # 3 classes x 4 planted modes
    lat = centres.repeat_interleave(15, 1).reshape(180, 2, 3, 3) + 0.05 * torch.randn(180, 2, 3, 3, generator=g)
    lab = torch.arange(3).repeat_interleave(60)
    register_mode_method('kmeans-torch-test')(kmeans_torch_modes)
    try: ms = discover_modes(lat, lab, ipc=4, method='kmeans-torch-test')
    finally: MODE_METHODS.pop('kmeans-torch-test')
    assert ms.sizes.tolist() == [[15] * 4] * 3
    for c in range(3):
        d = torch.cdist(ms.centroids[c].flatten(1), centres[c].flatten(1))
        assert d.min(1).values.max() < 0.2 and sorted(d.argmin(1).tolist()) == list(range(4))

@pytest.mark.slow
def test_imagenet_class_shape_inertia_within_one_percent():
    "1,300 x 4,096 (an ImageNet-1K class of 4x32x32 latents), 20-blob mixture, k = 10 and 50, 5 seeds each."
    g = torch.Generator().manual_seed(0)
    c = torch.randn(20, 4096, generator=g)
    x = c[torch.randint(0, 20, (1300,), generator=g)] + 0.7 * torch.randn(1300, 4096, generator=g)
    for k in (10, 50):
        ours = [kmeans(x, k, seed=s).inertia for s in range(5)]
        ref = [KMeans(k, random_state=s, n_init='auto').fit(x.numpy()).inertia_ for s in range(5)]
        assert abs(np.mean(ours) / np.mean(ref) - 1) < 0.01, (k, ours, ref)

@pytest.mark.gpu
def test_cuda_batched_deterministic_and_close_to_cpu():
    xs = [blobs(n, 256, centres=15, seed=20 + i) for i, n in enumerate([400, 350, 400, 120])]
    for k in (3, 20):
        rb = kmeans_batched(xs, k, seed=[0, 1, 2, 3], device='cuda')
        again = kmeans_batched(xs, k, seed=[0, 1, 2, 3], device='cuda')
        for i, x in enumerate(xs):
            assert torch.equal(rb[i].centroids, again[i].centroids)             # same device, same seed: identical
            one, cpu = kmeans(x, k, seed=i, device='cuda'), kmeans(x, k, seed=i)
            assert torch.equal(one.labels, rb[i].labels)
            torch.testing.assert_close(one.centroids, rb[i].centroids, rtol=1e-5, atol=1e-5)
            assert torch.equal(cpu.labels, one.labels.cpu())
            torch.testing.assert_close(cpu.centroids, one.centroids.cpu(), rtol=1e-4, atol=1e-4)
            assert abs(cpu.inertia / one.inertia - 1) < 1e-5

def test_gpu_sum_path_agrees_with_the_cpu_path(monkeypatch):
    "The one-hot GEMM cluster sums (used off the CPU) give the same clustering as index_add_ (used on the CPU)."
    import functools, mgd3.kmeans as K
    xs = [blobs(n, 64, centres=12, seed=30 + i) for i, n in enumerate([300, 170, 300])]
    ref = kmeans_batched(xs, 8, seed=[0, 1, 2])
    monkeypatch.setattr(K, '_cluster_sums', functools.partial(K._cluster_sums, onehot=True))
    got = kmeans_batched(xs, 8, seed=[0, 1, 2])
    for r, g in zip(ref, got):
        assert torch.equal(r.labels, g.labels) and r.n_iter == g.n_iter
        torch.testing.assert_close(r.centroids, g.centroids, rtol=1e-5, atol=1e-5)
