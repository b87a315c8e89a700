"""What storing latents in float16 or bfloat16 does to the k-means modes, against float32.

    PYTHONPATH=. python benchmarks/bench_latent_dtype.py [--classes 2] [--work DIR]

Two inputs, each clustered with the authors' call (scikit-learn `KMeans(k, random_state=0, n_init='auto')`, the
`kmeans` mode method) once on the float32 latents and once on the same latents stored in the half-precision dtype:

- the embedded benchmark's real latents: MNIST-5k's 4,000 training images encoded by the tiny-mnist VAE through
  `cache_latents(..., dtype=...)` (the cache's own write/read path), k = 10, all 10 classes;
- ImageNet-1K-shaped classes: --classes classes of 1,300 x 4x32x32 latents from a 20-blob Gaussian mixture (the
  scale of the SD-VAE's scaled latents), rounded to the dtype as the cache stores them, k = 10 and 50.

For scale, a reference row clusters the float32 latents again with another seed (random_state=1): k-means finds a
local optimum, and any perturbation, a rounding or a seed, can move some modes to another one.

Per dtype it prints: the largest and the mean relative centroid change ||c_half - c_32|| / ||c_32|| over all modes
(modes matched by index: both runs start from the same seeded k-means++), the relative rounding of the latents
themselves (for scale), the share of points whose cluster is the same, the share of modes whose closest real
latent is the same (the `mode_discovery_only` baseline's pick), and the inertia of the half-precision centroids on
the float32 latents over the float32 centroids' inertia.
"""
import argparse, tempfile
from pathlib import Path
import numpy as np, torch
from sklearn.cluster import KMeans

DTYPES = ('float16', 'bfloat16')

def inertia(x:np.ndarray, centres:np.ndarray) -> float:
    "Sum of squared distances of float32 points to their nearest centre, in float64."
    x, c = x.astype(np.float64), centres.astype(np.float64)
    d = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
    return float(np.clip(d.min(1), 0, None).sum())

def fit(x:np.ndarray, k:int, seed:int=0):
    "The authors' call: scikit-learn's KMeans with random_state=seed."
    return KMeans(n_clusters=k, random_state=seed, n_init='auto').fit(x)

def compare(x32:np.ndarray, a, xh:np.ndarray, b) -> dict:
    "How far the clustering `b` of `xh` is from the clustering `a` of the float32 latents `x32`."
    ca, cb = a.cluster_centers_, b.cluster_centers_
    rel = np.linalg.norm(cb - ca, axis=1) / np.linalg.norm(ca, axis=1)
    near = lambda c: np.argmin(((x32[None] - c[:, None]) ** 2).sum(-1), axis=1)   # closest real latent per mode
    return {'rel': rel, 'round': float(np.linalg.norm(xh - x32) / np.linalg.norm(x32)),
            'labels': float((a.labels_ == b.labels_).mean()), 'closest': float((near(ca) == near(cb)).mean()),
            'inertia': inertia(x32, cb) / inertia(x32, ca)}

def class_rows(x32:np.ndarray, k:int) -> dict:
    "Per stored dtype (and float32 with another seed, for scale): the comparison with float32, seed 0."
    a = fit(x32, k)
    out = {'float32, random_state=1 (reference)': compare(x32, a, x32, fit(x32, k, seed=1))}
    for dt in DTYPES:
        xh = torch.from_numpy(x32).to(getattr(torch, dt)).float().numpy()   # what the cache stores and reads back
        out[dt] = compare(x32, a, xh, fit(xh, k))
    return out

def report(name:str, rows:list[dict]):
    rel = np.concatenate([r['rel'] for r in rows])
    print(f"| {name} | {rel.max():.2e} | {rel.mean():.2e} | {np.mean([r['round'] for r in rows]):.2e} | "
          f"{np.mean([r['labels'] for r in rows]):.4f} | {np.mean([r['closest'] for r in rows]):.3f} | "
          f"{np.mean([r['inertia'] for r in rows]):.6f} |", flush=True)

def blobs(n, seed, d=4096, k=20, sd=0.7):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g)
    return centres[torch.randint(0, k, (n,), generator=g)] + sd * torch.randn(n, d, generator=g)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--classes', type=int, default=2, help='ImageNet-shaped classes (0: skip)')
    ap.add_argument('--work', type=Path, default=None, help='cache folder (default: a temporary one)')
    args = ap.parse_args()
    print("| input | dtype | k | max rel. centroid change | mean rel. centroid change | rel. rounding of the latents | "
          "same cluster | same closest latent | inertia half / float32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    from mgd3.backbone import load_backbone
    from mgd3.latents import cache_latents
    vae = load_backbone('tiny-mnist', device='cpu').vae
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        full = cache_latents(vae, 'mnist5k', None, work, progress=False)
        halves = {dt: cache_latents(vae, 'mnist5k', None, work, progress=False, dtype=dt) for dt in DTYPES}
        for c in range(full.spec.num_classes):   # the cache's own rounding: read back what it stored
            xh = halves[DTYPES[0]].class_latents(c).flatten(1).numpy()
            x32 = full.class_latents(c).flatten(1).numpy()
            assert np.array_equal(xh, torch.from_numpy(x32).to(getattr(torch, DTYPES[0])).float().numpy())
        rows = [class_rows(full.class_latents(c).flatten(1).numpy(), 10) for c in range(full.spec.num_classes)]
        for name in rows[0]:
            report(f"MNIST-5k, tiny-mnist VAE (10 classes x 400) | {name} | 10", [r[name] for r in rows])
    for k in (10, 50):
        rows = [class_rows(blobs(1300, seed=10_000 + c).numpy(), k) for c in range(args.classes)]
        for name in (rows[0] if rows else []):
            report(f"ImageNet-1K-shaped blobs ({args.classes} classes x 1,300 x 4,096) | {name} | {k}",
                   [r[name] for r in rows])

if __name__ == '__main__':
    main()
