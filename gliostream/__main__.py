"""`python -m gliostream` is the `brats` console script."""

from .cli.main import cli

if __name__ == "__main__":
    cli()
