"""What the built-in task builders share: seeding, splits, local generation."""

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

SPLITS = ("train", "validation", "test")
# Base seed of every built-in task; the split and the config are mixed in, so
# each split of each config is a different, fixed sample.
SEED = 20150403


def split_rng(split, *config_keys):
    """The fixed random generator of ``split`` of a config."""
    return np.random.default_rng([SEED, SPLITS.index(split), *config_keys])


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose examples are drawn locally with a fixed seed.

    A subclass's config has ``num_train``, ``num_validation``, ``num_test``;
    the subclass defines ``_generate_arrays(count, rng)``, which returns a
    dict of numpy arrays with ``count`` examples each.
    """

    # TFDS would find the builder's file through `importlib_resources`, which
    # it does not declare as a dependency (a fresh install lacks it).
    code_path = epath.Path(__file__)

    def _split_generators(self, dl_manager):
        del dl_manager  # generated locally: nothing to download
        config = self.builder_config
        return {
            split: self._generate_examples(split, getattr(config, f"num_{split}"))
            for split in SPLITS
        }

    def _config_keys(self):
        """Integers that tell this config's generator from the others'."""
        raise NotImplementedError

    def _generate_arrays(self, count, rng):
        raise NotImplementedError

    def _generate_examples(self, split, num_examples):
        # One draw for the whole split: the data depends on the seed only.
        arrays = self._generate_arrays(
            num_examples, split_rng(split, *self._config_keys())
        )
        for i in range(num_examples):
            yield i, {k: v[i] for k, v in arrays.items()}
