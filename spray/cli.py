"""The ``spray`` command line (also ``python -m spray``).

Exit codes: 0 done; 2 bad configuration (job file, arguments, missing files); 1 the run failed
(bad data, a locked or corrupt store, a full disk, Ctrl-C, an error in a worker, an unexpected
error). Every failure is one message on stderr, never a traceback (``SPRAY_TRACEBACK=1`` shows it).
Nothing already written is lost: stores resume, stages are reused when their inputs are unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from . import __version__, console
from .errors import ConfigError, SprayError, storage_error, write_failure
from .interrupts import CtrlC

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_CODES = """exit codes:
  0  done
  1  the run failed: bad data, a locked or corrupt store, an unexpected error (finished work is kept)
  2  bad configuration: an unknown or mistyped job key, a missing file, a wrong argument
     (the message names the key or file and the fix)"""
INIT_DEFAULT = "spray-job.yaml"


def _overrides(pairs: List[str]) -> dict:
    import yaml
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set explain.batch_size=32")
        key, _, value = pair.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _job(args):
    from .config import load_job
    return load_job(args.job, _overrides(args.set))


def _verbosity(args) -> int:
    return getattr(args, "verbose", 0) - getattr(args, "quiet", 0)


def _progress(args) -> bool:
    if not console.bars_enabled(_verbosity(args)):
        return False
    console.give_width()
    return True


def _finish(run, started: float) -> None:
    index = run.report / "index.html"
    summary = run.report / "summary.json"
    if index.exists() and summary.exists():
        flagged = json.loads(summary.read_text())["flagged"]
        print(f"report: {index.resolve()}")
        for f in flagged:
            rate = "n/a" if f["flip_rate"] is None else f"{f['flip_rate']:.0%}"
            print(f"  flagged: class {f['class']} cluster {f['cluster']} (score {f['score']:.2f}, flip rate {rate})")
        if not flagged:
            print("  no suspicious cluster found")
    print(f"done in {time.perf_counter() - started:.0f} s; run folder {run.folder.resolve()}")


def _stages(stages):
    def command(args) -> int:
        from .pipelines.audit import run_job
        started = time.perf_counter()
        run = run_job(_job(args), stages, progress=_progress(args))
        _finish(run, started)
        return EXIT_OK
    return command


def _demo(args) -> int:
    from .pipelines import demo
    started = time.perf_counter()
    run = demo.run(args.out, small=args.small, cluster=args.cluster, progress=_progress(args))
    _finish(run, started)
    return EXIT_OK


def _inspect(args) -> int:
    from .store import HeatmapStore
    path = Path(args.path)
    store = path / "store" if (path / "store" / "manifest.json").exists() else path
    with HeatmapStore(store) as st:
        info = st.describe()
        problems = st.verify() if args.verify else None
    if args.json:
        print(json.dumps({**info, "integrity": problems}, indent=1, default=str))
    else:
        prov = info["provenance"]
        print(f"store {info['store']}: {info['samples']} samples in {info['shards']} shards, relevance "
              f"{info['relevance_shape']} {info['dtype']}, {info['bytes_per_sample']} bytes/sample on disk")
        print(f"classes (label: n): {info['classes']}; skipped samples: {info['skipped']}; accuracy {info['accuracy']:.3f}")
        print(f"model sha256 {prov['model_sha256'][:16]}..., composite {json.dumps(prov['composite'])}")
        print(f"data {prov['data']}, preprocess {prov['preprocess']}, target {prov['target']}")
        print(f"versions {prov.get('versions')}, created {prov.get('created')}")
        stages = path / "stages.json"
        if stages.exists():
            print(f"run stages: {json.dumps(json.loads(stages.read_text()))}")
        if problems is not None:
            print("integrity: OK (every shard checksum verified)" if not problems else
                  "integrity: FAILED\n  " + "\n  ".join(problems))
    return EXIT_FAILED if problems else EXIT_OK


def shipped_configs() -> dict:
    """The job files installed with spray (``spray.configs``): name -> text."""
    from importlib.resources import files
    return {p.name[:-5]: p.read_text() for p in sorted(files("spray.configs").iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def _init(args) -> int:
    configs = shipped_configs()
    if args.list:
        for name, text in configs.items():
            print(f"{name:16s} {text.splitlines()[0].lstrip('# ')}")
        return EXIT_OK
    if args.example not in configs:
        raise ConfigError(f"spray init --example {args.example!r}: no such job; shipped: {', '.join(configs)}")
    path = Path(args.path)
    if path.is_dir():
        path = path / INIT_DEFAULT
    if path.exists() and not args.force:
        raise ConfigError(f"{path} exists; choose another path or add --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(configs[args.example])
    print(f"wrote {path} (the {args.example!r} job)")
    if args.example == "template":
        print(f"  next: edit data.path, preprocess and model (factory, weights), then: spray run {path}")
    else:
        print(f"  next: spray run {path}")
    return EXIT_OK


def _export(args) -> int:
    from .export import export_virelay
    project = export_virelay(args.run, args.out, compress=args.compress, progress=_progress(args))
    print(f"ViRelAy project: {project.resolve()}")
    print(f"  open it with: virelay {project}   (pip install virelay==0.6.1; then http://localhost:8000)")
    return EXIT_OK


def _diff(args) -> int:
    from .diff import diff_runs, to_text, write_diff
    d = diff_runs(args.run_a, args.run_b)
    paths = write_diff(d, args.out or Path(d["run_b"]) / "diff")
    print(json.dumps(d, indent=1) if args.json else to_text(d))
    if not args.json:
        print(f"diff page: {paths['html'].resolve()} (JSON: {paths['json'].resolve()})")
    return EXIT_OK


def _verbosity_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more log output (-v: spray's debug messages, -vv: also the libraries')")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="less output (-q: warnings only and no progress bars, -qq: errors only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spray", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES,
        description="Audit image classifiers and their training sets with LRP heatmaps and Spectral Relevance "
                    "Analysis (SpRAy). Start with `spray demo`, or `spray init` to write a job for your data.")
    parser.add_argument("--version", action="version", version=f"spray {__version__}")
    _verbosity_options(parser, 0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text, description=None):
        p = sub.add_parser(name, help=help_text, description=description or help_text, epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _verbosity_options(p, argparse.SUPPRESS)  # after the command too; absent there, the global value stays
        return p

    def job_command(name, help_text, stages):
        p = command(name, help_text)
        p.add_argument("job", help="YAML job file (`spray init` writes a template to fill in)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a job key, e.g. --set cluster.n_workers=4 (repeatable)")
        p.set_defaults(func=_stages(stages))

    job_command("run", "run the whole audit: explain -> analyze -> verify -> report",
                ("explain", "analyze", "verify", "report"))
    job_command("explain", "compute LRP heatmaps into the run's HDF5 store (resumes)", ("explain",))
    job_command("analyze", "SpRAy per class on the run's store, then the flip test of flagged clusters",
                ("analyze", "verify"))
    job_command("report", "write the run's HTML/PNG/CSV/JSON report", ("report",))

    demo = command("demo", "audit the bundled watermark bed end to end",
                   "Build the watermark Clever-Hans bed from the bundled digits, train its CNN, explain, analyse "
                   "and write the report.")
    demo.add_argument("--out", default="reports/demo", help="run folder (default: reports/demo)")
    demo.add_argument("--small", action="store_true", help="a smaller bed (CI-sized)")
    demo.add_argument("--cluster", choices=["local", "synchronous"], help="override the cluster mode")
    demo.set_defaults(func=_demo)

    init = command("init", "write a job file to start from (the template, or a shipped example)",
                   "Write the template job (every key with its default and meaning) or one of the jobs shipped "
                   "with spray; edit it, then `spray run` it.")
    init.add_argument("path", nargs="?", default=INIT_DEFAULT, help=f"file or folder to write (default: {INIT_DEFAULT})")
    init.add_argument("--example", default="template", help="which job: template (default), demo, bed-watermark, "
                                                            "bed-background, cluster-example; see --list")
    init.add_argument("--list", action="store_true", help="list the shipped jobs")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=_init)

    inspect = command("inspect", "describe a heatmap store or a run folder",
                      "Counts, classes, provenance; --verify recomputes every checksum.")
    inspect.add_argument("path", help="a store folder or a run folder")
    inspect.add_argument("--verify", action="store_true", help="integrity check (reads every shard)")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=_inspect)

    diff = command("diff", "what changed between two runs (clusters, flags, samples, suspicion, flips)",
                   "Compare two finished runs of a job (a grown data set, a retrained model): per class, clusters and "
                   "flags that appeared or disappeared (matched by member overlap), samples that moved into or out "
                   "of flagged clusters, and the change of suspicion and flip rates. Writes diff.json and diff.html.")
    diff.add_argument("run_a", help="the earlier run folder (or its analysis folder)")
    diff.add_argument("run_b", help="the later run folder (or its analysis folder)")
    diff.add_argument("--out", help="folder for diff.json and diff.html (default: RUN_B/diff)")
    diff.add_argument("--json", action="store_true", help="print the JSON document instead of text")
    diff.set_defaults(func=_diff)

    export = command("export", "export a run for another tool (ViRelAy)", "Export a finished run for another tool.")
    export_sub = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    virelay = export_sub.add_parser("virelay", help="a ViRelAy 0.6 project: `virelay OUT/project.yaml` opens it",
                                    description="Write the input, attribution and analysis files, label map and "
                                                "project.yaml that ViRelAy 0.6 loads.",
                                    epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _verbosity_options(virelay, argparse.SUPPRESS)
    virelay.add_argument("run", help="the run folder (the job's `out`, e.g. reports/demo)")
    virelay.add_argument("out", nargs="?", help="output folder (default: RUN/virelay)")
    virelay.add_argument("--compress", action="store_true", help="gzip the image and attribution files")
    virelay.set_defaults(func=_export)
    return parser


def _failure(err: BaseException) -> str:
    """The one line a failed command prints: the error's own message (a worker's as it raised it)."""
    if isinstance(err, SprayError):
        return str(err).strip()
    failed = write_failure(err)
    if failed is not None:  # a full disk or a read-only folder, also behind a library's cleanup error
        return str(storage_error(failed))
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror or err}{where}"
    text = str(err).strip() or "(no message)"
    return f"{type(err).__name__}: {text} (an unexpected error; SPRAY_TRACEBACK=1 shows where it came from)"


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    console.setup(_verbosity(args))
    with CtrlC() as ctrl_c:
        try:
            return args.func(args)
        except ConfigError as err:
            print(f"spray: configuration error: {err}", file=sys.stderr)
            return EXIT_CONFIG
        except KeyboardInterrupt:
            ctrl_c.caught()
            print("spray: interrupted; finished shards are kept, re-run the same command to resume", file=sys.stderr)
            return EXIT_FAILED
        except Exception as err:
            if os.environ.get("SPRAY_TRACEBACK"):
                raise
            print(f"spray: error: {_failure(err)}", file=sys.stderr)
            return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
