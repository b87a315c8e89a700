"""One decoder for every read path (issue 22 item 1, issue 27 item 3): 16-bit scaled, alpha on white, EXIF orientation
as torchvision reads it, and every reader of an image file (evaluation in memory or streamed, the metrics' class sets, the latent cache's ADM crop,
the export) giving the same tensor for any mode and size."""
import struct, tempfile, zlib
from pathlib import Path
import numpy as np
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from PIL import Image
import mgd3

def _png16(path, arr):
    "A 16-bit PNG written by hand (PIL cannot write 48-bit RGB): grey `[H, W]` or RGB `[H, W, 3]` uint16."
    h, w = arr.shape[:2]
    raw = b''.join(b'\x00' + arr[i].astype('>u2').tobytes() for i in range(h))
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', w, h, 16, 2 if arr.ndim == 3 else 0, 0, 0, 0)
    Path(path).write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw))
                           + chunk(b'IEND', b''))

def _one_image_folder(root, save):
    "An ImageFolder with one class `c` holding `0.png` (a distilled set's layout too); `save(path)` writes the file."
    (root / 'c').mkdir(parents=True)
    save(root / 'c' / '0.png')
    return root

def _every_path(root, size=None):
    "The image as each reader in mgd3 returns it (the names are the top-level ones user code has always used)."
    x = mgd3.load_image_folder(root).images[0]
    out = {'evaluation (in memory)': x,
           'evaluation (streamed)': next(mgd3.StreamedImageSet(root, num_workers=0).batches([[0]]))[0],
           'metrics (class set)': mgd3.class_set_images(root, 'c')[0]}
    if size is not None:   # the latent cache's ADM crop, asked for the channels the folder has: identity on a square
        out['latents (ADM crop)'] = mgd3.load_image(root / 'c' / '0.png', size, channels=x.shape[0])
    return out

def test_a_16bit_grey_png_is_mid_grey_and_grey_on_every_path(tmp_path):
    "Before: evaluation clipped 32768 to 255 (white) and the metrics read the same file as RGB."
    root = _one_image_folder(tmp_path / 'set', lambda p: Image.fromarray(np.full((6, 6), 32768, np.uint16)).save(p))
    for path, x in _every_path(root, 6).items():
        assert x.shape == (1, 6, 6) and x.dtype == torch.uint8, path
        assert (x == 128).all(), (path, x.unique())

def test_16bit_values_are_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 32768, 65535]], np.uint16)
    root = _one_image_folder(tmp_path / 'set', lambda p: Image.fromarray(v).save(p))
    assert mgd3.load_image_folder(root).images[0].flatten().tolist() == [0, 1, 128, 255]

def test_a_16bit_rgb_png_is_scaled(tmp_path):
    a = np.zeros((4, 4, 3), np.uint16)
    a[..., 0], a[..., 1], a[..., 2] = 32768, 65535, 255
    root = _one_image_folder(tmp_path / 'set', lambda p: _png16(p, a))
    for path, x in _every_path(root, 4).items():
        assert x.shape == (3, 4, 4), path
        assert x[:, 0, 0].tolist() == [128, 255, 0], path

def test_transparency_is_composited_on_white(tmp_path):
    "Before: the alpha was dropped, so a transparent pixel showed the colour stored under it (here black)."
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2, ..., :3], rgba[:2, ..., 3] = (10, 20, 30), 255   # top half opaque, bottom half transparent black
    root = _one_image_folder(tmp_path / 'set', lambda p: Image.fromarray(rgba).save(p))
    for path, x in _every_path(root, 4).items():
        assert x[:, 0, 0].tolist() == [10, 20, 30], path
        assert (x[:, 2:] == 255).all(), path

def test_exif_orientation_as_torchvision_by_default_upright_when_asked(tmp_path):
    """Every read path leaves an EXIF orientation tag alone, as torchvision's loader and the authors' do (fidelity:
    an ImageNet JPEG with the tag decodes as it did for the paper's numbers); `exif=True` turns the image upright."""
    up = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90° clockwise to display
    root = _one_image_folder(tmp_path / 'set', lambda p: Image.fromarray(up).save(p, exif=exif))
    for path, x in _every_path(root).items():
        assert np.array_equal(x[0].numpy(), up), path
    from torchvision.datasets.folder import pil_loader
    f = next(root.rglob('*.png'))
    assert np.array_equal(np.asarray(pil_loader(str(f)))[..., 0], up)   # torchvision's reading, the reference
    assert np.array_equal(mgd3.decode_image(f, exif=True)[0].numpy(), np.rot90(up, -1))

def test_a_folder_takes_its_first_images_channels(tmp_path):
    "One rule: the first image decides grey vs RGB and the others are converted to it."
    root = tmp_path / 'set'
    (root / 'c').mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(root / 'c' / '0.png')
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(root / 'c' / '1.png')
    assert mgd3.load_image_folder(root).images.shape == mgd3.class_set_images(root, 'c').shape == (2, 1, 4, 4)

# ---- the property: any mode, any size, every read path the same (and equal to a reference written here)

MODES = ['1', 'L', 'LA', 'P', 'RGB', 'RGBA', 'I;16', 'I', 'CMYK', 'RGB48']

def _reference(mode, arr, pal=None):
    "What the decoder must give, computed without PIL's conversions (None: check only that every path agrees)."
    on_white = lambda a: np.round(a[..., :-1] * (a[..., -1:] / 255) + 255 * (1 - a[..., -1:] / 255)).astype(np.uint8)
    if mode == '1': return (arr.astype(np.uint8) * 255)[None]
    if mode == 'L': return arr[None]
    if mode == 'RGB': return arr.transpose(2, 0, 1)
    if mode in ('LA', 'RGBA'): return on_white(arr).transpose(2, 0, 1)
    if mode in ('I;16', 'I'): return np.round(arr / 257).astype(np.uint8)[None]
    if mode == 'RGB48': return (arr >> 8).astype(np.uint8).transpose(2, 0, 1)
    if mode == 'P': return pal[arr].transpose(2, 0, 1)
    return None

def _write(mode, arr, path, pal):
    if mode == 'RGB48': return _png16(path, arr)
    if mode == 'I': im = Image.fromarray(arr.astype(np.int32))
    elif mode == 'I;16': im = Image.fromarray(arr)
    elif mode == '1': im = Image.fromarray(arr)
    elif mode == 'P':
        im = Image.fromarray(arr, 'P')
        im.putpalette(pal.flatten().tolist())
    else: im = Image.fromarray(arr, mode) if mode == 'CMYK' else Image.fromarray(arr)
    im.save(path, format='TIFF' if mode in ('CMYK', 'I') else 'PNG')   # PIL writes neither as PNG

def _draw(mode, h, w, rng):
    if mode == '1': return rng.integers(0, 2, (h, w)).astype(bool)
    if mode in ('L', 'P'): return rng.integers(0, 256 if mode == 'L' else 4, (h, w), dtype=np.uint8)
    if mode in ('I;16', 'I'): return rng.integers(0, 65536, (h, w)).astype(np.uint16)
    if mode == 'RGB48': return rng.integers(0, 65536, (h, w, 3)).astype(np.uint16)
    c = {'LA': 2, 'RGB': 3, 'RGBA': 4, 'CMYK': 4}[mode]
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(MODES), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_every_read_path_decodes_alike(mode, h, w, seed):
    rng = np.random.default_rng(seed)
    arr, pal = _draw(mode, h, w, rng), rng.integers(0, 256, (256, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as d:
        root = _one_image_folder(Path(d) / 'set', lambda p: _write(mode, arr, p, pal))
        got = _every_path(root, h if h == w else None)
        got['export (decode_image)'] = mgd3.decode_image(root / 'c' / '0.png')
        first = next(iter(got.values()))
        for path, x in got.items():
            assert x.dtype == torch.uint8 and x.shape[1:] == (h, w), (path, x.shape)
            assert torch.equal(x, first), f"{path} differs from the in-memory evaluation read for mode {mode}"
        ref = _reference(mode, arr, pal)
        if ref is not None: assert np.array_equal(first.numpy(), ref), (mode, first.numpy(), ref)
        assert first.shape[0] == (1 if mode in ('1', 'L', 'LA', 'I;16', 'I') else 3)
