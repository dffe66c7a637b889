"""Builds dm's Cython extensions on `pip install .` (and `make build`): every ``_*.pyx`` under
dm/, found recursively, so a venue's codec (dm/venues/<venue>/_codec.pyx) needs no line here.
The extension name is the file's dotted path (dm/venues/kraken/_codec.pyx -> dm.venues.kraken._codec).
Cython resolves cimports (dm._scan, dm._codec, dm._records) from the project root."""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
SOURCES = sorted(p.relative_to(HERE) for p in (HERE / "dm").rglob("_*.pyx"))

extensions = [
    Extension(
        ".".join(src.with_suffix("").parts),
        [src.as_posix()],
        include_dirs=[".", "dm"],
        extra_compile_args=["-O3", "-std=gnu11", "-Wno-unused-function"],
    )
    for src in SOURCES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=["."],
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False},
    ),
)
