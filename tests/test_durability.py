"""Names, places and durability (issue 14 items 8 and 11): what the registry trusts, private workdirs, fsync
before publishing, half-written exports, unreadable expert.json files and the permissions of exported folders."""

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import keras
import pytest
import tensorflow as tf

from expert_hub import io_utils
from expert_hub.hub import export
from expert_hub.hub import loading
from expert_hub.hub import model_card
from expert_hub.hub import registry


def _fake_module(root, upstream, name, version, overrides=None):
  """A folder <root>/<upstream>/<name>/<version>/ with an expert.json only: all the registry reads."""
  path = os.path.join(str(root), upstream, name, str(version))
  os.makedirs(path)
  info = {"name": name, "upstream": upstream, "version": version, "kind": "full"}
  info.update(overrides or {})
  with open(os.path.join(path, export.METADATA_FILE), "w") as f:
    json.dump(info, f)
  return path


def _tiny_backbone():
  images = keras.Input((None, None, 3))
  return keras.Model(images, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(images)))


def _export_tiny(export_dir, name="tiny", version=1):
  return export.export_module(_tiny_backbone(), str(export_dir), "mini", name, version, {"kind": "full"})


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory):
  return _export_tiny(tmp_path_factory.mktemp("tiny_export"))


class _WritesFiles(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
  def __call__(self, images):
    tf.io.write_file("/tmp/expert_hub_test_should_never_exist", tf.strings.as_string(tf.reduce_sum(images)))
    return tf.reduce_mean(images, axis=[1, 2])


# --- item 8: names and places ---------------------------------------------------------------------------------

@pytest.mark.parametrize("claim", [{"name": "shapes"}, {"upstream": "world32", "name": "shapes", "version": 1}])
def test_an_expert_json_claiming_another_modules_name_does_not_win(tmp_path, caplog, claim):
  real = _fake_module(tmp_path, "world32", "shapes", 1)
  impostor = _fake_module(tmp_path, "world32", "aaa", 1, claim)  # sorts before "shapes"
  with caplog.at_level(logging.WARNING, logger="expert_hub.hub.registry"):
    reg = registry.Registry([str(tmp_path)])
  assert reg.lookup("shapes").path == real
  assert reg.resolve("world32/shapes/1") == real
  assert [e.path for e in reg.entries()] == [real]  # skipped with a warning, not listed under either name
  meta = os.path.join(impostor, export.METADATA_FILE)
  assert [m for m, _ in reg.skipped] == [meta]
  assert meta in caplog.text and "'shapes'" in caplog.text


def test_a_version_claim_that_disagrees_with_its_folder_is_skipped(tmp_path):
  v1 = _fake_module(tmp_path, "world32", "shapes", 1)
  _fake_module(tmp_path, "world32", "shapes", 2, {"version": 7})  # would shadow every real version up to 6
  reg = registry.Registry([str(tmp_path)])
  assert reg.lookup("shapes").path == v1
  with pytest.raises(KeyError):
    reg.lookup("world32/shapes/7")


def test_the_same_module_name_in_two_export_dirs_is_an_error_naming_both(tmp_path):
  first = _fake_module(tmp_path / "a", "world32", "shapes", 1)
  second = _fake_module(tmp_path / "b", "world32", "shapes", 1)
  with pytest.raises(ValueError) as raised:  # registry.DuplicateExpertError
    registry.Registry([str(tmp_path / "a"), str(tmp_path / "b")])
  assert first in str(raised.value) and second in str(raised.value) and "world32/shapes/1" in str(raised.value)
  # One folder listed twice (or through a link to its export dir) is one module, not a duplicate.
  os.symlink(tmp_path / "a", tmp_path / "a_link")
  reg = registry.Registry([str(tmp_path / "a"), str(tmp_path / "a"), str(tmp_path / "a_link")])
  assert [e.path for e in reg.entries()] == [first]


@pytest.mark.parametrize("linked", ["saved_model.pb", "variables", "version folder"])
def test_a_link_out_of_the_export_dir_does_not_inherit_its_trust(tmp_path, linked):
  elsewhere = tmp_path / "elsewhere" / "module"
  tf.saved_model.save(_WritesFiles(), str(elsewhere))  # WriteFile: outside the allowlist
  with open(elsewhere / export.METADATA_FILE, "w") as f:  # one of ours: only then can location trust it
    json.dump({"upstream": "mini", "name": "writer", "version": 1, "kind": "full",
               "sha256": export._file_hashes(str(elsewhere))}, f)  # pylint: disable=protected-access
  exports = tmp_path / "exports"
  inside = exports / "mini" / "writer" / "1"
  shutil.copytree(elsewhere, inside)
  loading.check_ops(str(inside), [str(exports)])  # really inside: trusted, its ops are not checked
  shutil.rmtree(inside)
  if linked == "version folder":
    os.symlink(elsewhere, inside)
  else:
    shutil.copytree(elsewhere, inside)
    target = inside / linked
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    os.symlink(elsewhere / linked, target)
  with pytest.raises(loading.UnsafeModuleError, match="WriteFile"):
    loading.check_ops(str(inside), [str(exports)])
  assert not registry.Registry([str(exports)]).trusts(str(inside))


@pytest.mark.parametrize("whose", ["saved_model.pb", "version folder", "export dir"])
def test_what_another_user_wrote_in_an_export_dir_does_not_inherit_its_trust(tmp_path, monkeypatch, whose):
  """An export dir another user created first (say /tmp/experts), or a file or folder they wrote or could swap
  inside ours, is checked like a foreign module: its ops, not its place, decide."""
  exports = tmp_path / "exports"
  inside = exports / "mini" / "writer" / "1"
  tf.saved_model.save(_WritesFiles(), str(inside))  # WriteFile: outside the allowlist
  with open(inside / export.METADATA_FILE, "w") as f:
    json.dump({"upstream": "mini", "name": "writer", "version": 1, "kind": "full",
               "sha256": export._file_hashes(str(inside))}, f)  # pylint: disable=protected-access
  assert registry.Registry([str(exports)]).trusts(str(inside))  # all ours: trusted by place
  theirs = {"saved_model.pb": inside / "saved_model.pb", "version folder": inside, "export dir": exports}[whose]
  if os.geteuid() == 0:
    os.chown(theirs, 4242, 4242)  # as root: really another user's
  else:  # as a plain user: we become someone else, and what we wrote belongs to another user
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)
  assert not registry.Registry([str(exports)]).trusts(str(inside))
  with pytest.raises(loading.UnsafeModuleError, match="WriteFile"):
    loading.check_ops(str(inside), [str(exports)])


def test_workdirs_are_created_private_and_another_users_is_refused(tmp_path, monkeypatch, smoke_cfg):
  from expert_hub.experiments import pipeline  # pylint: disable=g-import-not-at-top
  old = os.umask(0o022)
  try:
    fresh = io_utils.make_workdir(str(tmp_path / "wd" / "new"))
  finally:
    os.umask(old)
  assert os.stat(fresh).st_mode & 0o777 == 0o700
  theirs = tmp_path / "theirs"
  theirs.mkdir()
  owner = os.stat(theirs).st_uid
  monkeypatch.setattr(os, "geteuid", lambda: owner + 1)  # as if another user had created it first
  with pytest.raises(PermissionError, match=re.escape(str(theirs))) as raised:
    io_utils.make_workdir(str(theirs))
  assert f"uid {owner}" in str(raised.value)
  with pytest.raises(PermissionError, match=re.escape(str(theirs))):  # the pipeline goes through it
    pipeline.run_pipeline(smoke_cfg, str(theirs), str(tmp_path / "tfds"))
  assert os.listdir(theirs) == []


# --- item 11: durability --------------------------------------------------------------------------------------

def _record_fsyncs(monkeypatch):
  """Replaces os.fsync, os.replace and os.rename with recorders; returns the event list (kind, path)."""
  events, fsync, replace, rename = [], os.fsync, os.replace, os.rename

  def fsync_spy(fd):
    events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
    return fsync(fd)

  def move_spy(kind, real):
    def spy(src, dst, *args, **kwargs):
      events.append((kind, os.path.realpath(str(dst))))
      return real(src, dst, *args, **kwargs)
    return spy
  monkeypatch.setattr(os, "fsync", fsync_spy)
  monkeypatch.setattr(os, "replace", move_spy("rename", replace))
  monkeypatch.setattr(os, "rename", move_spy("rename", rename))
  return events


def test_results_are_fsynced_before_the_rename_that_publishes_them(tmp_path, monkeypatch):
  events = _record_fsyncs(monkeypatch)
  path = str(tmp_path / "out" / "result.json")
  io_utils.atomic_write_json(path, {"accuracy": 0.5})
  published = events.index(("rename", os.path.realpath(path)))
  synced = [p for kind, p in events[:published] if kind == "fsync"]
  assert any(os.path.basename(p).startswith(".result.json.") for p in synced), events  # the temp file's data
  assert ("fsync", os.path.realpath(str(tmp_path / "out"))) in events[published:], events  # and the rename
  assert io_utils.read_json(path) == {"accuracy": 0.5}


def test_every_file_of_an_export_is_fsynced_before_the_rename(tmp_path, monkeypatch):
  events = _record_fsyncs(monkeypatch)
  path = _export_tiny(tmp_path)
  published = events.index(("rename", os.path.realpath(path)))
  synced = {p for kind, p in events[:published] if kind == "fsync"}
  tmp = [p for p in synced if os.path.basename(p).startswith(".1.tmp-")]
  assert tmp, events  # the temp folder itself
  for folder, _, files in os.walk(path):
    for f in files:
      rel = os.path.relpath(os.path.join(folder, f), path)
      assert os.path.join(tmp[0], rel) in synced, (rel, sorted(synced))
  assert ("fsync", os.path.realpath(os.path.dirname(path))) in events[published:]


def test_the_next_export_removes_half_written_exports_left_by_a_dead_one(tmp_path):
  parent = tmp_path / "mini" / "tiny"
  parent.mkdir(parents=True)
  host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                        check=True)
  stale = {"dead": parent / f".1.tmp-{host}-{int(dead.stdout)}-abc123", "old": parent / ".1.tmp-q7x_a2zz"}
  running = parent / f".1.tmp-{host}-{os.getpid()}-live01"  # an export still running in this process
  for folder in [*stale.values(), running]:
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"half")
  two_days_ago = time.time() - 2 * 24 * 3600  # far beyond export.STALE_EXPORT_SECONDS
  for p in (stale["old"], stale["old"] / "variables", stale["old"] / "saved_model.pb"):
    os.utime(p, (two_days_ago, two_days_ago))
  path = _export_tiny(tmp_path, version=2)
  assert not any(p.exists() for p in stale.values()), os.listdir(parent)
  assert running.exists()  # not ours to remove
  assert sorted(os.listdir(parent)) == sorted([running.name, "2"])
  assert os.path.basename(path) == "2"


@pytest.mark.parametrize("content", [b'{"name": "shapes", "kind"', b"[1, 2]", b"\xff\xfe\x00garbage", b""])
def test_a_registry_scan_skips_an_unreadable_expert_json_and_falls_back(tmp_path, caplog, content):
  v1 = _fake_module(tmp_path, "world32", "shapes", 1)
  v2 = _fake_module(tmp_path, "world32", "shapes", 2)
  _fake_module(tmp_path, "world32", "glyphs", 1)
  bad = os.path.join(v2, export.METADATA_FILE)
  with open(bad, "wb") as f:
    f.write(content)  # e.g. a copy cut short
  with caplog.at_level(logging.WARNING, logger="expert_hub.hub.registry"):
    reg = registry.Registry([str(tmp_path)])
  assert reg.lookup("shapes").path == v1  # the newest valid version
  assert reg.lookup("glyphs").version == 1  # other names unaffected
  assert bad in caplog.text and [m for m, _ in reg.skipped] == [bad]


def test_loading_a_module_whose_expert_json_is_not_json_names_the_file(tmp_path, tiny_module):
  path = str(tmp_path / "tiny")
  shutil.copytree(tiny_module, path)
  meta = os.path.join(path, export.METADATA_FILE)
  with open(meta, "r+") as f:
    f.truncate(40)
  with pytest.raises(ValueError, match=re.escape(meta)):
    export.read_metadata(path)
  with pytest.raises(ValueError, match=re.escape(meta)):
    loading.load_module(path, export_dirs=[str(tmp_path)])


def test_exported_folders_get_a_plain_mkdirs_permissions(tmp_path):
  old = os.umask(0o022)
  try:
    path = _export_tiny(tmp_path)
  finally:
    os.umask(old)
  assert os.stat(path).st_mode & 0o777 == 0o755  # not mkdtemp's 0o700
  for folder, dirs, files in os.walk(path):
    for d in dirs:
      assert os.stat(os.path.join(folder, d)).st_mode & 0o777 == 0o755, d
    for f in files:
      assert os.stat(os.path.join(folder, f)).st_mode & 0o777 == 0o644, f


def test_the_manifest_lists_every_file_of_the_module_but_itself(tiny_module):
  info = export.read_metadata(tiny_module)
  on_disk = sorted(os.path.relpath(os.path.join(folder, f), tiny_module).replace(os.sep, "/")
                   for folder, _, files in os.walk(tiny_module) for f in files)
  assert sorted(info["sha256"]) == [f for f in on_disk if f != export.METADATA_FILE]
  assert {model_card.MODEL_CARD_FILE, "saved_model.pb", "fingerprint.pb"} <= set(info["sha256"])
  assert any(f.startswith("variables/") for f in info["sha256"])
  export.verify_module(tiny_module)
  card = os.path.join(tiny_module, model_card.MODEL_CARD_FILE)
  assert model_card.write_model_card(tiny_module) == card  # regenerating the card keeps the module valid
  export.verify_module(tiny_module)
