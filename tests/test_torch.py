"""PyTorch adapter: index building, datasets, DataLoader workers under fork and spawn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import csp
from csp.torch import TileIndex
from tests.conftest import SAMPLE

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch")
    a = d / "a.csp"
    b = d / "b.csp"
    csp.convert(SAMPLE, a)
    csp.convert(SAMPLE, b)
    return [str(a), str(b)]


def test_aligned_index_patches_lie_in_one_tile(containers):
    idx = TileIndex.build(containers, patch_size=224, mode="aligned", min_tissue=0.0)
    e = idx.entries
    assert len(idx) == 2 * 9 * 12  # one 224 patch per full 240 px tile (edge tiles are 60 and 87 px)
    assert np.all(e["x"] // 240 == (e["x"] + 223) // 240)
    assert np.all(e["y"] // 240 == (e["y"] + 223) // 240)


def test_tissue_filter_and_labels_csv(containers, tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("slide,label\na,1\nb,0\n")
    all_ = TileIndex.build(containers, patch_size=128, mode="grid", min_tissue=0.0)
    tissue = TileIndex.build(containers, patch_size=128, mode="grid", min_tissue=0.5, labels=csv_path)
    assert 0 < len(tissue) < len(all_)
    assert set(np.unique(tissue.entries["label"][tissue.entries["slide"] == 0])) == {1}
    assert set(np.unique(tissue.entries["label"][tissue.entries["slide"] == 1])) == {0}


def test_random_index_is_seeded(containers, tmp_path):
    a = TileIndex.build(containers, patch_size=256, mode="random", patches_per_slide=50, seed=7)
    b = TileIndex.build(containers, patch_size=256, mode="random", patches_per_slide=50, seed=7)
    c = TileIndex.build(containers, patch_size=256, mode="random", patches_per_slide=50, seed=8)
    np.testing.assert_array_equal(a.entries, b.entries)
    assert not np.array_equal(a.entries, c.entries)
    a.save(tmp_path / "i.npz")
    np.testing.assert_array_equal(TileIndex.load(tmp_path / "i.npz").entries, a.entries)


def test_level_by_mpp(containers):
    idx = TileIndex.build(containers[:1], patch_size=64, mode="grid", mpp=2.0, min_tissue=0.0)
    assert set(idx.entries["level"]) == {2}  # 0.499 um * 4 = 2.0 um


def test_dataset_item_equals_read_region(containers):
    from csp.torch import CspDataset

    idx = TileIndex.build(containers, patch_size=200, mode="grid", stride=333, min_tissue=0.0)
    ds = CspDataset(idx)
    item = ds[5]
    e = idx.entries[5]
    with csp.open_slide(containers[int(e["slide"])]) as s:
        ref = s.read_region((int(e["x"]), int(e["y"])), 0, (200, 200), as_array=True)
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (3, 200, 200)
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), ref)


def _collect(loader):
    out = []
    for batch in loader:
        out.append((batch["image"].clone(), batch["slide"].clone(), batch["x"].clone(), batch["y"].clone()))
    return out


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_equal_single_process(containers, context):
    from csp.torch import CspDataset

    idx = TileIndex.build(containers, patch_size=64, mode="grid", stride=150, min_tissue=0.3)
    ds = CspDataset(idx)

    def loader(workers):
        g = torch.Generator().manual_seed(1234)
        kw = {"multiprocessing_context": context} if workers else {}
        return torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=g, num_workers=workers,
                                           **kw)

    ref = _collect(loader(0))
    got = _collect(loader(2))
    assert len(ref) == len(got) > 3
    for (ri, rs, rx, ry), (gi, gs, gx, gy) in zip(ref, got, strict=True):
        assert torch.equal(rs, gs) and torch.equal(rx, gx) and torch.equal(ry, gy)
        assert torch.equal(ri, gi)


def test_iterable_dataset_shards_cover_epoch_once(containers):
    from csp.torch import CspIterableDataset

    idx = TileIndex.build(containers, patch_size=64, mode="grid", stride=300, min_tissue=0.0)
    seen = []
    for rank in range(2):
        ds = CspIterableDataset(idx, seed=3, rank=rank, world_size=2, output="numpy")
        for w in range(3):
            seen.extend(ds.order(w, 3).tolist())
    assert sorted(seen) == list(range(len(idx)))
    ds = CspIterableDataset(idx, seed=3, rank=0, world_size=1)
    first = ds.order().copy()
    ds.set_epoch(1)
    assert not np.array_equal(first, ds.order())
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)
    n = sum(len(b["x"]) for b in loader)
    assert n == len(idx)


def _manual_index(containers, coords, patch):
    from csp.torch.index import ENTRY_DTYPE

    e = np.zeros(len(coords), ENTRY_DTYPE)
    for i, (s, lv, x, y) in enumerate(coords):
        e[i] = (s, lv, x, y, i)
    return TileIndex(list(containers), e, (patch, patch))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_batched_read_equals_per_sample_reads(containers, data):
    """The batched fast path (``__getitems__``) equals stacking per-sample reads, for windows inside one
    tile, across tile edges, across the image edge and partly outside it, on every level."""
    from csp.torch import CspDataset, collate

    patch = data.draw(st.sampled_from([16, 64, 100, 240]))
    coords = data.draw(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(-50, 2300),
                                          st.integers(-50, 1600)), min_size=1, max_size=12))
    ds = CspDataset(_manual_index(containers, coords, patch))
    idx = list(range(len(coords)))
    batch = ds.__getitems__(idx)
    fast = collate(batch)
    ref = torch.utils.data.default_collate([ds[i] for i in idx])
    assert fast.keys() == ref.keys()
    for k in ref:
        assert torch.equal(fast[k], ref[k]), k
    slow = torch.utils.data.default_collate(batch)  # a PatchBatch is also a list of samples
    for k in ref:
        assert torch.equal(slow[k], ref[k]), k


def test_dataloader_with_csp_collate_equals_default(containers):
    from csp.torch import CspDataset, collate

    idx = TileIndex.build(containers, patch_size=96, mode="random", patches_per_slide=40, seed=3)
    ds = CspDataset(idx)

    def run(**kw):
        g = torch.Generator().manual_seed(5)
        return _collect(torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=g, **kw))

    ref = run()
    got = run(num_workers=2, collate_fn=collate)
    assert len(ref) == len(got) == 5
    for a, b in zip(ref, got, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
