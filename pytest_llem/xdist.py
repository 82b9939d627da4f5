"""pytest-xdist's hooks: one GPU per worker, one stamp per session, one study directory.

Registered only when xdist is installed (pluggy rejects hooks it has no specification for).
The controller gives each worker the session's stamp (so all workers write into the same study
directories, whose manifest they update under a lock) and the UUID of the one GPU it may use;
workers report back the study directories they wrote, which the controller summarises at the
end. Each hook fetches the session and calls one method of it (see session.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llem.session import session_of


class XdistHooks:
    """The xdist-only hooks, as methods of an object so that they are registered only with xdist."""

    def pytest_configure(self, config: pytest.Config) -> None:
        # Called as this object is registered, from the plugin's own pytest_configure.
        session_of(config).check_worker_count()

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput.update(session_of(node.config).worker_input(str(node.gateway.id)))

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        session_of(node.config).add_worker_output(getattr(node, "workeroutput", {}))
