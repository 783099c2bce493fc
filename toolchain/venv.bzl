"""A Python toolchain for the project's venv (.ci/setup_venv), found at fetch time.

py_runtime's interpreter_path must be absolute, so this repository rule resolves it where the checkout lives:
$EXPERT_HUB_PYTHON if set, else <workspace>/.venv/bin/python3. Nothing is written into the source tree.
"""

_BUILD = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "py3",
    interpreter_path = "{python}",
    python_version = "PY3",
    stub_shebang = "#!{python}",
)

py_runtime_pair(
    name = "pair",
    py3_runtime = ":py3",
)

toolchain(
    name = "toolchain",
    toolchain = ":pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _venv_python_impl(rctx):
    python = rctx.os.environ.get("EXPERT_HUB_PYTHON", "")
    if not python:
        # The venv's own path (not its realpath): running through it is what makes the venv's packages visible.
        python = str(rctx.path(Label("//:WORKSPACE")).dirname) + "/.venv/bin/python3"
    if not rctx.path(python).exists:
        fail("No Python at %s: run `bash .ci/setup_venv` first (or set EXPERT_HUB_PYTHON)." % python)
    rctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % rctx.name)
    rctx.file("BUILD", _BUILD.format(python = python))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    environ = ["EXPERT_HUB_PYTHON"],
    local = True,
    doc = "Declares a py_runtime toolchain for the project's venv interpreter.",
)
