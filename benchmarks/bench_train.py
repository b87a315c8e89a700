"""Side-by-side training-speed benchmark of mgd3's evaluator against an IDC-style data pipeline.

Measures, in one run, with the same network, batch size, optimiser, augmentations and CutMix:
  (1) the share of a training step spent on data + augmentation in mgd3's pipeline (uint8 images on the training
      device, whole-batch augmentation with per-sample parameters);
  (2) epochs/s (median over epochs, the pipelines' epochs interleaved) of mgd3's pipeline vs an IDC-style one: ImageFolder of PNGs + per-image PIL/torchvision transforms +
      DataLoader workers (decoding every epoch), and the same with the decoded PIL images kept in memory
      (IDC's load_memory=True).

    PYTHONPATH=. python benchmarks/bench_train.py                       # ConvNet-3 at 32 px on the CPU
    PYTHONPATH=. python benchmarks/bench_train.py --size 224 --net resnet_ap10 --device cuda
"""
import argparse, statistics, tempfile, time
from pathlib import Path
import torch, torch.nn.functional as F
from mgd3.core import pick_device, atomic_save
from mgd3.data import load_mnist5k
from mgd3.evalnets import create_evalnet, IMAGENET_MEAN, IMAGENET_STD
from mgd3.augment import augment_batch, cutmix, mixed_targets, normalize_batch, cpu_single_thread, _EIGVAL, _EIGVEC

def make_rgb_images(n_per_class:int, size:int) -> tuple[torch.Tensor, torch.Tensor]:
    "MNIST-5k train digits tinted per class into RGB at `size` px (uint8), so colour jitter and lighting do real work."
    x, y = load_mnist5k('train')
    idx = torch.cat([torch.nonzero(y == c).flatten()[:n_per_class] for c in range(10)])
    x, y = x[idx].float() / 255, y[idx]
    tint = torch.rand(10, 3, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.3
    rgb = x * tint[y].view(-1, 3, 1, 1) + (1 - x) * 0.2
    if size != rgb.shape[-1]: rgb = F.interpolate(rgb, size=(size, size), mode='bilinear', align_corners=False)
    return (rgb * 255).round().clamp(0, 255).to(torch.uint8), y

def write_image_folder(images, labels, root:Path):
    from PIL import Image
    for i, (im, c) in enumerate(zip(images, labels)):
        arr = im.permute(1, 2, 0).numpy()
        atomic_save(root / f"c{int(c)}" / f"{i}.png", lambda p: Image.fromarray(arr).save(p, format='PNG'))

class Lighting:
    "IDC-style per-image PCA lighting noise on a [0, 1] tensor."
    def __init__(self, std): self.std = std
    def __call__(self, x):
        alpha = torch.randn(3) * self.std
        return x + ((alpha * _EIGVAL) @ _EIGVEC.T).view(3, 1, 1)

def idc_transform(size:int):
    from torchvision import transforms as T
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.RandomResizedCrop(size, scale=(0.5, 1.0)),
                      T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4), Lighting(0.1), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

class MemoryFolder(torch.utils.data.Dataset):
    "IDC's load_memory=True: PIL images decoded once, transforms per image per epoch."
    def __init__(self, folder, transform):
        self.items = [(folder.loader(p).copy(), y) for p, y in folder.samples]; self.transform = transform
    def __len__(self): return len(self.items)
    def __getitem__(self, i): im, y = self.items[i]; return self.transform(im), y

def train_step(net, opt, xb, yb, g, num_classes):
    mix = cutmix(xb, g, 1.0)
    loss = torch.sum(-mixed_targets(yb, mix, num_classes) * F.log_softmax(net(mix.images), 1), 1).mean()
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def mgd3_epoch(net, opt, images, labels, size, bs, dev, g):
    "One epoch of mgd3's pipeline; returns (seconds, seconds spent on data + augmentation)."
    t_aug = 0.0; sync(dev); t0 = time.perf_counter()
    perm = torch.randperm(len(labels), generator=g).to(dev)
    for i in range(0, len(perm), bs):
        sync(dev); ta = time.perf_counter()
        idx = perm[i:i + bs]
        with cpu_single_thread(dev):  # as mgd3.evaluate's training loop does
            xb = normalize_batch(augment_batch(images[idx], size, g), IMAGENET_MEAN, IMAGENET_STD)
            mix = cutmix(xb, g, 1.0); tgt = mixed_targets(labels[idx], mix, 10)
        sync(dev); t_aug += time.perf_counter() - ta
        loss = torch.sum(-tgt * F.log_softmax(net(mix.images), 1), 1).mean()
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    sync(dev)
    return time.perf_counter() - t0, t_aug

def idc_epoch(net, opt, loader, dev, g):
    "One epoch of the IDC-style pipeline; returns seconds."
    t0 = time.perf_counter()
    for xb, yb in loader: train_step(net, opt, xb.to(dev, non_blocking=True), yb.to(dev), g, 10)
    sync(dev)
    return time.perf_counter() - t0

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size', type=int, default=32); ap.add_argument('--net', default='convnet3')
    ap.add_argument('--per-class', type=int, default=100); ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--batch-size', type=int, default=64); ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--device', default=None); ap.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    a = ap.parse_args()
    dev = pick_device(a.device); g = torch.Generator().manual_seed(0)
    images, labels = make_rgb_images(a.per_class, a.size)
    if a.threads: torch.set_num_threads(a.threads)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, {a.net} at {a.size} px, {len(labels)} images, "
          f"batch {a.batch_size}, {a.epochs} timed epochs per pipeline (interleaved) after 1 warm-up, DataLoader workers {a.workers}")
    def fresh():
        torch.manual_seed(0); net = create_evalnet(a.net, 10, a.size).to(dev)
        return net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    from torchvision.datasets import ImageFolder
    loader = lambda ds: torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers,
                                                    persistent_workers=a.workers > 0, pin_memory=dev.type == 'cuda')
    with tempfile.TemporaryDirectory() as d:
        write_image_folder(images, labels, Path(d))
        pipes = {'mgd3': fresh(), 'idc': fresh(), 'idc_mem': fresh()}
        loaders = {'idc': loader(ImageFolder(d, transform=idc_transform(a.size))),
                   'idc_mem': loader(MemoryFolder(ImageFolder(d), idc_transform(a.size)))}
        gpu_images, gpu_labels = images.to(dev), labels.to(dev)
        times = {k: [] for k in pipes}; aug = []
        for epoch in range(a.epochs + 1):  # epochs interleaved, so load changes on a shared machine hit all pipelines alike
            for k, (net, opt) in pipes.items():
                if k == 'mgd3': t, ta = mgd3_epoch(net, opt, gpu_images, gpu_labels, a.size, a.batch_size, dev, g)
                else: t, ta = idc_epoch(net, opt, loaders[k], dev, g), None
                if epoch == 0: continue  # warm-up: worker start, kernel selection
                times[k].append(t)
                if ta is not None: aug.append(ta / t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("per-epoch seconds: " + ", ".join(f"{k} {[round(t, 2) for t in v]}" for k, v in times.items()))
    print(f"mgd3 batch pipeline:          {1 / med['mgd3']:7.3f} epochs/s  (data + augmentation = {100 * statistics.median(aug):.1f}% of step time, median over epochs)")
    print(f"IDC-style ImageFolder+PIL:    {1 / med['idc']:7.3f} epochs/s  -> mgd3 is {med['idc'] / med['mgd3']:.2f}x")
    print(f"IDC-style, images in memory:  {1 / med['idc_mem']:7.3f} epochs/s  -> mgd3 is {med['idc_mem'] / med['mgd3']:.2f}x")

if __name__ == '__main__': main()
