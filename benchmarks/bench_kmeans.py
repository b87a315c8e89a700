"""Torch k-means (`mgd3.kmeans.kmeans`) beside scikit-learn's `KMeans`, measured side by side in one run.

    PYTHONPATH=. python benchmarks/bench_kmeans.py [--ks 10 50] [--seeds 5] [--repeats 3] [--device cpu]

Data: one class shaped like an ImageNet-1K class in the DiT latent space, 1,300 latents of 4,096 values (4x32x32),
drawn as in bench_stage1.py from a 20-blob Gaussian mixture (N(0, 1) centres, blob sd 0.7). For every k and seed,
scikit-learn's `KMeans(n_clusters=k, random_state=seed, n_init='auto')` and `kmeans(x, k, seed=seed)` run
alternately, `--repeats` times each, after one warm-up of both. Reported: median wall time and median CPU time of
each, the ratio sklearn / torch (target >= 5x), and the inertia of every seed. Both inertias are recomputed here the
same way (direct form, float64 sums) from each method's centroids and labels; scikit-learn's own `inertia_` sums in
float32. The inertia target is torch within 1% of scikit-learn on average over the seeds. The two use different
random streams, so single seeds can land in different local optima.
"""
import argparse, os, statistics, time
import numpy as np, torch
from sklearn.cluster import KMeans
from mgd3.kmeans import kmeans

def blob_class(n=1300, d=4096, blobs=20, sd=0.7, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(blobs, d, generator=g)
    return centres[torch.randint(0, blobs, (n,), generator=g)] + sd * torch.randn(n, d, generator=g)

def inertia(x, centroids, labels):
    "Σ‖x − c(x)‖², direct form, float64."
    x, c = torch.as_tensor(x).double(), torch.as_tensor(centroids).double()
    return float((x - c[torch.as_tensor(labels).long()]).pow(2).sum())

def clock(fn, dev):
    if dev.type == 'cuda': torch.cuda.synchronize()
    w, c = time.perf_counter(), time.process_time(); r = fn()
    if dev.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - w, time.process_time() - c, r

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--ks', type=int, nargs='+', default=[10, 50])
    ap.add_argument('--seeds', type=int, default=5, help='seeds 0..N-1 for both methods')
    ap.add_argument('--repeats', type=int, default=3, help='timed runs per method, k and seed')
    ap.add_argument('--n', type=int, default=1300); ap.add_argument('--d', type=int, default=4096)
    ap.add_argument('--device', default='cpu', help='where torch k-means runs (scikit-learn always uses the CPU)')
    a = ap.parse_args()
    dev = torch.device(a.device)
    x = blob_class(a.n, a.d); xn = x.numpy()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores, torch k-means "
          f"on {dev}; load average {os.getloadavg()[0]:.1f}; class {a.n} x {a.d}, seeds 0..{a.seeds - 1}, "
          f"{a.repeats} repeats")
    xd = x.to(dev)
    kmeans(xd, a.ks[0], device=dev); KMeans(a.ks[0], random_state=0, n_init='auto').fit(xn)   # warm-up
    for k in a.ks:
        tw, tc, sw, sc, ti, si, tit, sit = [], [], [], [], [], [], [], []
        for s in range(a.seeds):
            for _ in range(a.repeats):
                w, c, r = clock(lambda: kmeans(xd, k, seed=s, device=dev), dev); tw.append(w); tc.append(c)
                w, c, km = clock(lambda: KMeans(k, random_state=s, n_init='auto').fit(xn), dev); sw.append(w); sc.append(c)
            ti.append(inertia(x, r.centroids.cpu(), r.labels.cpu())); tit.append(r.n_iter)
            si.append(inertia(x, km.cluster_centers_, km.labels_)); sit.append(km.n_iter_)
        mt, ms = statistics.median(tw), statistics.median(sw)
        print(f"\nk={k}: wall median torch {mt * 1000:.1f} ms, sklearn {ms * 1000:.1f} ms -> sklearn / torch = "
              f"{ms / mt:.1f}x   (CPU time: torch {statistics.median(tc) * 1000:.1f} ms, sklearn "
              f"{statistics.median(sc) * 1000:.1f} ms -> {statistics.median(sc) / statistics.median(tc):.1f}x)")
        print("  inertia per seed (torch / sklearn): " +
              ', '.join(f"{t / q:.4f}" for t, q in zip(ti, si)))
        print(f"  mean inertia torch {np.mean(ti):.6g} (iterations {tit}), sklearn {np.mean(si):.6g} (iterations "
              f"{sit}) -> torch / sklearn = {np.mean(ti) / np.mean(si):.4f}; sklearn's own seed-to-seed spread "
              f"{min(si) / np.mean(si):.4f}..{max(si) / np.mean(si):.4f}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")

if __name__ == '__main__': main()
