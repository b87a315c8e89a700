"""Sampler throughput on the embedded tiny-mnist backbone, measured side by side in one run.

1. Batched `generate` vs a batch-1 loop shaped like the authors' script (one image and its CFG pair per network
   call, 50 DDPM steps): target >= 10x.
2. Mode-guided vs unguided sampling at the same batch: target overhead <= 10%.
3. The per-step finite check of the DDPM loop (`mgd3.sampler.check_finite_step`, one `isfinite().all()` per step) on
   vs off, guided, at the largest chunk: target overhead <= 1%.

    python benchmarks/bench_sampler.py [--images 100] [--steps 50]
"""
import argparse, time
import torch
import mgd3.sampler
from mgd3.backbone import load_backbone
from mgd3.sampler import generate

def timed(fn):
    t0 = time.perf_counter(); out = fn(); return time.perf_counter() - t0, out

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=100); ap.add_argument('--steps', type=int, default=50)
    ap.add_argument('--backbone', default='tiny-mnist'); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    bb = load_backbone(a.backbone)
    n, C = a.images, bb.num_classes
    labels, seeds = [i % C for i in range(n)], list(range(n))
    modes = torch.randn(n, *bb.latent_shape, generator=torch.Generator().manual_seed(0))
    kw = dict(num_inference_steps=a.steps, decode=False, progress=False)
    print(f'backbone {bb.name}, {n} images, {a.steps} steps, torch threads {torch.get_num_threads()}, device {bb.device}')

    loop_s, _ = timed(lambda: [generate(bb, [labels[i]], seeds=[seeds[i]], modes=modes[i:i + 1], batch_size=1,
                                        chunk_size=1, **kw) for i in range(n)])
    rows = []
    for chunk in (16, 64, n):
        best = {}
        for name, m in (('unguided', None), ('guided', modes)):
            best[name] = min(timed(lambda: generate(bb, labels, seeds=seeds, modes=m, batch_size=n, chunk_size=chunk,
                                                    **kw))[0] for _ in range(a.repeats))
        rows.append((chunk, best))
    check, off = mgd3.sampler.check_finite_step, lambda *a, **k: None
    finite = {'on': [], 'off': []}
    for _ in range(a.repeats):   # interleaved, so that a change in machine load hits both alike
        for name, fn in (('on', check), ('off', off)):
            mgd3.sampler.check_finite_step = fn
            finite[name].append(timed(lambda: generate(bb, labels, seeds=seeds, modes=modes, batch_size=n,
                                                       chunk_size=n, **kw))[0])
    mgd3.sampler.check_finite_step = check
    print(f'batch-1 loop (authors-style, guided): {loop_s:.2f} s  ({n / loop_s:.1f} img/s)')
    for chunk, best in rows:
        print(f'batched chunk_size={chunk:<4d} guided {best["guided"]:.2f} s ({n / best["guided"]:.1f} img/s), '
              f'unguided {best["unguided"]:.2f} s | speed-up vs loop {loop_s / best["guided"]:.1f}x | '
              f'guidance overhead {100 * (best["guided"] / best["unguided"] - 1):+.1f}%')
    on, no = min(finite['on']), min(finite['off'])
    print(f'finite check per step (guided, chunk_size={n}): on {on:.3f} s, off {no:.3f} s | overhead '
          f'{100 * (on / no - 1):+.1f}% (best of {a.repeats})')

if __name__ == '__main__': main()
