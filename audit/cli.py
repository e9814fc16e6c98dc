"""The `audit` command. Heavy imports live inside the commands so `audit --help` is instant.

Exit codes: 0 ok, 1 a release gate failed, 2 bad input (one line on stderr, no traceback),
3 the audit is incomplete (a probe failed; results.json and report.html still written),
130 interrupted.
"""
import logging
import signal
import sys
from pathlib import Path

import click

from audit import __version__
from audit.errors import GateFailed, ProbeFailed, UserError

log = logging.getLogger("audit")


def _setup_logging(verbose: int, quiet: bool) -> None:
    from audit import progress

    progress.set_quiet(quiet)
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    if not verbose:  # third-party chatter (open_clip logs to root) only with -v
        handler.addFilter(lambda r: r.name.split(".")[0] in ("audit", "probes", "reports"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if not verbose:
        _quiet_libraries()


def _quiet_libraries() -> None:
    """Without -v, a library's log lines and warnings must not stand before our one-line error:
    warnings go through logging (dropped by the filter above), and the Hugging Face libraries,
    which log through handlers of their own, are told to keep to errors before they load."""
    import os

    logging.captureWarnings(True)
    for var in ("DATASETS_VERBOSITY", "TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY"):
        os.environ.setdefault(var, "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clip-audit")
@click.option("-v", "--verbose", count=True, help="Debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, errors only.")
def cli(verbose, quiet):
    """Fairness and robustness audits for CLIP-style models."""
    _setup_logging(verbose, quiet)


@cli.command("run")
@click.option("--model", default="demo", show_default=True,
              help="demo | demo-null | demo-scenes | demo-scenes-null | NAME[:TAG] | hf-hub:ORG/REPO | local-dir:PATH | DIR | FILE.safetensors/.pt")
@click.option("--pretrained", help="open_clip pretrained tag or weights file (with --model NAME).")
@click.option("--arch", help="open_clip architecture of a bare checkpoint file.")
@click.option("--probes", help="Comma-separated probe names (default: all; see `audit probes`).")
@click.option("--fairface", metavar="SRC", help="FairFace-schema source (race/gender/age).")
@click.option("--celebrity", metavar="SRC", help="(image, name) source.")
@click.option("--persons", metavar="SRC", help="People in context: FACET's layout (annotations/annotations.csv + imgs_*/, "
              "each person cropped by its box) or any source with a label column and attribute columns.")
@click.option("--shift", metavar="SRC", multiple=True, help="Shifted split of a classify task (label column).")
@click.option("--classify", metavar="SRC", multiple=True, help="Classification source (label column).")
@click.option("--group-by", metavar="COLS",
              help="Group columns of the classify sources, comma-separated (group_accuracy); default: those of "
                   "region, income_group, income_level, income (where no income_group), country it has.")
@click.option("--world", metavar="PRESET|DIR", help="Use a synthetic world's sources (default when no SRC given).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("audit-out"), show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True,
              help="Images decoded per loading step. The model always sees fixed encode blocks (32 rows on a CPU, "
                   "256 on CUDA), so no number depends on it.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Image loader processes.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--policy", type=click.Path(path_type=Path), help="Release gates (TOML); a failed gate exits 1.")
@click.option("--baseline", type=click.Path(path_type=Path), help="Baseline results.json for relative gates.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Cache root (default ~/.cache/clip-audit).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow full unpickling of a .pt checkpoint: runs any code inside it. Only for files you trust.")
@click.option("--include-examples", is_flag=True, help="Put small thumbnails of examples in the report (privacy!).")
@click.option("--set", "overrides", multiple=True, metavar="PROBE.FIELD=VALUE",
              help="Override a probe setting, e.g. --set distribution_shift.subsample=1000 (see the probe's Config).")
@click.option("--max-skip-share", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Refuse a source when more than this share of its images cannot be decoded.")
def run_cmd(**kw):
    """Run the probe suites on a model; write results.json and report.html."""
    from audit import runner

    probes = [p.strip() for p in kw.pop("probes").split(",") if p.strip()] if kw.get("probes") else None
    group_by = [c.strip() for c in (kw.pop("group_by") or "").split(",") if c.strip()]
    kw["group_by"] = group_by or None
    opts = runner.RunOptions(**{**kw, "probes": probes, "shift": list(kw["shift"]), "overrides": list(kw["overrides"]),
                                "classify": list(kw["classify"]), "argv": runner.python_argv()})
    results = runner.run(opts)
    _print_summary(results, opts.out)


def _print_summary(results: dict, out: Path) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    for name, p in results["probes"].items():
        findings = len(p["findings"])
        console.print(f"  {name}: {p['status']}" + (f", {findings} finding(s)" if findings else "")
                      + (f" — {p['message']}" if p.get("message") else ""))
    if results["gates"]:
        from audit.policy import print_gates

        print_gates(results["gates"], console)
    extra = f" (and the per-image {results['outcomes']['file']})" if results.get("outcomes") else ""
    console.print(f"wrote {out / 'results.json'} and {out / 'report.html'}{extra}")


@cli.command("train")
@click.option("--data", required=True, metavar="SRC", help="Image-text pairs: CSV filepath,caption | world DIR | parquet | HF id.")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--arch", help="open_clip architecture name (e.g. audit-tiny, ViT-B-32).")
@click.option("--config", type=click.Path(path_type=Path), help="open_clip model config JSON.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(2), default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=100, show_default=True, help="Warm-up steps.")
@click.option("--weight-decay", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in OUT/checkpoints.")
@click.option("--checkpoint-every", type=click.IntRange(0), default=1, show_default=True,
              help="Epochs between checkpoints; 0 = none.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True)
@click.option("--fp16", is_flag=True, help="Save the final weights in fp16 (smaller; for shipping).")
def train_cmd(**kw):
    """Train a CLIP with open_clip's model classes and ClipLoss."""
    import inspect

    from audit.world.train import train

    accepted = inspect.signature(train).parameters
    data, out = kw.pop("data"), kw.pop("out")
    path = train(data, out, **{k: v for k, v in kw.items() if k in accepted})
    click.echo(f"wrote {path} (load it with: audit run --model {path})", err=True)


@cli.command("world")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--preset", default="default", show_default=True, help="Preset name or JSON file.")
@click.option("--seed", type=int, default=0, show_default=True)
def world_cmd(out, preset, seed):
    """Generate a synthetic audit world with planted, known biases."""
    from audit import progress
    from audit.world.generate import generate_world

    path = generate_world(out, preset=preset, seed=seed, progress=progress.enabled())
    click.echo(f"wrote world {path}", err=True)


@cli.command("report")
@click.argument("results_path", metavar="RESULTS", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Default: report.html beside RESULTS.")
def report_cmd(results_path, out):
    """Re-render report.html from a results.json (or a run's --out folder).

    No --include-examples here: thumbnails are made from the images while the run has them, and
    results.json deliberately holds no face (pass --include-examples to `audit run`)."""
    from audit import results
    from audit.runner import write_report
    from reports.render import check_names

    results_path = _results_file(results_path)
    data = results.read(results_path)
    check_names(data, where=str(results_path))
    path = write_report(data, _html_path(out, results_path.with_name("report.html")))
    click.echo(f"wrote {path}", err=True)


def _results_file(path: Path) -> Path:
    """A run's --out folder stands for the results.json in it (the common case)."""
    return path / "results.json" if path.is_dir() else path


def _html_path(out: Path | None, default: Path) -> Path:
    """-o may name the file or a folder to put it in; below a file is a one-line error."""
    if out is None:
        return default
    if out.is_dir():
        return out / default.name
    for p in out.parents:
        if p.exists() and not p.is_dir():
            raise UserError(f"{out}: is below the file {p}")
    return out


@cli.command("compare")
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("cand", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("compare.html"), show_default=True,
              help="The HTML; compare.json (the same comparison, for CI) goes beside it.")
@click.option("--policy", type=click.Path(path_type=Path), help="Gates evaluated on CAND with BASE as baseline.")
@click.option("--fail-on-regression", is_flag=True,
              help="Exit 1 when any row regressed significantly (CIs apart, or the paired test).")
@click.option("--include-examples", is_flag=True,
              help="Thumbnails of the images that moved, in the HTML only (privacy!); read from the runs' sources.")
def compare_cmd(base, cand, out, policy, fail_on_regression, include_examples):
    """Compare a candidate's results.json with a baseline's: regressions first."""
    from rich.console import Console

    from audit import compare as core
    from audit import outcomes
    from audit import policy as gates
    from audit import results, thumbnails
    from audit.io import atomic_write_json
    from reports.compare import print_compare
    from reports.render import check_names, render_compare

    base_r, cand_r = results.read(base), results.read(cand)
    check_names(base_r, where=str(base))
    check_names(cand_r, where=str(cand))
    out = _html_path(out, Path("compare.html"))
    rules = gates.load_policy(policy) if policy else None
    if rules:  # against what the candidate's probes declare, before any output is written
        gates.check_policy(rules, {n: core.meta_of(cand_r, n) for n in cand_r.get("probes") or {}})
    # Two runs on the same images are compared image by image where both kept their outcomes.
    comparison = core.compare(base_r, cand_r, base_outcomes=outcomes.load(base, base_r),
                              cand_outcomes=outcomes.load(cand, cand_r))
    console = Console()
    if rules:
        comparison["gates"] = gates.evaluate(rules, cand_r, baseline=base_r,
                                             paired=core.paired_cis(comparison))
    print_compare(comparison, console)
    if comparison.get("gates"):
        gates.print_gates(comparison["gates"], console)
    moved = (comparison.get("paired") or {}).get("moved") or []
    shown = thumbnails.for_moved(moved, cand_r.get("data") or {}) if include_examples and moved else {}
    render_compare(comparison, out, thumbnails=shown)
    written = atomic_write_json(Path(out).with_name("compare.json"), results.jsonable(comparison))
    console.print(f"wrote {out} and {written}")
    gates.raise_if_failed(comparison.get("gates") or [])
    if fail_on_regression and comparison["regressions"]:
        raise GateFailed(f"{comparison['regressions']} significant regression(s) "
                         f"(--fail-on-regression); see {written}")


@cli.command("table")
@click.argument("results_paths", metavar="RESULTS...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("table.html"),
              show_default=True, help="table.html (a sortable page) or table.csv; a folder gets table.html.")
def table_cmd(results_paths, out):
    """Lay the headline numbers of many runs side by side: one row per run (a results.json or
    a run's --out folder), one column per headline metric, each with its 95% CI."""
    from audit import results
    from audit.io import check_writable_dir
    from audit.table import build_table
    from reports.render import check_names
    from reports.table import check_format, write_table

    out = _html_path(out, Path("table.html"))
    check_format(out)  # a wrong -o fails before any file is read
    check_writable_dir(out.parent)
    runs = []
    for given in results_paths:
        path = _results_file(given)
        data = results.read(path)
        check_names(data, where=str(path))
        runs.append((str(given), data))
    table = build_table(runs)
    written = write_table(table, out)
    click.echo(f"wrote {written} ({len(runs)} run(s), {len(table['columns'])} headline column(s))",
               err=True)


@cli.command("probes")
def probes_cmd():
    """List the registered probes (built-ins and plugins)."""
    from audit.registry import get_probe, list_probes

    for name in list_probes():
        doc = (get_probe(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:28s} {doc[0] if doc else ''}")


@cli.command("models")
def models_cmd():
    """List the model loaders (built-ins and clip_audit.models plugins), in the order tried."""
    from audit.registry import list_model_loaders

    for loader in list_model_loaders():
        click.echo(f"{loader.name:22s} {loader.doc}")


def one_line(message: str) -> str:
    """A file name or spec may itself hold a newline; the error line stays one line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _sigterm)  # pre-emption: stop like Ctrl-C, keep finished work
    try:
        cli.main(args=argv, prog_name="audit", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {one_line(str(e))}", err=True)
        return 2
    except ProbeFailed as e:
        click.echo(f"incomplete: {one_line(str(e))}", err=True)
        return 3
    except GateFailed as e:
        click.echo(f"gate failed: {e}", err=True)
        return 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted: finished embeddings are cached; rerun the same command to resume", err=True)
        return 130
    except click.exceptions.NoArgsIsHelpError as e:  # bare `audit`: the help text, as click shows it
        e.show()
        return 2
    except click.ClickException as e:  # bad option or argument: one line too, not click's usage block
        click.echo(f"error: {one_line(e.format_message())}", err=True)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
