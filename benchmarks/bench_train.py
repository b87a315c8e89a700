"""Side-by-side training-speed benchmark of mgd3's evaluator against an IDC-style data pipeline.

Measures, in one run, with the same network, batch size, optimiser, augmentations and CutMix:
  (1) the share of a training step spent on data + augmentation in mgd3's pipeline (uint8 images on the training
      device, whole-batch augmentation with per-sample parameters);
  (2) epochs/s of mgd3's pipeline vs an IDC-style one: ImageFolder of PNGs + per-image PIL/torchvision transforms +
      DataLoader workers (decoding every epoch), and the same with the decoded PIL images kept in memory
      (IDC's load_memory=True).

    PYTHONPATH=. python benchmarks/bench_train.py                       # ConvNet-3 at 32 px on the CPU
    PYTHONPATH=. python benchmarks/bench_train.py --size 224 --net resnet_ap10 --device cuda
"""
import argparse, math, tempfile, time
from pathlib import Path
import torch, torch.nn.functional as F
from mgd3.core import pick_device, atomic_save
from mgd3.data import load_mnist5k
from mgd3.evalnets import create_evalnet, IMAGENET_MEAN, IMAGENET_STD
from mgd3.evaluate import augment_batch, cutmix, mixed_targets, normalize_batch, _EIGVAL, _EIGVEC

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

def run_mgd3(net, opt, images, labels, size, epochs, bs, dev, g):
    "Returns (seconds per epoch, augmentation share of step time)."
    images, labels = images.to(dev), labels.to(dev)
    t_aug = t_all = 0.0; t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(labels), generator=g).to(dev)
        for i in range(0, len(perm), bs):
            sync(dev); ta = time.perf_counter()
            idx = perm[i:i + bs]
            xb = normalize_batch(augment_batch(images[idx], size, g), IMAGENET_MEAN, IMAGENET_STD)
            mix = cutmix(xb, g, 1.0); tgt = mixed_targets(labels[idx], mix, 10)
            sync(dev); tb = time.perf_counter()
            loss = torch.sum(-tgt * F.log_softmax(net(mix.images), 1), 1).mean()
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            sync(dev); tc = time.perf_counter()
            t_aug += tb - ta; t_all += tc - ta
    return (time.perf_counter() - t0) / epochs, t_aug / t_all

def run_idc(net, opt, dataset, epochs, bs, workers, dev, g):
    loader = torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0, pin_memory=dev.type == 'cuda')
    for xb, yb in loader: break  # start the workers outside the timing
    t0 = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader: train_step(net, opt, xb.to(dev, non_blocking=True), yb.to(dev), g, 10)
    sync(dev)
    return (time.perf_counter() - t0) / epochs

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size', type=int, default=32); ap.add_argument('--net', default='convnet3')
    ap.add_argument('--per-class', type=int, default=100); ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--batch-size', type=int, default=64); ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--device', default=None)
    a = ap.parse_args()
    dev = pick_device(a.device); g = torch.Generator().manual_seed(0)
    images, labels = make_rgb_images(a.per_class, a.size)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, {a.net} at {a.size} px, {len(labels)} images, "
          f"batch {a.batch_size}, {a.epochs} timed epochs after 1 warm-up, DataLoader workers {a.workers}")
    def fresh():
        torch.manual_seed(0); net = create_evalnet(a.net, 10, a.size).to(dev)
        return net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    from torchvision.datasets import ImageFolder
    with tempfile.TemporaryDirectory() as d:
        write_image_folder(images, labels, Path(d))
        folder = ImageFolder(d, transform=idc_transform(a.size))
        memory = MemoryFolder(ImageFolder(d), idc_transform(a.size))
        res = {}
        net, opt = fresh(); run_mgd3(net, opt, images, labels, a.size, 1, a.batch_size, dev, g)
        res['mgd3'] = run_mgd3(net, opt, images, labels, a.size, a.epochs, a.batch_size, dev, g)
        net, opt = fresh(); run_idc(net, opt, folder, 1, a.batch_size, a.workers, dev, g)
        res['idc'] = run_idc(net, opt, folder, a.epochs, a.batch_size, a.workers, dev, g)
        net, opt = fresh(); run_idc(net, opt, memory, 1, a.batch_size, a.workers, dev, g)
        res['idc_mem'] = run_idc(net, opt, memory, a.epochs, a.batch_size, a.workers, dev, g)
    (t_m, share), t_i, t_im = res['mgd3'], res['idc'], res['idc_mem']
    print(f"mgd3 batch pipeline:         {1 / t_m:7.3f} epochs/s  (data + augmentation = {100 * share:.1f}% of step time)")
    print(f"IDC-style ImageFolder+PIL:    {1 / t_i:7.3f} epochs/s  -> mgd3 is {t_i / t_m:.2f}x")
    print(f"IDC-style, images in memory:  {1 / t_im:7.3f} epochs/s  -> mgd3 is {t_im / t_m:.2f}x")

if __name__ == '__main__': main()
