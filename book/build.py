"""Build the book with Jupyter Book 1.x, executing chapters in parallel: ``python book/build.py [jb options]``.

``jb build`` has no option for Sphinx's parallel read, where myst-nb executes the notebooks; this
wrapper passes ``jobs`` (``$BOOK_JOBS``, default 2) through to Jupyter Book's own build function.
Everything else is ``jb build``: same options, same output.
"""
import functools
import os
import sys

import jupyter_book.sphinx as jb_sphinx
import sphinx_multitoc_numbering
from jupyter_book.cli.main import main
from sphinx_proof.domain import ProofDomain

_multitoc_setup = sphinx_multitoc_numbering.setup


def _multitoc_parallel_safe(app):
    # The extension only renumbers the merged toctrees in the main process after reading, so the
    # parallel read cannot race with it; it just never declared so, which forces a serial read.
    return {**(_multitoc_setup(app) or {}), "parallel_read_safe": True}


sphinx_multitoc_numbering.setup = _multitoc_parallel_safe
# sphinx-proof keeps its labels in env.proof_list, merged by its own env-merge-info handler; its
# domain holds no data of its own, so merging the domain data of parallel readers is a no-op.
ProofDomain.merge_domaindata = lambda self, docnames, otherdata: None
jb_sphinx.build_sphinx = functools.partial(jb_sphinx.build_sphinx, jobs=int(os.environ.get("BOOK_JOBS", "2")))
sys.exit(main(["build", *sys.argv[1:]]))
