"""Getting a published module onto local disk: its caches, the download (kagglehub, then tfhub.dev), first trust.

Only a module that is asked for is fetched (see catalogue.py for the names). In order:

  1. the kagglehub cache: `$KAGGLEHUB_CACHE/models/<owner>/<model>/<framework>/<variation>/<version>/`, complete
     when kagglehub's marker file `<version>.complete` sits beside it (kagglehub/cache.py);
  2. tensorflow_hub's cache: `$TFHUB_CACHE_DIR/<sha1 of the tfhub.dev handle>/`;
  3. `kagglehub.model_download(<Kaggle handle>)`, which shows its own progress and fills cache 1;
  4. `tensorflow_hub.resolve(<tfhub.dev handle>)` (tfhub.dev now redirects to Kaggle and some redirected
     downloads fail with HTTP 403: tensorflow/hub#922, #932), which fills cache 2.

If both downloads fail, PublishedModuleUnavailable names the handle, what each source said and the folder to fill
by hand from a machine with network. The first time a folder is used its files' sha256 are recorded (trust.py,
in `expert_hub_trust.json` at the root of the cache it sits in, or $EXPERT_HUB_TRUST_FILE); `verify` checks them
before every load. The op allowlist (loading.check_ops) applies to these modules as to any foreign one.
"""

import hashlib
import logging
import os
import sys
import tempfile

from expert_hub.hub import catalogue as catalogue_lib
from expert_hub.hub import trust

log = logging.getLogger(__name__)
KAGGLEHUB_CACHE_ENV = "KAGGLEHUB_CACHE"
DEFAULT_KAGGLEHUB_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "kagglehub")  # kagglehub/config.py


class PublishedModuleUnavailable(RuntimeError):
  """Neither source could provide a published module (offline, refused, or not found)."""


def kagglehub_cache_root():
  return os.environ.get(KAGGLEHUB_CACHE_ENV) or DEFAULT_KAGGLEHUB_CACHE


def kagglehub_cache_dir(kaggle_handle):
  """(folder, completion marker) where kagglehub keeps a versioned model handle "owner/model/framework/variation/N"."""
  parts = kaggle_handle.split("/")
  if len(parts) != 5 or not parts[4].isdigit():
    raise ValueError(f"Kaggle handle {kaggle_handle!r} is not 'owner/model/framework/variation/version' with an "
                     "integer version.")
  folder = os.path.join(kagglehub_cache_root(), "models", *parts)
  return folder, f"{folder}.complete"


def tfhub_cache_root():
  """tensorflow_hub's cache folder: its own answer once it is imported (it also reads --tfhub_cache_dir), else
  the same rule without importing it (it imports tf_keras): $TFHUB_CACHE_DIR, else <tmp>/tfhub_modules."""
  if "tensorflow_hub.resolver" in sys.modules:
    return sys.modules["tensorflow_hub.resolver"].tfhub_cache_dir(use_temp=True)
  return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")


def tfhub_cache_dir(url):
  """The folder tensorflow_hub's compressed-module resolver caches `url` in."""
  return os.path.join(tfhub_cache_root(), hashlib.sha1(url.encode("utf8")).hexdigest())


def _non_empty_dir(path):
  return os.path.isdir(path) and bool(os.listdir(path))


def cached(module):
  """(local folder, which cache) of a catalogue.PublishedModule already on disk, else (None, None)."""
  folder, marker = kagglehub_cache_dir(module.kaggle_handle)
  if os.path.exists(marker) and _non_empty_dir(folder):
    return folder, "kagglehub cache"
  if module.tfhub_handle:
    folder = tfhub_cache_dir(module.tfhub_handle)
    if _non_empty_dir(folder) and not os.path.exists(f"{folder}.lock"):  # a lock: a download in progress
      return folder, "tensorflow_hub cache"
  return None, None


def _kagglehub_download(module):
  import kagglehub  # pylint: disable=g-import-not-at-top
  return kagglehub.model_download(module.kaggle_handle)


def _tfhub_download(module):
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  return hub.resolve(module.tfhub_handle)


# (source name, how the call reads in messages, download function): tried in order.
DOWNLOADERS = (
    ("kagglehub", lambda m: f"kagglehub.model_download({m.kaggle_handle!r})", _kagglehub_download),
    ("tensorflow_hub", lambda m: f"tensorflow_hub.resolve({m.tfhub_handle!r})", _tfhub_download),
)


def trust_file_for(folder):
  """The trust file for a module folder: $EXPERT_HUB_TRUST_FILE, else the root of the cache holding it (the
  kagglehub cache for anything else)."""
  real, root, hub_root = os.path.realpath(folder), kagglehub_cache_root(), tfhub_cache_root()
  if real.startswith(os.path.realpath(hub_root) + os.sep):
    root = hub_root
  return trust.trust_file(os.path.join(root, trust.TRUST_FILE_NAME))


def _unavailable(module, errors):
  folder, marker = kagglehub_cache_dir(module.kaggle_handle)
  tried = "\n".join(f"  - {call}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                    for call, e in errors)
  return PublishedModuleUnavailable(
      f"Cannot get published module {module.handle!r} (Kaggle {module.kaggle_handle!r}, tfhub.dev "
      f"{module.tfhub_handle!r}): not in the kagglehub cache ({kagglehub_cache_root()!r}, ${KAGGLEHUB_CACHE_ENV}) or "
      f"tensorflow_hub's, and every source failed:\n{tried}\n"
      "Offline? On a machine with network run `python -c \"import kagglehub; print(kagglehub.model_download("
      f"'{module.kaggle_handle}'))\"`, copy the folder it prints (saved_model.pb, variables/) to\n  {folder}\n"
      f"here and create the empty file\n  {marker}\n(or point ${KAGGLEHUB_CACHE_ENV} at a copy of that machine's "
      "cache). Its files are trusted on first use.")


def fetch(module, downloaders=None):
  """The local folder of a catalogue.PublishedModule: from a cache, else downloaded; its files recorded in the
  trust file on first use.

  Args:
    module: the catalogue entry.
    downloaders: (name, describe, download) triples tried in order (default DOWNLOADERS).

  Raises:
    PublishedModuleUnavailable: not cached and every download failed (each source's error named).
  """
  folder, source = cached(module)
  if folder is None:
    errors = []
    for name, describe, download in (DOWNLOADERS if downloaders is None else downloaders):
      if name == "tensorflow_hub" and not module.tfhub_handle:
        continue  # a bare kaggle:// handle: Kaggle is its only source
      log.info("Downloading published module %s through %s (a BiT R50x1 is about 100 MB).", module.handle, name)
      try:
        folder, source = download(module), name
        break
      except Exception as e:  # pylint: disable=broad-except  # offline, 403, not found: try the next source
        log.warning("%s failed for %s: %s", describe(module), module.handle, e)
        errors.append((describe(module), e))
    else:
      raise _unavailable(module, errors)
  trust_path = trust_file_for(folder)
  entry, new = trust.record(folder, module.handle, trust_path, source)
  if new:
    log.warning("Trusting %s on first use (from the %s): recorded the sha256 of its %d files in %s; later loads "
                "refuse any file that changes.", module.handle, source, len(entry["sha256"]), trust_path)
  return folder


def module_for_url(url):
  """The catalogue entry for a tfhub.dev or kaggle:// handle, or an ad-hoc one for any other kaggle:// handle
  (kagglehub only); None for other URLs (they go to tensorflow_hub as before)."""
  entry = catalogue_lib.find_by_url(url)
  if entry is not None or not url.startswith(catalogue_lib.KAGGLE_PREFIX):
    return entry
  handle = url[len(catalogue_lib.KAGGLE_PREFIX):].rstrip("/")
  kagglehub_cache_dir(handle)  # a malformed handle fails here, naming the expected form
  return catalogue_lib.PublishedModule(collection="kaggle:/", name=handle, kind="unknown", wordnet_node=None,
                                       wordnet_id=None, description="", tfhub_handle="", kaggle_handle=handle,
                                       feature_dim=None, input={})


def verify(folder):
  """Checks a module folder against its trust record (nothing to check if it has none); returns the record.

  Raises:
    trust.UntrustedModuleError: a file changed, went missing or appeared since it was first trusted (named).
  """
  return trust.verify(folder, trust_file_for(folder))
