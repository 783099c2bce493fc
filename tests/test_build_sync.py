"""The Bazel BUILD files stay in step with the tree: every module, program and test file is in a target's srcs.

Reads the BUILD files textually (no Bazel needed): the .py names quoted in each BUILD file, outside comments and
glob(...) calls, are that package's declared sources. Under `bazel test` it follows the runfiles symlinks back to
the real checkout, so it sees files that no target declares yet.
"""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

# Where Python files must be declared: the library (every module), the programs (not their __init__.py) and the
# tests (test files and the helpers they import or run).
REQUIRED = [("expert_hub", True), ("binaries", False), ("export", False), ("tests", True)]
SKIP_DIRS = {"__pycache__", "node_modules", "third_party", "toolchain"}

_TOKEN = re.compile(r'#[^\n]*|"""[\s\S]*?"""|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[A-Za-z_]\w*|\S')


def declared_sources(text):
  """The .py names quoted in a BUILD file's text, as written (relative names or labels), skipping globs."""
  names, depth, in_glob, prev = [], 0, None, None
  for tok in _TOKEN.findall(text):
    if tok.startswith("#"):
      continue
    if tok == "(":
      depth += 1
      if prev == "glob" and in_glob is None:
        in_glob = depth
    elif tok == ")":
      if in_glob == depth:
        in_glob = None
      depth -= 1
    elif tok[0] in "\"'" and in_glob is None:
      value = tok[3:-3] if tok.startswith('"""') else tok[1:-1]
      if re.fullmatch(r"[^\s*?]*[^\s*?/:]\.py", value):  # a file name, not a suffix like ".py"
        names.append(value)
    prev = tok
  return names


def _package_path(package, name):
  """A declared name (`a.py`, `sub/a.py`, `:a.py`, `//pkg:a.py`) as a path from the repository root."""
  if name.startswith("//"):
    package, _, name = name[2:].partition(":")
  return os.path.normpath(os.path.join(package, name.lstrip(":")))


def _walk(top):
  for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
    dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith((".", "bazel-")))
    yield os.path.relpath(dirpath, ROOT), filenames


def build_files():
  """{package path: BUILD text} for every BUILD file of the project ('.' is the root package)."""
  out = {}
  for package, filenames in _walk("."):
    for name in ("BUILD", "BUILD.bazel"):
      if name in filenames:
        with open(os.path.join(ROOT, package, name)) as f:
          out[os.path.normpath(package)] = f.read()
  return out


def declared():
  """{path of a declared .py file: the BUILD file that declares it}."""
  out = {}
  for package, text in build_files().items():
    for name in declared_sources(text):
      out[_package_path(package, name)] = os.path.join(package, "BUILD")
  return out


def required():
  """Every .py file that needs a target."""
  out = []
  for top, with_init in REQUIRED:
    for dirpath, filenames in _walk(top):
      out += [os.path.normpath(os.path.join(dirpath, f)) for f in sorted(filenames)
              if f.endswith(".py") and (with_init or f != "__init__.py")]
  return out


def _owner(path, packages):
  """The BUILD file whose package holds `path` (the nearest enclosing package)."""
  d = os.path.dirname(path)
  while d not in packages and d not in ("", "."):
    d = os.path.dirname(d)
  return os.path.join(d or ".", "BUILD")


def test_declared_sources_reads_strings_not_comments_or_globs():
  text = '''
# "commented_out.py"
py_library(name = "lib", srcs = ["a.py", 'sub/b.py'] + glob(["*.py", "x/**/*.py"]))
[py_test(name = s[:-len(".py")], srcs = [s]) for s in ["test_c.py", ":d.py"]]  # "e.py"
filegroup(name = "f", srcs = glob(["g.py"], exclude = ["h.py"]) + ["//other:i.py", "not_python.json"])
'''
  assert declared_sources(text) == ["a.py", "sub/b.py", "test_c.py", ":d.py", "//other:i.py"]
  assert [_package_path("pkg", n) for n in declared_sources(text)] == [
      "pkg/a.py", "pkg/sub/b.py", "pkg/test_c.py", "pkg/d.py", "other/i.py"]


def test_every_source_file_has_a_target():
  packages, known = build_files(), declared()
  missing = [p for p in required() if p not in known]
  if missing:
    pytest.fail("Python files without a Bazel target; add each to the srcs list in the BUILD file named (a "
                "tests/test_*.py gets a py_test: add it to the list in tests/BUILD):\n" +
                "\n".join(f"  {p}  ->  {_owner(p, packages)}" for p in missing))


def test_every_declared_file_exists():
  stale = sorted(f"  {p}  (in {build})" for p, build in declared().items() if not os.path.isfile(os.path.join(ROOT, p)))
  if stale:
    pytest.fail("BUILD files name Python files that do not exist; remove or rename them:\n" + "\n".join(stale))


def _is_slow_mark(node):
  """Whether an expression is `pytest.mark.slow` (or a list/tuple holding it)."""
  if isinstance(node, (ast.List, ast.Tuple)):
    return any(_is_slow_mark(e) for e in node.elts)
  return isinstance(node, ast.Attribute) and node.attr == "slow" and ast.unparse(node.value) == "pytest.mark"


def all_tests_slow(path):
  """Whether every test function of a test file is marked slow (by `pytestmark` or its decorators)."""
  tree = ast.parse(open(path).read())
  if any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in n.targets) and
         _is_slow_mark(n.value) for n in tree.body):
    return True
  tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
  return bool(tests) and all(any(_is_slow_mark(d) for d in t.decorator_list) for t in tests)


def test_files_whose_tests_are_all_slow_are_the_manual_ones():
  """Bazel runs tests with -m 'not slow'; a file left with no other test would select none (pytest exit 5, a
  failed target), so tests/BUILD must list exactly those files in SLOW_ONLY (tagged manual)."""
  text = build_files()["tests"]
  start = text.index("SLOW_ONLY = [")
  listed = set(re.findall(r'"(test_\w+\.py)"', text[start:text.index("]", start)]))
  slow = {f for f in os.listdir(os.path.join(ROOT, "tests"))
          if f.startswith("test_") and f.endswith(".py") and all_tests_slow(os.path.join(ROOT, "tests", f))}
  assert listed == slow, (f"SLOW_ONLY in tests/BUILD lists {sorted(listed)}; the files whose tests are all slow "
                          f"are {sorted(slow)}")


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
