"""The evaluation-network registry: every network at 32 and 224 px, parameter counts, errors, teachers."""
import pytest, torch
from mgd3.evalnets import create_evalnet, list_evalnets, count_parameters, penultimate_features, load_teacher, EVALNETS

# parameter counts for 10 classes, 3 input channels (None: size not supported)
PARAMS = {('convnet3', 32): 320_010, ('convnet3', 224): 1_303_050,
          ('convnet6', 32): None, ('convnet6', 224): 754_570,
          ('resnet_ap10', 32): 4_903_242, ('resnet_ap10', 224): 4_910_922,
          ('resnet18', 32): 11_173_962, ('resnet18', 224): 11_181_642}

def test_registry_is_complete():
    assert list_evalnets() == ['convnet3', 'convnet6', 'resnet18', 'resnet_ap10']
    assert list_evalnets('resnet') == ['resnet18', 'resnet_ap10']
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
    for name in EVALNETS:
        net = create_evalnet(name, 10, 224)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()), name

def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"valid names: \['convnet3', 'convnet6', 'resnet18', 'resnet_ap10'\]"):
        create_evalnet('resnet10', 10, 32)

def test_embedded_teacher_loads_and_is_accurate_on_a_test_sample():
    from mgd3.data import load_mnist5k
    t = load_teacher('mnist5k', device='cpu')
    assert t.config['test_acc'] > 90 and t.config['num_train'] == 3600
    x, y = load_mnist5k('test')
    idx = torch.arange(0, 1000, 10)
    with torch.no_grad(): acc = (t(x[idx].float() / 255).argmax(1) == y[idx]).float().mean().item()
    assert acc > 0.85

def test_timm_teacher_without_weights_says_how_to_pass_them(tmp_path):
    with pytest.raises(FileNotFoundError, match='pass weights='): load_teacher('resnet18')
    with pytest.raises(FileNotFoundError, match='pass weights='): load_teacher('resnet18', weights=tmp_path / 'missing.safetensors')

def test_timm_teacher_from_local_weights(tmp_path):
    import timm
    from mgd3.core import save_tensors
    net = timm.create_model('resnet18', pretrained=False, num_classes=5)
    save_tensors(tmp_path / 'w.safetensors', net.state_dict())
    t = load_teacher('resnet18', weights=tmp_path / 'w.safetensors', num_classes=5, device='cpu')
    assert t(torch.rand(2, 3, 64, 64)).shape == (2, 5)  # resized to 224 inside
