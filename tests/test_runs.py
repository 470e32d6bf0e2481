"""npvae.runs: the model read back from a run folder is the model the harness trained, with the
number of training samples its parameters have seen."""
import json

import numpy as np
import pytest

from npvae.runs import IMAGE_SHAPES, RunLoadError, load_run, read_checkpoint_config
from npvae.train import train

from .test_examples import have
from .test_train import toy_config, toy_data


def trained(tmp_path, stop_at_step=None, **kw):
    """A toy run; returns (config, the learner's live VAE at the end)."""
    seen = {}

    def keep(learner, state):
        seen["vae"] = learner.vae
        return stop_at_step is not None and state.steps == stop_at_step

    config = toy_config(tmp_path, **kw)
    train(config, data=toy_data(), callback=keep, log=lambda *_: None)
    return config, seen["vae"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_load_run_gives_the_trained_parameters_and_their_budget(tmp_path, dtype):
    config, vae = trained(tmp_path, samples=3000, dtype=dtype)
    run = load_run(config.out)
    assert run.samples == 3000 and run.status == "finished" and run.config == config
    assert run.vae.dtype == np.dtype(dtype) and run.vae.arch == vae.arch
    assert set(run.vae.params) == set(vae.params)
    for k, p in vae.params.items():
        assert np.array_equal(run.vae.params[k], p), k
    z = np.random.default_rng(0).standard_normal((5, config.nz))
    assert np.array_equal(run.vae.decode(z), vae.decode(z))
    assert read_checkpoint_config(config.out) == (config, 3000)


def test_an_unfinished_run_reports_its_checkpoint_and_ignores_a_hand_edited_config_json(tmp_path):
    config, vae = trained(tmp_path, stop_at_step=7)                 # "Ctrl-C" after 7 steps of 20
    with open(f"{config.out}/config.json") as f:
        on_disk = json.load(f)
    with open(f"{config.out}/config.json", "w") as f:
        json.dump({**on_disk, "nz": 5}, f)                          # edited by hand: not the model
    run = load_run(config.out)
    assert run.samples == 7 * config.batch_size and run.status == "interrupted"
    assert run.config.nz == config.nz
    for k, p in vae.params.items():
        assert np.array_equal(run.vae.params[k], p), k


def test_a_folder_without_a_readable_fitting_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(RunLoadError, match="no checkpoint.npz"):
        load_run(str(tmp_path))
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip file")
    with pytest.raises(RunLoadError, match="cannot be read"):
        load_run(str(tmp_path))
    config, _ = trained(tmp_path / "b")
    path = f"{config.out}/checkpoint.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["config"] = np.array(json.dumps({**json.loads(str(arrays["config"])), "hidden": [9]}))
    np.savez(path, **arrays)                                          # parameters of width 8, config says 9
    with pytest.raises(RunLoadError, match="has shape"):
        load_run(config.out)


def test_image_shapes_are_the_loaders():
    if not have("frey_rawface.mat"):
        pytest.skip("frey_rawface.mat not found: set NPVAE_DATA_DIR (e.g. ../shared/data)")
    from npvae.data import load_frey_face
    assert IMAGE_SHAPES["frey"] == load_frey_face().image_shape == (28, 20)     # 28 rows, 20 columns
    assert IMAGE_SHAPES["mnist"] == (28, 28)
