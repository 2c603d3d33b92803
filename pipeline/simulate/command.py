"""The ``muon-pipeline simulate`` command: options → ``SimConfig`` → ``write_dump``, one summary line.

Bad options are reported through click (exit 2, no traceback); an output that cannot be written
is reported with its path before any event is simulated. numpy / awkward / uproot are imported
inside the command, so registering it keeps ``muon-pipeline --help`` fast.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
from click.core import ParameterSource

from ..errors import PipelineError


def parse_multiplicity(spec: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``"1:0.25,2:0.75"`` → ((1, 2), (0.25, 0.75)); ``"1,2"`` gives equal weights; ``"2"`` a fixed count."""
    counts, weights = [], []
    for item in spec.split(","):
        n, _, w = item.strip().partition(":")
        try:
            counts.append(int(n))
            weights.append(float(w) if w else 1.0)
        except ValueError:
            raise ValueError(f"cannot read {item.strip()!r}: use COUNT[:WEIGHT],... e.g. 1:0.25,2:0.75") from None
    if min(counts) < 0 or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("counts and weights must be non-negative, with a positive total weight")
    return tuple(counts), tuple(weights)


def output_paths(output: Path, n_files: int) -> list[Path]:
    """One file: ``output`` itself; K files: ``<stem>_000<suffix>`` … ``<stem>_{K-1:03d}<suffix>``."""
    if n_files == 1:
        return [output]
    suffix = output.suffix or ".root"
    return [output.with_name(f"{output.stem}_{i:03d}{suffix}") for i in range(n_files)]


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise click.BadParameter(f"{path} is a directory, not a file name", param_hint="OUTPUT")
    if not parent.is_dir():
        raise click.BadParameter(f"cannot write {path}: directory {parent} does not exist", param_hint="OUTPUT")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise click.BadParameter(f"cannot write {path}: permission denied", param_hint="OUTPUT")


@click.command("simulate")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--events", "-n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Events per output file (> 0).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed; the same seed and options give identical arrays.")
@click.option("--files", "n_files", type=click.IntRange(min=1), default=1, show_default=True,
              help="Write K files of --events events each, named OUTPUT_000.root, OUTPUT_001.root, ...; "
                   "file k gets its own SeedSequence stream and eventNumbers k*N .. k*N+N-1.")
@click.option("--background-per-event", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Mean (Poisson) number of flat background hits per event (truthLink -1), uniform over "
                   "the detector in -200..1200 ns; for events like ATLAS pile-up use --pileup instead.")
@click.option("--pileup", type=click.FloatRange(min=0, max=1000), default=0.0, show_default=True, metavar="MU",
              help="Pile-up ⟨μ⟩: replaces the flat background with the pile-up model (200 = the users' "
                   "sample: ≈7,200 background hits per event, ∝ MU; times -1000..20000 ns, mostly out of "
                   "time; δ-electron hits beside muon hits, fake segments, chamber bursts; hits in readout "
                   "order; at most 1000). 0: the flat background of --background-per-event. See "
                   "docs/physics.md.")
@click.option("--muons-per-event", default="1:0.25,2:0.75", show_default=True,
              help="Muon multiplicity as COUNT[:WEIGHT],...; '1,2' means equal weights, '2' always two.")
@click.option("--pt-min", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Lowest generated truth pT in GeV (generate below the analysis cut).")
@click.option("--pt-max", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Highest generated truth pT in GeV.")
@click.option("--pt-spectrum", type=click.Choice(["log-uniform", "falling"]), default="log-uniform",
              show_default=True, help="log-uniform: flat in ln pT; falling: dN/dpT ∝ pT^-2.")
@click.option("--max-abs-eta", type=click.FloatRange(min=0, max=4, min_open=True), default=2.8,
              show_default=True, help="Truth η is uniform in [-max, max].")
@click.option("--compression", default="zstd", show_default=True,
              help="ROOT compression: zlib, lz4, zstd or lzma, optionally with a level (zstd:5).")
@click.option("--format", "fmt", type=click.Choice(["ttree", "rntuple"]), default="ttree", show_default=True,
              help="Container: a TTree (as the dumpers write today) or an RNTuple (Run 4), same branch names.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output file. Without it an existing file is kept when this same command "
                   "wrote it (same options, seed and version: nothing to do), else refused.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (the summary line stays).")
def simulate(output: Path, events: int, seed: int, n_files: int, background_per_event: float,
             pileup: float, muons_per_event: str, pt_min: float, pt_max: float, pt_spectrum: str,
             max_abs_eta: float, compression: str, fmt: str = "ttree", quiet: bool = False,
             overwrite: bool = False) -> None:
    """Simulate muon-spectrometer hit dumps (TTree or RNTuple MuonHitDump) with an ATLAS-like toroid geometry.

    Muons from the origin cross the calorimeter (energy loss, scattering), bend in the toroidal
    field and leave MDT, RPC, TGC, sTGC and MM hits; background hits are added per event: flat
    (--background-per-event) or, with --pileup MU, the pile-up model.
    Progress: a live bar on a terminal, a plain line every 10 s in a batch log.

    An existing OUTPUT is never replaced silently: the same command run again keeps the file it wrote
    (exit 0); any other file is refused (exit 1) unless --overwrite. Files are written under a hidden
    temporary name and renamed when complete.
    """
    from ..progress import Reporter
    from .generate import SimConfig
    from .writer import WriteStats, parse_compression, write_dump

    try:
        parse_compression(compression)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--compression") from None
    try:
        counts, weights = parse_multiplicity(muons_per_event)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--muons-per-event") from None
    if pt_min >= pt_max:
        raise click.UsageError(f"--pt-min ({pt_min}) must be below --pt-max ({pt_max})")
    source = click.get_current_context().get_parameter_source("background_per_event")
    if pileup > 0 and source not in (None, ParameterSource.DEFAULT):
        raise click.UsageError("--background-per-event and --pileup exclude each other: with --pileup the "
                               "pile-up model makes all background hits")
    if pileup != pileup:  # nan passes FloatRange's comparisons
        raise click.BadParameter(f"{pileup} is not a finite number", param_hint="--pileup")
    cfg = SimConfig(muon_counts=counts, muon_weights=weights, pt_min=pt_min, pt_max=pt_max,
                    pt_spectrum=pt_spectrum, max_abs_eta=max_abs_eta,
                    background_per_event=background_per_event, pileup=pileup)
    paths = output_paths(output, n_files)
    for p in paths:
        _check_writable(p)
    todo = _to_write(paths, events, seed, cfg, compression, fmt, overwrite)
    where = str(paths[0]) if n_files == 1 else f"{n_files} files {paths[0].name} .. {paths[-1].name}"
    if not todo:
        click.echo(f"{where}: already written by this same command (same options, seed and version); kept")
        return
    start = time.perf_counter()
    total = WriteStats()
    with Reporter(events * len(todo), quiet=quiet, units=len(todo) if n_files > 1 else 0, label="simulate",
                  noun="events") as rep:
        for k, path in todo:
            try:
                total.add(write_dump(path, events, seed, cfg, compression=compression, stream=k,
                                     first_event=k * events, format=fmt, progress=rep.advance))
            except OSError as err:
                raise PipelineError(f"cannot write {path}: {err.strerror or err}") from None
            rep.unit_done()
    seconds = time.perf_counter() - start
    kept = f" ({len(paths) - len(todo)} kept: already written by this same command)" if len(todo) < len(paths) else ""
    click.echo(f"simulated {total.events} events, {total.hits} hits ({total.muon_hits} on muons), "
               f"{total.muons} muons -> {where} in {seconds:.1f} s "
               f"({total.events / max(seconds, 1e-9):.0f} events/s){kept}")


def _to_write(paths: list[Path], events: int, seed: int, cfg, compression: str, fmt: str,
              overwrite: bool) -> list[tuple[int, Path]]:
    """``(stream, path)`` of the files to write. An existing file is kept when its stamp says this same
    command wrote it, replaced with ``overwrite``, else refused (PipelineError naming it, exit 1) before
    anything is simulated."""
    from .writer import read_stamp, simulation_stamp

    todo = []
    for k, path in enumerate(paths):
        if path.exists() and not overwrite:
            stamp = read_stamp(path)
            if stamp == simulation_stamp(events, seed, cfg, compression=compression, stream=k,
                                         first_event=k * events, format=fmt):
                continue
            why = ("was simulated with other options, seed or version" if stamp is not None
                   else "was not written by muon-pipeline simulate")
            raise PipelineError(f"{path} exists and {why}; give --overwrite to replace it, or choose another name")
        todo.append((k, path))
    return todo
