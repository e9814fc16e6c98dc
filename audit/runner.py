"""One audit run: resolve the model and sources once, run the probes, write results and report.

Flow (DESIGN.md): cli -> runner -> (ModelBundle, sources) -> probes -> ProbeResult ->
results.json -> reports. Probes get a ProbeContext and never see open_clip.
"""
import logging
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit.errors import UserError
from audit.io import check_writable_dir, write_together

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    model: str = "demo"
    pretrained: str | None = None
    arch: str | None = None
    probes: list[str] | None = None          # None: every registered probe
    fairface: str | None = None
    celebrity: str | None = None
    persons: str | None = None               # a persons source (FACET's layout: one row per person)
    shift: list[str] = field(default_factory=list)
    classify: list[str] = field(default_factory=list)
    group_by: list[str] | None = None        # group columns of the classify sources; None: audit.groups' known ones
    world: str | None = None                 # a world folder or preset; the default when no source is given
    out: Path = Path("audit-out")
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    seed: int = 0
    policy: Path | None = None
    baseline: Path | None = None
    cache_dir: Path | None = None
    no_cache: bool = False
    trust_checkpoint: bool = False
    include_examples: bool = False
    overrides: list[str] = field(default_factory=list)  # "probe.field=value" (--set)
    max_skip_share: float = 0.05             # above this, the remainder may be biased: refuse
    argv: list[str] = field(default_factory=list)
    progress: bool = True


@dataclass
class ProbeContext:
    embedder: object
    sources: dict
    seed: int
    device: str

    def images(self, source, *, transform=None) -> np.ndarray:
        return self.embedder.images(source, transform=transform)

    def texts(self, texts: list[str]) -> np.ndarray:
        return self.embedder.texts(list(texts))

    def sources_of(self, prefix: str) -> list:
        return [s for name, s in sorted(self.sources.items()) if name.split(":")[0] == prefix]

    def has(self, role: str) -> bool:
        return role in self.sources or bool(self.sources_of(role))

    def label_set(self, name: str) -> dict:
        from audit.labels import load_label_set

        return load_label_set(name)


def run(opts: RunOptions) -> dict:
    """The whole audit; returns the results dict after writing results.json and report.html."""
    from audit import distributed, embed, models, outcomes, thumbnails
    from audit.settings import probe_configs

    started, clock = _now(), {}
    configs = probe_configs(opts.probes, opts.overrides)  # a typo fails before minutes of loading
    if distributed.is_main():
        check_writable_dir(opts.out)  # as must an --out that cannot take the results
    from audit import policy as gates

    gating = gates.prepare(opts.policy, opts.baseline)  # so do --policy and --baseline
    device = distributed.setup(opts.device)  # under torchrun: join the group, pick this rank's device
    progress = opts.progress and distributed.is_main()
    with _phase(clock, "load"):
        bundle = models.load(opts.model, pretrained=opts.pretrained, arch=opts.arch,
                             device=device, trust_checkpoint=opts.trust_checkpoint)
    with _phase(clock, "world"), distributed.main_first():  # one rank generates a missing world
        sources = resolve_sources(opts)
    set_group_columns(sources, opts.group_by)
    cache = None if opts.no_cache else (opts.cache_dir or embed.default_cache_dir()) / "embeddings"
    embedder = embed.Embedder(bundle, cache_dir=cache, batch_size=opts.batch_size,
                              workers=opts.workers, progress=progress)
    ctx = ProbeContext(embedder=embedder, sources=sources, seed=opts.seed, device=bundle.device)
    with _phase(clock, "probes"):
        probe_results, user_errors, ran = run_probes(ctx, configs)
    clock.update(embed=embedder.seconds, probes=clock["probes"] - embedder.seconds)
    results = build_results(opts, bundle, sources, probe_results, started, embedder.stats)
    results["run"]["timings"] = {k: round(v, 3) for k, v in clock.items()}  # seconds per phase
    if distributed.enabled():
        results["run"]["processes"] = distributed.world_size()
    try:
        with _phase(clock, "report"):
            examples = {name: r.examples for name, r in ran.items()}
            shown = thumbnails.for_report(examples, sources) if opts.include_examples else {}
            per_image = outcomes.collect(ran, probe_results, sources)
            return finish(results, opts, user_errors, examples=shown, gating=gating,
                          per_image=per_image)
    finally:
        log.info("seconds per phase: %s", ", ".join(f"{k} {v:.1f}" for k, v in clock.items()))
        distributed.teardown()


@contextmanager
def _phase(clock: dict, name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        clock[name] = time.perf_counter() - t0


def run_probes(ctx: ProbeContext, configs: dict):
    """({name: results.json entry}, user errors, {name: ProbeResult} of the probes that ran:
    their examples and per-image outcomes, which results.json never holds)."""
    from audit.registry import get_probe, probe_meta
    from audit.results import ProbeResult

    out, user_errors, ran = {}, [], {}
    for name, cfg in configs.items():
        cls = get_probe(name)
        missing = [r for r in cls.requires if not ctx.has(r)]
        if missing:
            result = ProbeResult.skipped(f"needs a {', '.join(missing)} source", cfg)
        else:
            log.info("running probe %s", name)
            result = _run_one(cls, ctx, cfg, user_errors)
            ran[name] = result
        # The probe's self-description travels with its numbers: compare, gates and the report
        # read titles, units and directions from here, never from a table of built-ins.
        out[name] = {**result.to_json(), "meta": probe_meta(cls)}
    return out, user_errors, ran


def _run_one(cls, ctx, cfg, user_errors):
    from audit.results import ProbeResult, config_dict

    t0 = time.perf_counter()
    try:
        result = cls().run(ctx, cfg)
    except UserError as e:  # the user's input: recorded, the other probes still run, exit 2 at the end
        user_errors.append(f"{cls.name}: {e}")
        return ProbeResult.error(str(e), cfg)
    except Exception as e:  # a probe bug must not take the other probes' work with it
        log.debug("probe %s failed", cls.name, exc_info=True)
        log.error("probe %s failed: %s: %s", cls.name, type(e).__name__, e)
        return ProbeResult.error(f"{type(e).__name__}: {e}", cfg)
    result.summary.setdefault("seconds", round(time.perf_counter() - t0, 2))
    result.config = result.config or config_dict(cfg)  # results always record what ran
    return result


def finish(results: dict, opts: RunOptions, user_errors: list[str], *, examples: dict | None = None,
           gating: tuple | None = None, per_image=None) -> dict:
    """Gates, results.json, report.html (and outcomes.parquet) — in that order, so a report
    always shows its gates. `per_image`: audit.outcomes.collect()'s, or None."""
    from audit import distributed
    from audit import results as res

    if not distributed.is_main():  # under torchrun rank 0 alone writes and reports
        return results
    from audit import policy as gates

    if per_image is not None:
        results["outcomes"] = per_image.record
    results["gates"] = gates.run_gates(gating or gates.prepare(opts.policy, opts.baseline), results,
                                       baseline_path=opts.baseline, per_image=per_image)
    res.validate(res.jsonable(results), source="results (internal)")
    shown = {**results, "probes": {name: {**p, "examples": (examples or {}).get(name, [])}
                                   for name, p in results["probes"].items()}}
    files = {  # all or none: never a new results.json beside an old report or old outcomes
        "results.json": lambda path: res.write(results, path),
        "report.html": lambda path: write_report(shown, path, include_examples=opts.include_examples)}
    if per_image is not None:
        files[per_image.record["file"]] = lambda path: Path(path).write_bytes(per_image.data)
    write_together(opts.out, files)
    if per_image is None:  # an older run's file would only mislead (results.json no longer names it)
        from audit.outcomes import FILE

        (Path(opts.out) / FILE).unlink(missing_ok=True)
    gates.raise_for_run(results, user_errors, results_path=Path(opts.out) / "results.json")
    return results


def write_report(results: dict, out: Path, *, include_examples: bool = False) -> Path:
    from audit.results import jsonable
    from reports.render import render_report

    return render_report(jsonable(results), out, include_examples=include_examples)


def build_results(opts, bundle, sources, probe_results, started, stats) -> dict:
    return {
        "schema_version": 1,
        "tool": tool_versions(),
        "model": {"spec": opts.model, "arch": bundle.info.arch, "sha256": bundle.info.sha256,
                  "source": bundle.info.source, "library": bundle.info.library, "class": bundle.info.cls,
                  "preprocess": bundle.info.preprocess, "tokenizer": bundle.info.tokenizer},
        "run": {"seed": opts.seed, "device": bundle.device, "started": started, "finished": _now(),
                "argv": list(opts.argv), "embedding": dict(stats)},
        "data": {name: s.describe() for name, s in sources.items()},
        "probes": probe_results,
        "gates": [],
    }


def tool_versions() -> dict:
    import open_clip
    import torch

    import audit

    return {"name": "clip-audit", "version": audit.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "open_clip": open_clip.__version__}


# -- sources ---------------------------------------------------------------------------------
def resolve_sources(opts: RunOptions) -> dict:
    from audit.data import load_source

    given = opts.fairface or opts.celebrity or opts.persons or opts.shift or opts.classify
    if not given or opts.world:
        return world_sources(ensure_world(opts), progress=opts.progress, max_skip=opts.max_skip_share)
    sources = {}
    if opts.fairface:
        sources["fairface"] = load_source(opts.fairface, "fairface", progress=opts.progress)
    if opts.celebrity:
        sources["celebrity"] = load_source(opts.celebrity, "celebrity", progress=opts.progress)
    if opts.persons:
        sources["persons"] = load_source(opts.persons, "persons", progress=opts.progress)
    for role, specs in (("classify", opts.classify), ("shift", opts.shift)):
        for spec in specs:
            name = f"{role}:{_short_name(spec)}"
            sources[name] = load_source(spec, "classify", name=name, progress=opts.progress)
    check_skips(sources, opts.max_skip_share)
    return sources


def set_group_columns(sources: dict, requested: list[str] | None) -> None:
    """Each classify source's group columns (group_accuracy reads attrs["group_by"]): the ones
    --group-by names, each checked here, before any encoding; else the known ones it has."""
    from audit.groups import group_columns_of

    for name, s in sources.items():
        if name.split(":")[0] == "classify":
            s.attrs["group_by"] = group_columns_of(s.table, requested, where=f"{name} ({s.spec})")


def world_sources(world: Path, *, progress: bool, max_skip: float) -> dict:
    """The synthetic world's sources by role (which folder is which: audit.world.layout)."""
    from audit.data import load_source
    from audit.world import layout

    sources = {role: load_source(spec, kind, name=role, progress=progress)
               for role, (spec, kind) in layout.source_specs(world).items()}
    distractors = layout.distractors(world)
    if distractors:
        sources["celebrity"].attrs["distractors_file"] = str(distractors)
    check_skips(sources, max_skip)
    return sources


def check_skips(sources: dict, max_share: float) -> None:
    for name, s in sources.items():
        total = len(s) + len(s.skipped)
        if total and len(s.skipped) / total > max_share:
            first = s.skipped[0]
            raise UserError(f"{s.spec}: {len(s.skipped)} of {total} images could not be decoded "
                            f"(over the {max_share:.0%} limit; first: {first['path']}: {first['reason']}); "
                            "fix the data or raise --max-skip-share")


def ensure_world(opts: RunOptions) -> Path:
    """A world folder: the one given, or the preset generated once into the cache and reused
    (a demo model is audited on the world it was trained on: demo-null on null, demo-scenes on scenes)."""
    from audit import embed
    from audit.loaders.openclip import DEMO_MODELS
    from audit.world import layout

    choice = opts.world or DEMO_MODELS.get(opts.model, "default")
    if Path(choice).is_dir():
        return Path(choice)
    return layout.cached_world(choice, seed=opts.seed, progress=opts.progress,
                               cache_dir=opts.cache_dir or embed.default_cache_dir())


def _short_name(spec: str) -> str:
    p = Path(spec.split("@")[0])
    return p.stem if p.suffix else (p.name or spec)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def python_argv() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
