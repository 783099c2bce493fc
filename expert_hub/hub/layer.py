"""`ExpertLayer`: a Keras 3 layer around an expert hub module, fine-tunable with `fit`.

hub.KerasLayer is tf-keras only; this is its Keras 3 counterpart. The layer wraps the module's own tf.Variables
(no copies), so gradients computed by Keras update the loaded module, and it forwards `training` to the
module's `__call__` and adds its `regularization_losses`.
"""

import contextlib
import contextvars
import os

import keras
import tensorflow as tf

from expert_hub.hub import registry as registry_lib
from expert_hub.hub import session as session_lib
from expert_hub.models import adapters as adapters_lib


# What the caller of a `.keras` load allows (ExpertLayer.loading): (handles allowed unsafe ops, trusted dirs).
_LOADING = contextvars.ContextVar("expert_layer_loading", default=(frozenset(), ()))


@keras.saving.register_keras_serializable(package="expert_hub")
class ExpertLayer(keras.layers.Layer):
  """images float32 [B, H, W, 3] in [0, 1] -> expert features [B, D].

  Args:
    handle: expert name ("shapes", "world32/shapes/1"), module path or URL.
    trainable: fine-tune the module's trainable variables.
    export_dirs: where names are looked up (default: $EXPERT_HUB_EXPORT_DIRS); modules inside are trusted.
    allow_unsafe_ops: load a module from elsewhere even if its graph has ops outside the allowlist. Never saved
      in the layer's config: a `.keras` file cannot carry it; whoever loads one says it again (`loading`).
    train_adapters_only: with trainable=True, train only the adapters of an adapter expert (variables named
      "adapter_*"); the trunk stays frozen, as when the expert was trained.
    session: a session.ModuleSession to take the module from (loaded once per process, its saved weights back
      before each new layer); None loads it for this layer alone. Not saved in the layer's config.
  """

  def __init__(self, handle, trainable=False, export_dirs=None, allow_unsafe_ops=False,
               train_adapters_only=False, session=None, **kwargs):
    super().__init__(trainable=trainable, **kwargs)
    self.handle = handle
    self.export_dirs = list(export_dirs) if export_dirs else None
    self.allow_unsafe_ops = allow_unsafe_ops
    self.train_adapters_only = train_adapters_only
    session = session or session_lib.ModuleSession.for_export_dirs(self.export_dirs)
    self._module, self.module_path = session.module(handle, allow_unsafe_ops=allow_unsafe_ops,
                                                    for_training=trainable)
    for attr in ("variables", "trainable_variables", "regularization_losses"):
      if not hasattr(self._module, attr):
        raise ValueError(f"Module {self.module_path!r} lacks `{attr}`; expected a TF2 Reusable SavedModel.")
    trainable_ids = {id(v) for v in self._module.trainable_variables}
    if train_adapters_only:
      trainable_ids = {id(v) for v in self._module.trainable_variables if adapters_lib.is_adapter_layer(v.name)}
      if not trainable_ids:
        raise ValueError(f"train_adapters_only=True but module {self.module_path!r} has no adapter variables "
                         "(names 'adapter_*'); it is not an adapter expert.")
    for v in self._module.variables:
      wrapped = keras.Variable(initializer=v, trainable=id(v) in trainable_ids, dtype=v.dtype, shape=v.shape,
                               name=v.name.split(":")[0].replace("/", "_"))
      self._track_variable(wrapped)
    self._feature_dim = session.metadata(handle).get("feature_dim")
    self.built = True

  def call(self, images, training=False):
    features = self._module(images, training=bool(training) if training is not None else False)
    if self.trainable:
      for loss_fn in self._module.regularization_losses:
        self.add_loss(loss_fn())
    return features

  def compute_output_shape(self, input_shape):
    if self._feature_dim is None:  # Not an expert_hub module: ask the module itself.
      self._feature_dim = int(self._module(tf.zeros([1, 32, 32, 3]), training=False).shape[-1])
    return (input_shape[0], self._feature_dim)

  def get_config(self):
    """The layer's config for a `.keras` file: handle, export dirs, trainability, never `allow_unsafe_ops`."""
    config = super().get_config()
    config.update({"handle": self.handle, "export_dirs": self.export_dirs,
                   "train_adapters_only": self.train_adapters_only})
    return config

  @classmethod
  def from_config(cls, config):
    """A layer from a saved config (keras.saving.load_model). A file cannot vouch for the module it names: a
    recorded `allow_unsafe_ops` is ignored, and the export dirs it records are searched for the name but not
    trusted (only $EXPERT_HUB_EXPORT_DIRS and dirs the caller names are). A caller who trusts a module says so
    again around the load: `with ExpertLayer.loading(allow_unsafe_ops_for=[handle], trusted_dirs=[...]):`."""
    config = dict(config)
    config.pop("allow_unsafe_ops", None)
    allowed, trusted = _LOADING.get()
    export_dirs = config.pop("export_dirs", None)
    session = session_lib.ModuleSession(registry_lib.Registry(export_dirs),
                                        trusted_dirs=list(trusted) + registry_lib.default_export_dirs())
    allow = False
    if allowed and config.get("handle") is not None:
      module_path = os.path.realpath(session.local_path(config["handle"])[0])
      allow = config["handle"] in allowed or module_path in {os.path.realpath(a) for a in allowed}
    return cls(allow_unsafe_ops=allow, export_dirs=export_dirs, session=session, **config)

  @staticmethod
  @contextlib.contextmanager
  def loading(allow_unsafe_ops_for=(), trusted_dirs=()):
    """While loading a saved model, allows unsafe ops for the modules named in `allow_unsafe_ops_for` (handles
    as the file records them, or module folders) and trusts `trusted_dirs`' modules for their ops: both are
    the caller's decision, never the file's. Modules not named stay checked, so one allowed module does not
    open the door for the others a file names.

    Usage:
      with ExpertLayer.loading(allow_unsafe_ops_for=["/modules/custom_op_net"]):
        model = keras.saving.load_model("model.keras")
    """
    if isinstance(allow_unsafe_ops_for, str) or isinstance(trusted_dirs, str):
      raise TypeError(f"allow_unsafe_ops_for and trusted_dirs are lists of handles or folders; got "
                      f"{allow_unsafe_ops_for!r} and {trusted_dirs!r}.")
    token = _LOADING.set((frozenset(allow_unsafe_ops_for), tuple(trusted_dirs)))
    try:
      yield
    finally:
      _LOADING.reset(token)
