"""Vocabulary parsing, synonym averaging and the content-hashed text-embedding cache."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from masqclip.modeling.clip import create_clip, get_tokenizer
from masqclip.modeling.clip.text import BACKGROUND, TextEmbedder, default_cache_dir, parse_vocabulary


def test_parse_vocabulary():
    assert parse_vocabulary("cat; kitty, dog") == [["cat"], ["kitty", "dog"]]
    assert parse_vocabulary(["wall, brick wall", " sky ", ""]) == [["wall", "brick wall"], ["sky"]]
    with pytest.raises(ValueError):
        parse_vocabulary(" ; ,")


class CountingEncoder:
    """Deterministic fake text tower: token ids -> fixed random features; counts calls."""

    def __init__(self, dim: int = 8):
        self.table = torch.randn(50000, dim, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.table[tokens].sum(dim=1)


def _tokenize(names):
    return get_tokenizer("masqclip-tiny")(names)


def _embedder(tmp_path, encoder, weights="tag:test"):
    return TextEmbedder(encode_text=encoder, tokenizer=_tokenize, model_name="masqclip-tiny",
                        weights=weights, cache_dir=tmp_path)


def test_synonyms_averaged_then_normalised_background_last(tmp_path):
    enc = CountingEncoder()
    emb = _embedder(tmp_path, enc).compute(parse_vocabulary("cat; wall, brick wall"))
    single = {n: F.normalize(enc(_tokenize([n])), dim=-1)[0] for n in ("cat", "wall", "brick wall", BACKGROUND)}
    assert emb.shape == (3, 8)
    torch.testing.assert_close(emb[0], single["cat"])
    torch.testing.assert_close(emb[1], F.normalize(single["wall"] + single["brick wall"], dim=0))
    torch.testing.assert_close(emb[2], single[BACKGROUND])
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_cache_miss_writes_hit_reads_change_misses(tmp_path):
    enc = CountingEncoder()
    first = _embedder(tmp_path, enc)("cat; dog")
    assert enc.calls == 1 and len(list(tmp_path.glob("*.pt"))) == 1
    again = _embedder(tmp_path, enc)(["cat", "dog"])  # same vocabulary, other spelling: hit
    assert enc.calls == 1
    torch.testing.assert_close(again, first)
    _embedder(tmp_path, enc)("cat; dog, puppy")  # changed vocabulary: miss
    assert enc.calls == 2
    _embedder(tmp_path, enc, weights="tag:other")("cat; dog")  # other weights: miss
    assert enc.calls == 3 and len(list(tmp_path.glob("*.pt"))) == 3
    _embedder(tmp_path, enc, weights=None)("cat; dog")  # random weights: never cached
    _embedder(tmp_path, enc, weights=None)("cat; dog")
    assert enc.calls == 5 and len(list(tmp_path.glob("*.pt"))) == 3


def test_cache_dir_resolution(monkeypatch, tmp_path):
    assert default_cache_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv("MASQCLIP_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "text"
    monkeypatch.delenv("MASQCLIP_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "masqclip", "text")


def test_real_tiny_clip_text_tower(tmp_path):
    torch.manual_seed(0)
    clip = create_clip(model_name="masqclip-tiny", pretrained="")
    weights = tmp_path / "w.pt"
    torch.save({"state_dict": clip.state_dict()}, weights)
    embedder = TextEmbedder.from_clip(clip, model_name=["masqclip-tiny"], pretrained=str(weights),
                                      cache_dir=tmp_path / "cache")
    emb = embedder("red circle; blue square, blue box")
    direct = F.normalize(clip.encode_text(_tokenize(["red circle"])), dim=-1)[0]
    assert emb.shape == (3, clip.text_projection.shape[1])
    torch.testing.assert_close(emb[0], direct, atol=1e-6, rtol=0)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_truncated_cache_file_is_recomputed(tmp_path):
    enc = CountingEncoder()
    first = _embedder(tmp_path, enc)("cat; dog")
    (cached,) = tmp_path.glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:40])  # a crash while another job wrote it, a full disk
    again = _embedder(tmp_path, enc)("cat; dog")
    assert enc.calls == 2
    torch.testing.assert_close(again, first)
    assert _embedder(tmp_path, enc)("cat; dog") is not None and enc.calls == 2  # rewritten: a hit again
