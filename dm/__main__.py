import os

# dm's processes (supervisor, workers, persister, CLI) do no linear algebra: OpenBLAS's thread
# pool, started by importing numpy, would only spin and take CPU from the feeds on small machines
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dm.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
