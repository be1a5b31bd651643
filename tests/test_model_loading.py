"""Model inputs: factory + state_dict, pickled modules, weight mismatches, shape check."""
import pytest
import torch

from spray.errors import ConfigError, InputError
from spray.models import check_model, load_model, model_fingerprint, small_resnet


def test_factory_with_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = small_resnet(4)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_model("spray.models.zoo:small_resnet", {"num_classes": 4}, tmp_path / "w.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model.eval()(x)) and not loaded.training
    assert model_fingerprint(loaded) == model_fingerprint(model)


def test_weights_that_do_not_fit_are_explained(tmp_path):
    torch.save(small_resnet(4).state_dict(), tmp_path / "w.pt")
    with pytest.raises(InputError, match=r"shape mismatch.*fc.weight.*num_classes"):
        load_model("spray.models.zoo:small_resnet", {"num_classes": 10}, tmp_path / "w.pt")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="missing key.*unexpected key"):
        load_model("spray.models.zoo:small_resnet", {"num_classes": 4}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not found"):
        load_model("spray.models.zoo:small_resnet", {}, tmp_path / "absent.pt")
    with pytest.raises(ConfigError, match="rejected its arguments"):
        load_model("spray.models.zoo:small_resnet", {"colours": 3})
    with pytest.raises(ConfigError, match="either 'factory'"):
        load_model()


def test_pickled_module_and_not_a_module(tmp_path):
    torch.save(small_resnet(3), tmp_path / "m.pt")
    assert isinstance(load_model(pickled=tmp_path / "m.pt"), torch.nn.Module)
    torch.save(small_resnet(3).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(InputError, match="not a torch.nn.Module"):
        load_model(pickled=tmp_path / "sd.pt")


def test_check_model_against_one_sample():
    model = small_resnet(5).eval()
    check_model(model, torch.zeros(3, 32, 32), 5)
    with pytest.raises(InputError, match=r"\(1, 5\).*expected \(1, 7\)"):
        check_model(model, torch.zeros(3, 32, 32), 7)
    with pytest.raises(InputError, match="fails on one sample.*preprocess"):
        check_model(model, torch.zeros(1, 32, 32), 5)


@pytest.mark.parametrize("factory, kwargs", [
    ("timm:create_model", {"model_name": "resnet18", "num_classes": 4}),
    ("torchvision.models:resnet18", {"num_classes": 4}),
])
def test_a_job_names_a_library_model_directly(tmp_path, factory, kwargs):
    """timm's and torchvision's builders as factories (random init, nothing downloads) + a state_dict."""
    from spray.testing import import_timm, torchvision_available
    if not torchvision_available():
        pytest.skip("torchvision and timm are test extras")
    import_timm()
    torch.manual_seed(0)
    trained = load_model(factory, kwargs)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    loaded = load_model(factory, kwargs, tmp_path / "w.pt")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(loaded(x), trained(x)) and loaded(x).shape == (2, 4)
    assert model_fingerprint(loaded) == model_fingerprint(trained)
    with pytest.raises(ConfigError, match="failed with|rejected its arguments"):
        load_model(factory, {**kwargs, "model_name": "no_such_model"} if "timm" in factory else {"colours": 3})
