import json

import numpy as np
import pytest

from recsys.augment.text import TextEncoder, encoder_path
from recsys.errors import RecsysError

TEXTS = ["Star Wars (1977) | Action, Sci-Fi, space adventure",
         "Alien (1979) | Horror, Sci-Fi, space",
         "Sleepless in Seattle (1993) | Comedy, Romance"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("vectors")


@pytest.fixture(scope="module")
def vectors(cache):
    return TextEncoder(cache_dir=cache, device="cpu", progress=False).encode(TEXTS)


def test_default_encoder_is_the_packaged_minilm():
    path = encoder_path(None)
    assert (path / "modules.json").is_file() and (path / "model.safetensors").is_file()


def test_vectors_are_unit_length_and_follow_meaning(vectors):
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]  # the two space films are closest


def test_cached_vectors_are_read_back_without_loading_the_model(vectors, cache):
    again = TextEncoder(cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.encode(TEXTS), vectors)
    assert again._model is None and len(list(cache.glob("*.npy"))) == 1
    assert not list(cache.glob("*.tmp"))  # written atomically: no leftovers


def test_identity_names_and_fingerprints_the_model(tmp_path, cache):
    default = TextEncoder(cache_dir=cache)
    assert default.identity() == TextEncoder(cache_dir=cache).identity()
    assert default.identity()["name"] == "all-MiniLM-L6-v2"
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    (other_dir / "modules.json").write_text(json.dumps([]))
    other = TextEncoder(str(other_dir), cache_dir=cache)
    assert other.fingerprint != default.fingerprint
    with pytest.raises(RecsysError, match="differs from the one the model was trained with"):
        other.check_identity(default.identity())
    default.check_identity(TextEncoder(cache_dir=cache).identity())


def test_bad_encoder_folder_and_empty_input_are_clear_errors(tmp_path, cache):
    with pytest.raises(RecsysError, match="not a sentence-transformers model folder"):
        TextEncoder(str(tmp_path))
    with pytest.raises(RecsysError, match="no text to encode"):
        TextEncoder(cache_dir=cache).encode([])
