"""Builds dm's Cython extensions (dm/_ring.pyx, dm/_codec.pyx, dm/_book.pyx) on `pip install .`."""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
MODULES = [p.stem for p in sorted((HERE / "dm").glob("_*.pyx"))]

extensions = [
    Extension(
        f"dm.{name}",
        [f"dm/{name}.pyx"],
        include_dirs=["dm"],
        extra_compile_args=["-O3", "-std=gnu11", "-Wno-unused-function"],
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False},
    ),
)
