"""The evaluation-network registry: every network at 32 and 224 px, parameter counts, errors, teachers."""
import pytest, torch
from mgd3.evalnets import create_evalnet, list_evalnets, count_parameters, penultimate_features, load_teacher, EVALNETS

# parameter counts for 10 classes, 3 input channels (None: size not supported)
PARAMS = {('convnet3', 32): 320_010, ('convnet3', 224): 1_303_050,
          ('convnet6', 32): None, ('convnet6', 224): 754_570,
          ('resnet_ap10', 32): 4_903_242, ('resnet_ap10', 224): 4_910_922,
          ('resnet18', 32): 11_173_962, ('resnet18', 224): 11_181_642,
          ('resnet18_bn', 32): 11_173_962, ('resnet18_bn', 224): 11_181_642}
IDC_NETS = ('convnet3', 'convnet6', 'resnet18', 'resnet_ap10')   # the hard-label protocol's instance-norm networks
BN_NETS = ('resnet18_bn',)                                        # RDED's torchvision student

def test_registry_is_complete():
    assert list_evalnets() == sorted(IDC_NETS + BN_NETS)
    assert list_evalnets('resnet') == ['resnet18', 'resnet18_bn', 'resnet_ap10']
    assert {n for n, _ in PARAMS} == set(EVALNETS)

@pytest.mark.parametrize('name', sorted(EVALNETS))
@pytest.mark.parametrize('size', [32, 224])
def test_forward_and_parameter_count(name, size):
    expected = PARAMS[(name, size)]
    if expected is None:
        with pytest.raises(ValueError, match='too small'): create_evalnet(name, 10, size)
        return
    torch.manual_seed(0)
    net = create_evalnet(name, 10, size).eval()
    assert count_parameters(net) == expected
    with torch.no_grad(): out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert penultimate_features(net, torch.randn(2, 3, size, size)).shape[0] == 2

@pytest.mark.parametrize('name', sorted(EVALNETS))
def test_grayscale_and_class_count(name):
    net = create_evalnet(name, 7, 64, in_chans=1)
    assert net(torch.randn(1, 1, 64, 64)).shape == (1, 7)

def test_no_batch_norm_anywhere():
    for name in IDC_NETS:
        net = create_evalnet(name, 10, 224)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()), name

def test_unknown_name_lists_valid_ones():
    names = r"valid names: \['convnet3', 'convnet6', 'resnet18', 'resnet18_bn', 'resnet_ap10'\]"
    with pytest.raises(ValueError, match=names):
        create_evalnet('resnet10', 10, 32)

def test_embedded_teacher_loads_and_is_accurate_on_a_test_sample():
    from mgd3.data import load_mnist5k
    t = load_teacher('mnist5k', device='cpu')
    assert t.config['test_acc'] > 90 and t.config['num_train'] == 3600
    x, y = load_mnist5k('test')
    idx = torch.arange(0, 1000, 10)
    with torch.no_grad(): acc = (t(x[idx].float() / 255).argmax(1) == y[idx]).float().mean().item()
    assert acc > 0.85

def test_timm_teacher_without_weights_says_how_to_pass_them(tmp_path, monkeypatch):
    import huggingface_hub
    def unreachable(repo, filename, **kw): raise OSError('Name or service not known')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', unreachable)   # no network in tests
    with pytest.raises(FileNotFoundError, match="cannot download timm/resnet18.tv_in1k/model.safetensors.*pass weights="):
        load_teacher('resnet18.tv_in1k')
    with pytest.raises(FileNotFoundError, match='pass weights='):
        load_teacher('resnet18', weights=tmp_path / 'missing.safetensors')

def test_timm_teacher_downloads_safetensors_from_the_hub(tmp_path, monkeypatch):
    "weights=None: model.safetensors of timm's hub repo, fetched with huggingface_hub (monkeypatched: no network)."
    import huggingface_hub, timm
    from mgd3.core import save_tensors
    net = timm.create_model('resnet18.tv_in1k', pretrained=False).eval()
    save_tensors(tmp_path / 'model.safetensors', net.state_dict())
    asked = []
    def fake_download(repo, filename, **kw):
        asked.append((repo, filename))
        return str(tmp_path / filename)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', fake_download)
    t = load_teacher('resnet18.tv_in1k', device='cpu')
    assert asked == [('timm/resnet18.tv_in1k', 'model.safetensors')]   # never a pickle (pytorch_model.bin)
    assert (t.num_classes, t.image_size, t.config['weights']) == (1000, 224, str(tmp_path / 'model.safetensors'))
    x = torch.rand(2, 3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad(): torch.testing.assert_close(t(x), net((x - mean) / std), rtol=1e-4, atol=1e-4)

def test_pickled_teacher_weights_are_refused(tmp_path):
    import timm
    torch.save(timm.create_model('resnet18', pretrained=False).state_dict(), tmp_path / 'w.pth')
    with pytest.raises(ValueError, match='never loaded'): load_teacher('resnet18', weights=tmp_path / 'w.pth')

def test_timm_teacher_from_local_weights(tmp_path):
    import timm
    from mgd3.core import save_tensors
    net = timm.create_model('resnet18', pretrained=False, num_classes=5)
    save_tensors(tmp_path / 'w.safetensors', net.state_dict())
    t = load_teacher('resnet18', weights=tmp_path / 'w.safetensors', num_classes=5, device='cpu')
    assert t(torch.rand(2, 3, 64, 64)).shape == (2, 5)  # resized to 224 inside

# ---- the networks against the public definitions, re-implemented here -----------------------------------------------
import torch.nn.functional as F
from torch import nn

def _idc_resnet_ap10(net, x):
    "IDC's ResNetAP-10 forward (models/resnet_ap.py), written functionally with `net`'s weights in definition order."
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    gn = lambda x, m: F.group_norm(x, m.num_groups, m.weight, m.bias, m.eps)
    size = x.shape[-1]
    c, n = iter(convs), iter(norms)
    k = 7 if size > 128 else 3
    x = F.relu(gn(F.conv2d(x, next(c).weight, stride=1, padding=k // 2), next(n)))    # IntroBlock: stride-1 conv
    if size > 128: x = F.avg_pool2d(x, 4, 4)
    elif size > 64: x = F.avg_pool2d(x, 2, 2)
    cin = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        out = F.relu(gn(F.conv2d(x, next(c).weight, padding=1), next(n)))
        if stride != 1: out = F.avg_pool2d(out, stride, stride)                         # pool after the first conv
        out = gn(F.conv2d(out, next(c).weight, padding=1), next(n))
        if stride != 1 or cin != planes:                                               # downsample: conv, pool, norm
            res = gn(F.avg_pool2d(F.conv2d(x, next(c).weight), stride, stride), next(n))
        else: res = x
        x, cin = F.relu(out + res), planes
    x = F.avg_pool2d(x, x.shape[-1]).flatten(1)
    return F.linear(x, net.fc.weight, net.fc.bias)

@pytest.mark.parametrize('size', [32, 96, 224])
def test_resnet_ap10_is_idcs_resnet_ap(size):
    torch.manual_seed(0)
    net = create_evalnet('resnet_ap10', 10, size).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(): torch.testing.assert_close(net(x), _idc_resnet_ap10(net, x), rtol=1e-4, atol=1e-4)
    # IDC's init: every conv ~ N(0, 2 / (k·k·out)), every norm weight 1
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() > 20000:
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            assert abs(m.weight.std().item() / (2 / n) ** 0.5 - 1) < 0.05
        if isinstance(m, nn.GroupNorm): assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())

def _torchvision_resnet(arch, size, norm_layer=None, small='none'):
    "torchvision's ResNet, with IDC's or RDED's small-input stem."
    import torchvision
    kw = {'norm_layer': norm_layer} if norm_layer else {}
    net = getattr(torchvision.models, arch)(weights=None, num_classes=10, **kw)
    if small == 'rded' and size <= 64: net.conv1, net.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    if small == 'idc' and size <= 128:   # IDC's models/resnet.py: 'small' (<= 64) and 'mid' (<= 128) stems
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        if size <= 64: net.maxpool = nn.Identity()
    return net

@pytest.mark.parametrize('name,arch,size', [('resnet18_bn', 'resnet18', 224), ('resnet18_bn', 'resnet18', 32),
                                            ('resnet18', 'resnet18', 224), ('resnet18', 'resnet18', 96),
                                            ('resnet18', 'resnet18', 32)])
def test_resnets_are_torchvisions(name, arch, size):
    "The BN student is torchvision's net (RDED's load_model); IDC's ResNet-18 is torchvision's layout with GroupNorm."
    idc = name == 'resnet18'
    norm = (lambda c: nn.GroupNorm(c, c)) if idc else None
    ref = _torchvision_resnet(arch, size, norm, 'idc' if idc else 'rded').eval()
    torch.manual_seed(0); net = create_evalnet(name, 10, size).eval()
    sd, rsd = net.state_dict(), ref.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in rsd.items()}
    ref.load_state_dict(sd)   # torchvision weights and mgd3's are interchangeable
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(): torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4)
    # torchvision's and IDC's init: He fan-out convs, every norm weight 1 (timm's zero_init_last is off)
    norms = [m for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert all(bool((m.weight == 1).all()) for m in norms)
    w = net.layer3[0].conv1.weight
    assert abs(w.std().item() / (2 / (w.shape[2] * w.shape[3] * w.shape[0])) ** 0.5 - 1) < 0.05

def test_bn_student_has_batch_norm_only():
    for name in BN_NETS:
        mods = list(create_evalnet(name, 10, 224).modules())
        assert any(isinstance(m, nn.BatchNorm2d) for m in mods), name
        assert not any(isinstance(m, nn.GroupNorm) for m in mods), name

def test_timm_teacher_loads_torchvision_weights(tmp_path):
    "RDED's ImageNet-1K teacher is torchvision's ResNet-18: its state dict loads into load_teacher('resnet18')."
    import torchvision
    from mgd3.core import save_tensors
    tv = torchvision.models.resnet18(weights=None).eval()
    save_tensors(tmp_path / 'tv.safetensors', tv.state_dict())
    t = load_teacher('resnet18', weights=tmp_path / 'tv.safetensors', device='cpu')
    x = torch.rand(2, 3, 224, 224)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad(): torch.testing.assert_close(t(x), tv((x - mean) / std), rtol=1e-4, atol=1e-4)
