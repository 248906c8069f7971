"""`brats synth`: write a synthetic BraTS-layout raw dataset."""

from __future__ import annotations

import click

from ..tasks import TASKS
from .common import on_terminal, reports_errors


def _parse_shape(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter("expected three integers like 128,128,96") from None
    if len(shape) != 3 or min(shape) < 16:
        raise click.BadParameter("expected three integers >= 16 like 128,128,96")
    return shape  # type: ignore[return-value]


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--cases", default=8, show_default=True, type=click.IntRange(1), help="Number of cases.")
@click.option("--naming", type=click.Choice(["2021", "2023"]), default=None,
              help="File naming and labels: 2021 (_t1ce, label 4) or 2023 (-t1c, label 3).  [default: 2021 for "
                   "GLI, 2023 for the other tasks]")
@click.option("--task", default="GLI", show_default=True, type=click.Choice(list(TASKS), case_sensitive=False),
              help="Whose labels the segs hold: GLI (2023 naming: a resection cavity, 4, in every other case), MET "
                   "(likewise), PED (a cyst, 3, in the core), MEN, MEN-RT (one label), SSA, GOAT.")
@click.option("--shape", default="128,128,96", show_default=True, callback=_parse_shape,
              help="Volume size in voxels (x,y,z); the field of view stays 240 mm wide.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@reports_errors
def synth(out: str, cases: int, naming: str | None, task: str, shape: tuple[int, int, int], seed: int) -> None:
    """Write CASES synthetic multi-modal cases in BraTS layout to OUT (one folder per case).

    \b
    Exit codes: 0 written; 2 bad command line; 3 OUT cannot be written.
    """
    from ..synth import SynthConfig, synth_dataset

    naming = naming or ("2021" if task.upper() == "GLI" else "2023")
    config = SynthConfig(cases=cases, shape=shape, naming=naming, seed=seed, task=task)
    folders = synth_dataset(out, config, progress=on_terminal())
    click.echo(f"synth: wrote {len(folders)} cases ({config.task}, {naming} naming, {'x'.join(map(str, shape))}) to {out}")
