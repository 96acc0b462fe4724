"""Ship MathJax inside the built book so that equations render offline.

MathJax comes from the ``jupyter-server-mathjax`` wheel (a pip dependency of the book
extra). It is copied into ``_build/html/_static/mathjax`` after the build instead of being
listed in ``html_static_path``: Jupyter Book adds a ``<script>`` tag for every ``.js`` file
found in a source static folder, which would load hundreds of MathJax files on every page.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError


def _mathjax_source() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ExtensionError(
            "offline_mathjax: the 'jupyter-server-mathjax' package is missing; "
            "install the book extra: pip install -e '.[book]'"
        ) from error
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (source / "MathJax.js").is_file():
        raise ExtensionError(f"offline_mathjax: expected MathJax.js in {source}")
    return source


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    if (target / "MathJax.js").is_file():
        return
    shutil.copytree(_mathjax_source(), target, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict[str, object]:
    _mathjax_source()  # fail at the start of the build, not after it
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
