"""``graftwatch serve``: serve the deployments of prefect.yaml to a Prefect server.

prefect.yaml stays the one description of the deployments (``prefect deploy`` reads it
too, for work pools). ``serve`` reads it, builds each deployment with
``flow.to_deployment`` and runs them all with ``prefect.serve`` in this process: the
server schedules runs (inbox polling on an interval, nightly maintenance on a cron,
reprocessing on demand) and this process executes them, until Ctrl-C. Without
``PREFECT_API_URL``, a local Prefect server with its scheduler and UI is started for as
long as ``serve`` runs (``[prefect] port`` of ``--config``, default 4200).

What is read from each deployment entry: ``name``, ``entrypoint``
(``flows/pipeline.py:process_inbox``, relative to the yaml's folder), ``description``,
``tags``, ``version``, ``parameters``, ``schedules`` (``interval`` seconds, ``cron`` with
optional ``timezone``, ``rrule``; ``active: false`` to keep one off),
``concurrency_limit`` and ``paused``. Values may name environment variables the way
Prefect's own templating does: ``"{{ $GRAFTWATCH_STORE }}"``; an unset variable is a
configuration error (exit 2), never a silent empty path.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from assays.errors import ConfigError

EXIT_OK, EXIT_USAGE = 0, 2
_ENV = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_KNOWN_KEYS = {"name", "entrypoint", "description", "tags", "version", "parameters", "schedules", "schedule",
               "concurrency_limit", "paused", "work_pool", "pull", "build", "push", "enforce_parameter_schema"}


def _resolve(value: Any, where: str) -> Any:
    """Replace ``{{ $VAR }}`` placeholders from the environment (recursively)."""
    if isinstance(value, str):
        names = _ENV.findall(value)
        missing = [n for n in names if n not in os.environ]
        if missing:
            raise ConfigError(f"prefect.yaml: {where} needs environment variable {missing[0]} (set it, then serve)")
        whole = _ENV.fullmatch(value.strip())
        if whole:
            return os.environ[whole.group(1)]
        return _ENV.sub(lambda m: os.environ[m.group(1)], value)
    if isinstance(value, list):
        return [_resolve(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, f"{where}.{k}") for k, v in value.items()}
    return value


def _load_flow(entrypoint: str, base: Path):
    """The flow object named by ``path/to/file.py:function`` (relative to ``base``)."""
    if ":" not in entrypoint:
        raise ConfigError(f"prefect.yaml: entrypoint {entrypoint!r} must look like flows/pipeline.py:process_inbox")
    file_part, func = entrypoint.rsplit(":", 1)
    path = (base / file_part).resolve()
    if not path.is_file():
        raise ConfigError(f"prefect.yaml: entrypoint {entrypoint!r}: no such file {path}")
    # Import as a package module (flows.pipeline), not as a loose file: one copy of each
    # module, and the same import path the run subprocess will use.
    try:
        rel = path.relative_to(base.resolve()).with_suffix("")
    except ValueError:
        raise ConfigError(f"prefect.yaml: entrypoint {entrypoint!r} lies outside {base}") from None
    if str(base.resolve()) not in sys.path:
        sys.path.insert(0, str(base.resolve()))
    module = importlib.import_module(".".join(rel.parts))
    obj = getattr(module, func, None)
    if obj is None or not hasattr(obj, "to_deployment"):
        raise ConfigError(f"prefect.yaml: entrypoint {entrypoint!r} does not name a Prefect flow")
    return obj


def _schedules(entries: list | None, where: str) -> list:
    from prefect.schedules import Cron, Interval, RRule

    out = []
    for i, s in enumerate(entries or []):
        if not isinstance(s, dict):
            raise ConfigError(f"prefect.yaml: {where}.schedules[{i}] must be a mapping")
        active = bool(s.get("active", True))
        tz = s.get("timezone")
        if "interval" in s:
            seconds = s["interval"]
            if not isinstance(seconds, (int, float)) or seconds <= 0:
                raise ConfigError(f"prefect.yaml: {where}.schedules[{i}].interval must be seconds > 0")
            out.append(Interval(seconds, timezone=tz, active=active))
        elif "cron" in s:
            out.append(Cron(str(s["cron"]), timezone=tz, active=active))
        elif "rrule" in s:
            out.append(RRule(str(s["rrule"]), timezone=tz, active=active))
        else:
            raise ConfigError(f"prefect.yaml: {where}.schedules[{i}] needs interval, cron or rrule")
    return out


def load_deployments(yaml_path: str | Path, names: list[str] | None = None) -> list:
    """The deployments of ``yaml_path`` as Prefect ``RunnerDeployment`` objects.

    ``names``: only these deployments (default: all). ``ConfigError`` for anything the
    file gets wrong, naming the deployment and key.
    """
    import yaml

    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        raise ConfigError(f"{yaml_path}: no such file (pass --prefect-yaml PATH)")
    try:
        doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{yaml_path}: not valid YAML ({exc})") from None
    entries = doc.get("deployments")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{yaml_path}: no deployments listed")
    base = yaml_path.parent
    out = []
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"deployments[{i}]" + (f" ({name})" if name else "")
        if not name or not entry.get("entrypoint"):
            raise ConfigError(f"prefect.yaml: {where} needs a name and an entrypoint")
        if names and name not in names:
            continue
        unknown = set(entry) - _KNOWN_KEYS
        if unknown:
            raise ConfigError(f"prefect.yaml: {where}: unknown key {sorted(unknown)[0]!r}")
        flow_obj = _load_flow(entry["entrypoint"], base)
        params = _resolve(entry.get("parameters") or {}, f"{where}.parameters")
        schedules = _schedules(_resolve(entry.get("schedules") or [], f"{where}.schedules"), where)
        out.append(flow_obj.to_deployment(
            name=name,
            description=entry.get("description"),
            tags=list(entry.get("tags") or []),
            version=str(entry["version"]) if entry.get("version") is not None else None,
            parameters=params,
            schedules=schedules or None,
            concurrency_limit=entry.get("concurrency_limit"),
            paused=entry.get("paused"),
        ))
    if names:
        missing = set(names) - {d.name for d in out}
        if missing:
            raise ConfigError(f"prefect.yaml: no deployment named {sorted(missing)[0]!r}")
    return out


def serve(args) -> int:
    """Serve prefect.yaml's deployments until Ctrl-C; 0 on a clean stop, 2 on bad config.

    ``args``: ``prefect_yaml`` (path), optional ``deployment`` (list of names) and
    ``limit`` (concurrent runs) when the CLI offers them.
    """
    from flows.config import load_config
    from flows.runners import prefect_api

    yaml_path = Path(getattr(args, "prefect_yaml", None) or "prefect.yaml")
    try:
        config = load_config(getattr(args, "config", None))
        deployments = load_deployments(yaml_path, getattr(args, "deployment", None))
    except ConfigError as exc:
        print(f"graftwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import warnings

    from prefect import serve as prefect_serve

    # prefect.serve's Ctrl-C handler schedules Runner.astop without awaiting it when the
    # loop is already closing; the runner has stopped all the same, so the warning only
    # alarms whoever stopped it.
    warnings.filterwarnings("ignore", message="coroutine 'Runner.astop' was never awaited")

    def announce(text: str) -> None:
        print(f"graftwatch: {text}; schedules fire while this command runs", file=sys.stderr, flush=True)

    try:
        # A server with its scheduler for as long as we serve: Prefect's temporary
        # server runs no scheduler, so no scheduled run would ever fire on it.
        with prefect_api(config.prefect.port, config.prefect.start_timeout_seconds, announce=announce):
            prefect_serve(*deployments, limit=getattr(args, "limit", None))
    except ConfigError as exc:
        print(f"graftwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return EXIT_OK
