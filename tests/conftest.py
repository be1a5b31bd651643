"""Shared fixtures: a torchvision stand-in for zennit, and small float64 reference models."""
import pytest
import torch

from spray.models import zoo
from spray.testing import install_torchvision_stub, remove_torchvision_stub


@pytest.fixture(scope="session")
def zennit():
    """zennit 0.5.1 with a torchvision stand-in (see spray.testing)."""
    replaced = install_torchvision_stub()
    module = pytest.importorskip("zennit")
    pytest.importorskip("zennit.attribution")
    pytest.importorskip("zennit.torchvision")
    yield module
    remove_torchvision_stub(replaced)


def randomize_batch_norm(model: torch.nn.Module, eps: float = 1e-5, seed: int = 0) -> torch.nn.Module:
    """Give batch norms non-trivial statistics, so that folding them is really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.eps = eps
    return model


@pytest.fixture
def vgg_bn():
    torch.manual_seed(0)
    return randomize_batch_norm(zoo.vgg11_bn(10, width=0.125, hidden=32, pool_size=2)).double().eval()


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    return randomize_batch_norm(zoo.resnet18(10, width=0.125)).double().eval()


@pytest.fixture(scope="session")
def bed_cache(tmp_path_factory):
    """One cache of trained test beds for the whole session (SPRAY_CACHE points at it)."""
    import os
    folder = tmp_path_factory.mktemp("bed-cache")
    old = os.environ.get("SPRAY_CACHE")
    os.environ["SPRAY_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SPRAY_CACHE", None)
    else:
        os.environ["SPRAY_CACHE"] = old


def bed_spec(bed, **kw):
    from spray.explain import ExplainSpec
    return ExplainSpec(data={"type": "npz", "path": str(bed.data)},
                       model={"factory": bed.info["model"]["factory"], "kwargs": bed.info["model"]["kwargs"],
                              "weights": str(bed.weights)},
                       preprocess=bed.info["preprocess"], **{"composite": "epsilon_gamma_box", "batch_size": 64, **kw})


@pytest.fixture(scope="session")
def audited_beds(bed_cache, tmp_path_factory):
    """Both bundled beds built, trained, explained (in-process) and analysed: name -> (bed, store, summary)."""
    from spray.analysis import AnalysisParams, analyze_store
    from spray.datasets import prepare_bed
    from spray.explain import ClusterSpec, run_explain
    out = {}
    for name in ("watermark", "background"):
        bed = prepare_bed(name, cache=bed_cache)
        store = tmp_path_factory.mktemp(f"store-{name}") / "store"
        run_explain(bed_spec(bed), store, shard_size=256, cluster=ClusterSpec(mode="synchronous"), progress=False)
        summary = analyze_store(store, store.parent / "analysis", AnalysisParams(embeddings=()), progress=False)
        out[name] = (bed, store, summary)
    return out


@pytest.fixture(scope="session")
def scene_bed(bed_cache):
    """The CI scene bed (four drawn object classes on photo crops, a stamp on class 2), trained once."""
    from spray.datasets import prepare_bed
    return prepare_bed("scenes-small", cache=bed_cache)
