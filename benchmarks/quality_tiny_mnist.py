"""Per-class quality of an embedded MNIST-5k backbone, sized for a CPU (issue: the benchmark's own generator).

The teacher's accuracy on 30 unguided samples per class (fidelity), and the per-class recall of ConvNet-3 trained on
10 unguided samples per class against 10 random real images per class (seeds 0/1/2): `--split test` trains on the
train split and scores on the test split (what is reported), `--split val` trains on the `fit` split and scores on
the held-out `val` split (what a choice between backbones is made on). Writes the `ClassQuality` record as JSON (what
nbs/20_ablations.ipynb reads) and prints the per-class table.
Usage: OMP_NUM_THREADS=1 python benchmarks/quality_tiny_mnist.py OUT.json [--backbone tiny-mnist] [--split test]
(about 20 minutes on one CPU core), e.g. OUT = benchmarks/results/quality-tiny-mnist-test.json."""
import argparse, json, sys, time
import torch
from mgd3.quality import measure_per_class, per_class_table

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('out', help='the JSON record to write')
    ap.add_argument('--backbone', default='tiny-mnist', help='a registered name or a backbone folder')
    ap.add_argument('--split', default='test', choices=('val', 'test'))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = time.time()
    q = measure_per_class(args.backbone, split=args.split, ipc=10, seeds=(0, 1, 2), samples_per_class=30,
                          device='cpu')
    out = {'seconds': time.time() - t, 'command': 'python ' + ' '.join(sys.argv), 'backbone': args.backbone,
           'quality': q.__dict__}
    with open(args.out, 'w') as f: json.dump(out, f, indent=1)
    print(per_class_table({args.backbone: q}))
    print(f'{time.time() - t:.0f} s')
