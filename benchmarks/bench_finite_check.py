"""The cost of the sampling loops' per-step finite check, measured side by side in one run.

`mgd3.sampler.check_finite_step` runs one `torch.isfinite(x).all()` per step and reads the result on the host (on a
GPU that is a synchronisation per step). This script times mode-guided `generate` with the check on and with it
replaced by a no-op, interleaved (on, off, on, off, ...) so that a change in machine load hits both alike, and prints
the best time of each and the overhead. Target: <= 1%.

    python benchmarks/bench_finite_check.py                                   # tiny-mnist on the CPU
    python benchmarks/bench_finite_check.py --model dit-xl --batches 1 64 --steps 20 --precision bf16   # a GPU
"""
import argparse, sys, time
from pathlib import Path
import torch
import mgd3.sampler
from mgd3.backbone import load_backbone
from mgd3.sampler import generate

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', default='tiny-mnist', help="'tiny-mnist' (embedded) or 'dit-xl' (random weights)")
    ap.add_argument('--batches', type=int, nargs='+', default=[100])
    ap.add_argument('--steps', type=int, default=50)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--precision', default='fp32')
    a = ap.parse_args()
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if a.model == 'dit-xl':
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_sampler_gpu import dit_xl2
        bb = dit_xl2(dev, torch.float32)
    else: bb = load_backbone(a.model, device=dev)
    print(f'{bb.name} on {dev} ({torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}), {a.precision}, '
          f'{a.steps} steps, torch threads {torch.get_num_threads()}')
    check, off = mgd3.sampler.check_finite_step, lambda *args, **kw: None
    for b in a.batches:
        labels, seeds = [i % bb.num_classes for i in range(b)], list(range(b))
        modes = torch.randn(b, *bb.latent_shape, generator=torch.Generator().manual_seed(0))
        kw = dict(seeds=seeds, modes=modes, num_inference_steps=a.steps, stop_t=min(25, a.steps), batch_size=b,
                  chunk_size=b, precision=a.precision, decode=False, progress=False)
        generate(bb, labels, **kw)   # warm-up: kernels, allocator
        times = {'on': [], 'off': []}
        for _ in range(a.repeats):
            for name, fn in (('on', check), ('off', off)):
                mgd3.sampler.check_finite_step = fn
                if dev.type == 'cuda': torch.cuda.synchronize()
                t0 = time.perf_counter()
                generate(bb, labels, **kw)
                if dev.type == 'cuda': torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
        mgd3.sampler.check_finite_step = check
        on, no = min(times['on']), min(times['off'])
        print(f'batch {b:4d}: check on {on:.4f} s, off {no:.4f} s ({1000 * (on - no) / a.steps:+.3f} ms per step) | '
              f'overhead {100 * (on / no - 1):+.2f}% (best of {a.repeats}; medians on '
              f'{sorted(times["on"])[a.repeats // 2]:.4f} s, off {sorted(times["off"])[a.repeats // 2]:.4f} s)')

if __name__ == '__main__': main()
