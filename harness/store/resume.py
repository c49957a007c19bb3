"""The grids stored in run directories: what ``--resume`` keeps and ``--grid-from`` takes, and
the plan of a request that names them."""

from __future__ import annotations

from typing import Any

from harness.errors import UnknownNameError, UsageError
from harness.grid.plan import StoredGrids, SweepPlan, SweepRequest, plan
from harness.grid.spec import SETTING_NAMES, grid_names
from harness.store.run_dir import open_run


def plan_sweep(request: SweepRequest, **options: Any) -> SweepPlan:
    """``harness.grid.plan.plan`` with the grids stored in the run directories the request
    names (``--resume``, ``--grid-from``)."""
    stored = stored_grids(request)
    try:
        return plan(request, stored=stored, **options)
    except UnknownNameError as exc:
        if not request.resume or exc.kind != "implementation":
            raise
        modules = [str(m) for m in (open_run(request.resume).metadata().get("settings")
                                    or {}).get("impl_modules") or ()]
        if not modules:
            raise
        loaded = set(request.impl_modules or ())
        missing = [m for m in modules if m not in loaded]
        raise UsageError(f"--resume {request.resume}: {exc}; the run was made with "
                         f"{' '.join('--impl-module ' + m for m in modules)}"
                         + (f" ({', '.join(missing)} not given now): run_bench.py "
                            f"{' '.join('--impl-module ' + m for m in modules)} sweep --resume "
                            f"{request.resume}" if missing else "")) from None


def stored_grids(request: SweepRequest) -> StoredGrids:
    grid_from = stored_grid_arguments(request.grid_from, "--grid-from") \
        if request.grid_from else None
    resume = None
    if request.resume:
        meta = open_run(request.resume).metadata()
        if meta.get("kind", "speed") != "speed":
            raise UsageError(f"--resume {request.resume}: this is a {meta.get('kind')} run, not "
                             f"a speed sweep (resume it with the command that made it)")
        resume = stored_grid_arguments(request.resume, "--resume")
        run = open_run(request.resume)
        if run.results_path.exists():   # before anything is measured or written
            run.refuse_unsound_records("resume")
    return StoredGrids(grid_from=grid_from, resume=resume)


def stored_grid_arguments(run_dir: str, flag: str) -> dict[str, Any] | None:
    """The grid flags stored in RUN_DIR's run.json; refused for a merge of different grids."""
    meta = open_run(run_dir).metadata()
    if meta.get("grids"):
        raise UsageError(f"{flag} {run_dir}: this run merges {len(meta['grids'])} different "
                         "grids, so it has no one grid to take" +
                         ("; it cannot be resumed" if flag == "--resume" else
                          "; give the grid flags"))
    arguments = (meta.get("grid") or {}).get("arguments")
    unknown = sorted(set(arguments or {}) - set(grid_names()) - set(SETTING_NAMES))
    if unknown:
        # an axis of a plug-in not loaded here: without it the grid would silently lose the
        # axis (its points never measured, the run read as complete)
        modules = [str(m) for m in (meta.get("settings") or {}).get("impl_modules") or ()]
        hint = (" ".join(f"--impl-module {m}" for m in modules) if modules
                else "the --impl-module that declares it")
        raise UsageError(f"{flag} {run_dir}: its grid has {', '.join(unknown)}, which no loaded "
                         f"module declares; give {hint}")
    return arguments
