"""The pytest11 entry point: options, ini keys, markers, fixtures and thin hooks.

Every pytest run in the user's environment imports this module, so it stays import-light:
pydantic, the study grammar and the runner are imported only once a ``*.llem.yaml`` file is
collected, and torch/transformers/vllm/zeus only ever inside a cell's child process. Each hook
fetches the session's :class:`~pytest_llem.session.LlemSession` from ``config.stash`` and calls
one method of it; the xdist-only hooks are in xdist.py, registered only when xdist is present.

The entry point is named after this module, ``pytest_llem.plugin``, so that ``-p pytest_llem.plugin``
and the installed entry point load it once under one name (pluggy refuses one module under two
names); ``-p no:pytest_llem.plugin`` disables the plugin.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llem.study.files import is_study_file

if TYPE_CHECKING:
    from pytest_llem.execution.idle_power import SessionIdlePower
    from pytest_llem.session import LlemSession


#: The longest --llem-timeout taken: beyond a week a "time limit" is a typo, not a limit.
MAX_CELL_SECONDS = 7 * 24 * 3600


def _cell_time_limit(text: str) -> float:
    """``--llem-timeout``'s value; argparse turns the error into a usage error naming the option.

    ``float`` alone would take ``nan`` (a limit no time ever exceeds), ``0`` (read later as
    "not set") and ``-5`` (a cell killed before it starts).
    """
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_CELL_SECONDS:  # false for NaN too
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {MAX_CELL_SECONDS} (a week), got {text!r}"
        )
    return seconds


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llem", "pytest-llem: energy efficiency of LLM inference")
    group.addoption(
        "--llem-results-dir",
        dest="llem_results_dir",
        default=None,
        metavar="DIR",
        help="Where study results go (default: the study's output.results_dir, else ./results).",
    )
    group.addoption(
        "--llem-timeout",
        dest="llem_timeout",
        type=_cell_time_limit,
        default=None,
        metavar="SECONDS",
        help="Time limit per cell, overriding execution.experiment_timeout_seconds.",
    )
    group.addoption(
        "--llem-limit",
        dest="llem_limits",
        action="append",
        default=[],
        metavar="METRIC.max:N",
        help="A limit every cell must meet, e.g. mj_per_tok_adjusted.max:50 or avg_tokens_per_second.min:1000"
        " (repeatable; adds to the study's expect:).",
    )
    group.addoption(
        "--llem-compare-fail",
        dest="llem_compare_fail",
        action="append",
        default=[],
        metavar="[METRIC.]STAT:N[%]",
        help="Fail the session when a configuration regressed against the stored baseline by more than N"
        " (percent with %%), supported by its cycles; e.g. mj_per_tok_adjusted.median:5%% (repeatable).",
    )
    group.addoption(
        "--llem-compare",
        dest="llem_compare",
        choices=("stored", "last"),
        default="stored",
        help="What --llem-compare-fail compares with: the stored baseline (default), or the previous run"
        " kept in pytest's cache (last).",
    )
    group.addoption(
        "--llem-baseline-update",
        dest="llem_baseline_update",
        action="store_true",
        help="Store this run's per-cycle figures as the baseline (completed, passing cells).",
    )
    group.addoption(
        "--llem-baseline-dir",
        dest="llem_baseline_dir",
        default=None,
        metavar="DIR",
        help="Where stored baselines live (default: .llem-baselines under the rootdir; commit it).",
    )
    group.addoption(
        "--llem-baseline-required",
        dest="llem_baseline_required",
        action="store_true",
        help="A configuration with no stored baseline (NEW) fails the session instead of being reported.",
    )
    group.addoption(
        "--llem-compare-any-hardware",
        dest="llem_compare_any_hardware",
        action="store_true",
        help="Allow comparing with a baseline stored on other hardware.",
    )
    group.addoption(
        "--llem-missing-engine",
        dest="llem_missing_engine",
        choices=("fail", "skip"),
        default=None,
        help="What a cell whose engine cannot run here does (package not installed, too few GPUs):"
        " fail (default) or skip, with the reason either way. Also the ini key llem_missing_engine.",
    )
    group.addoption(
        "--llem-inconclusive",
        dest="llem_inconclusive",
        choices=("pass", "fail"),
        default=None,
        help="What a configuration whose cycles cannot decide a --llem-compare-fail rule does to the session:"
        " pass (default; reported with the cycles that would decide it) or fail. Also the ini key llem_inconclusive.",
    )
    group.addoption(
        "--llem-resume",
        dest="llem_resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="STUDY_DIR",
        help="Continue an earlier, unfinished run of the study: run only the cells it did not complete, into its"
        " directory. Without STUDY_DIR: the newest unfinished run of the same study under the results directory."
        " Refused, naming the difference, when the study file changed since.",
    )
    group.addoption(
        "--llem-shard",
        dest="llem_shard",
        default=None,
        metavar="K/N|slurm|k8s/N",
        help="Run shard K of N of every study (K from 1): a deterministic, disjoint share of its cells, balanced"
        " by expected cost; the others are deselected. slurm: this Slurm array task's shard; k8s/N: this Indexed"
        " Job pod's (JOB_COMPLETION_INDEX). Also LLEM_SHARD and the ini key llem_shard. Merge the shards' study"
        " directories with python -m pytest_llem merge.",
    )
    group.addoption(
        "--llem-shard-by",
        dest="llem_shard_by",
        choices=("config", "cell"),
        default=None,
        help="What stays whole on a shard: config (default: all cycles of a configuration on one machine) or cell.",
    )
    group.addoption(
        "--llem-shard-costs",
        dest="llem_shard_costs",
        default=None,
        metavar="STUDY_DIR",
        help="Balance shards by the per-configuration cell times an earlier run recorded (its directory or manifest.json).",
    )
    group.addoption(
        "--llem-shard-plan",
        dest="llem_shard_plan",
        action="store_true",
        default=False,
        help="Print which cells each shard of --llem-shard runs, with expected seconds, and exit without running.",
    )
    parser.addini("llem_shard", "Shard K/N (or slurm, k8s/N) of every study this run takes (see --llem-shard).", default=None)
    parser.addini("llem_results_dir", "Default results directory of pytest-llem studies.", default=None)
    parser.addini(
        "llem_missing_engine", "fail or skip: cells whose engine cannot run here (default fail).", default="fail"
    )
    parser.addini(
        "llem_inconclusive", "pass or fail: configurations the regression gate cannot decide (default pass).", default="pass"
    )
    parser.addini("llem_limits", "Limits every cell must meet (one METRIC.max:N per line).", type="linelist", default=[])
    group.addoption(
        "--llem-report",
        dest="llem_report",
        choices=("html",),
        default=None,
        help="At the end of the session write each study's report into its directory: report.html (summary with"
        " intervals and validity flags, figures, environment, gate verdicts) and plots/ (SVG, PNG). Needs"
        " matplotlib: pip install 'pytest-llem[plot]'. Also the ini key llem_report.",
    )
    parser.addini("llem_report", "html: write each study's report.html at the end of the session (see --llem-report).", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "llem(cycle, engine, model, precision, **swept_fields): a pytest-llem cell; select with"
        " -m \"llem(engine='vllm', cycle=0)\"",
    )
    _study_file_after_resume(config)
    from pytest_llem.session import SESSION_KEY, LlemSession

    config.stash[SESSION_KEY] = LlemSession(config)  # bad limits, rules or policy: usage errors now
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_llem.xdist import XdistHooks

        config.pluginmanager.register(XdistHooks(), "llem-xdist")
    # pytest-json-report's hooks are optional (the plugin may be absent) and
    # pytest_json_modifyreport is given no config: an object that holds it.
    config.pluginmanager.register(_JsonReportHooks(config), "llem-json-report")


def _study_file_after_resume(config: pytest.Config) -> None:
    """``pytest --llem-resume study.llem.yaml`` means: resume, and this is the study to run.

    ``--llem-resume`` takes an optional directory, so argparse hands it the study file that
    follows; a study file is never a study directory, so it goes back to pytest's arguments.
    """
    chosen = config.getoption("llem_resume")
    if chosen in (None, "auto") or not is_study_file(str(chosen).split("::")[0]):
        return
    config.option.llem_resume = "auto"
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        config.args.insert(0, str(chosen))
    else:  # pytest fell back to testpaths or the current directory for want of arguments
        config.args[:] = [str(chosen)]


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own answer, the CPU count
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` with studies = one worker per visible GPU; None leaves the choice to xdist.

    At module level, not with the other xdist hooks: xdist asks in its own ``pytest_cmdline_main``,
    before ``pytest_configure`` has registered those (and before there is a session).
    """
    if not any(is_study_file(a) for a in config.args):
        return None
    from pytest_llem.energy._nvml import visible_gpu_uuids

    return len(visible_gpu_uuids()[0]) or None


def _session(config: pytest.Config) -> LlemSession:
    from pytest_llem.session import session_of

    return session_of(config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_study_file(file_path):
        from pytest_llem.nodes import StudyFile

        return StudyFile.from_parent(parent, path=file_path)
    if file_path.suffix in (".yaml", ".yml") and _named_on_command_line(parent.config, file_path):
        return _MisnamedStudy.from_parent(parent, path=file_path)
    return None


def _named_on_command_line(config: pytest.Config, file_path: Path) -> bool:
    named = (Path(arg.split("::")[0]) for arg in config.args)
    return any((p if p.is_absolute() else config.invocation_params.dir / p).resolve() == file_path.resolve() for p in named)


class _MisnamedStudy(pytest.File):
    """A YAML file named on the command line that is not a study by its name: say how to make it one.

    Without this pytest answers "not found ... (no match in any of [<Dir ...>])", which does not
    say that studies are recognised by their suffix.
    """

    def collect(self) -> list[pytest.Item]:
        raise self.CollectError(
            f"{self.path.name}: pytest-llem runs study files ending in .llem.yaml (or .llem.yml); rename it to"
            f" {self.path.name.rsplit('.', 1)[0]}.llem{self.path.suffix} to run it as a study"
        )


@pytest.fixture(scope="session")
def llem_idle_baseline(request: pytest.FixtureRequest) -> SessionIdlePower:
    """Idle power per GPU for the whole session, measured once and cached (see execution/idle_power.py).

    Under pytest-xdist, per worker: the GPU the controller gave it. Override in a conftest to
    supply baselines of your own, or to disable them (return None).
    """
    return _session(request.config).idle_power()


@pytest.fixture
def llem_run_cell(request: pytest.FixtureRequest, llem_idle_baseline: SessionIdlePower | None) -> Callable[[], None]:
    """Runs the requesting cell in its own process; override in a conftest to wrap it."""
    session = _session(request.config)
    node = request.node
    return lambda: session.run_cell(node, llem_idle_baseline)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Cells in their studies' run order (after other plugins, e.g. pytest-randomly); others keep their places."""
    _session(config).order_cells(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    _session(session.config).start_studies(session.items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Remember what runs next: a cell's process can then start ahead (``execution.prestart_child``)."""
    if "pytest_llem.nodes" in sys.modules:  # only a session with studies has cells (see session.as_cell)
        _session(item.config).note_next(item, nextitem)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _session(item.config).annotate_report(item, call, report)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    llem = _session(session.config)
    llem.finish_studies()
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and llem.shard_left_nothing:
        # More shards than this study has configurations: an empty shard did its whole share.
        # An array task or CI job must not fail for it (pytest's own "no tests ran" is 5).
        session.exitstatus = pytest.ExitCode.OK


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    """After every planned cell ran: adaptive cycles, then the regression gate.

    A regression fails the session through ``testsfailed`` (pytest-cov's way), even when every
    cell passed; never by raising from the terminal summary."""
    result = yield
    llem = _session(session.config)
    llem.run_adaptive_cycles(session)
    llem.finish_studies()  # wall time recorded before pytest-json-report reads the manifests
    session.testsfailed += llem.judge_regressions()
    return result


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    return _session(config).header_lines()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    _session(config).write_summary(terminalreporter)


class _JsonReportHooks:
    """pytest-json-report's hooks: each cell's figures in its test's metadata, the studies at the top."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_json_runtest_metadata(self, item: pytest.Item, call: pytest.CallInfo[None]) -> dict[str, Any]:
        return _session(item.config).json_metadata(item, call)

    @pytest.hookimpl(optionalhook=True)
    def pytest_json_modifyreport(self, json_report: dict[str, Any]) -> None:
        _session(self.config).add_to_json_report(json_report)
