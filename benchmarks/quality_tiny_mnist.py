"""Per-class quality of the embedded tiny-mnist backbone, sized for a CPU (issue: the benchmark's own generator).

The teacher's accuracy on 30 unguided samples per class (fidelity), and the per-class recall of ConvNet-3 trained on
10 unguided samples per class against 10 random real images per class (train split → test split, seeds 0/1/2).
Writes the `ClassQuality` record as JSON (what nbs/20_ablations.ipynb reads) and prints the per-class table.
Usage: OMP_NUM_THREADS=1 python benchmarks/quality_tiny_mnist.py benchmarks/results/quality-tiny-mnist-test.json
(about 20 minutes on one CPU core)."""
import json, sys, time
import torch
from mgd3.tiny_mnist import measure_per_class, per_class_table

if __name__ == '__main__':
    torch.set_num_threads(1)
    t = time.time()
    q = measure_per_class('tiny-mnist', split='test', ipc=10, seeds=(0, 1, 2), samples_per_class=30, device='cpu')
    out = {'seconds': time.time() - t, 'command': 'python ' + ' '.join(sys.argv), 'quality': q.__dict__}
    with open(sys.argv[1], 'w') as f: json.dump(out, f, indent=1)
    print(per_class_table({'tiny-mnist': q}))
    print(f'{time.time() - t:.0f} s')
