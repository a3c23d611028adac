"""The Flower deployment helper's subprocess timeouts: a `flwr run` that times out is stopped
on the SuperLink, a `flwr ls` that times out is caught; each ends in one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from medpriv.train.federated import deployment
from medpriv.train.federated.deployment import DeploymentError, flwr_run

STARTED = b"Loading project configuration...\nSuccessfully started run 4242\nround 1\n"


class FakeFlwr:
    """Stands in for subprocess.run: records each `flwr` command and answers per subcommand
    with a CompletedProcess, or raises what it is given."""

    def __init__(self, **answers: object) -> None:
        self.answers, self.commands = answers, []

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        self.commands.append(command[1:])
        answer = self.answers[command[1]]
        if isinstance(answer, BaseException):
            raise answer
        return subprocess.CompletedProcess(command, 0, stdout=answer, stderr="")

    def ran(self, subcommand: str) -> list[list[str]]:
        return [c for c in self.commands if c[0] == subcommand]


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeFlwr) -> str:
    monkeypatch.setattr(deployment.subprocess, "run", fake)
    with pytest.raises(DeploymentError) as caught:
        flwr_run(tmp_path, superlink="127.0.0.1:9", job_path=tmp_path / "job.json", timeout=5)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_a_flwr_run_timeout_stops_the_run_on_the_superlink(tmp_path, monkeypatch):
    fake = FakeFlwr(run=subprocess.TimeoutExpired(["flwr", "run"], 5, output=STARTED), stop="")
    message = _run(tmp_path, monkeypatch, fake)
    assert fake.ran("stop") == [["stop", "4242", "local"]]
    assert not fake.ran("ls")
    assert message.startswith("flwr run timed out after 5 s and run 4242 was stopped")
    log = (tmp_path / "logs" / "flwr-run.log").read_text()
    assert "Successfully started run 4242" in log and "b'" not in log  # bytes decoded


def test_a_failed_stop_says_how_to_stop_the_run(tmp_path, monkeypatch):
    timeout = subprocess.TimeoutExpired(["flwr", "run"], 5, output=STARTED)
    fake = FakeFlwr(run=timeout, stop=subprocess.TimeoutExpired(["flwr", "stop"], 60))
    message = _run(tmp_path, monkeypatch, fake)
    assert fake.ran("stop") == [["stop", "4242", "local"]]
    assert "stopping run 4242 failed: stop it with `flwr stop 4242`" in message


def test_a_flwr_run_timeout_before_the_run_started_stops_nothing(tmp_path, monkeypatch):
    fake = FakeFlwr(run=subprocess.TimeoutExpired(["flwr", "run"], 5, output=b"connecting\n"))
    message = _run(tmp_path, monkeypatch, fake)
    assert fake.commands == [fake.commands[0]] and fake.commands[0][0] == "run"
    assert "before a run started" in message


def test_a_flwr_ls_timeout_is_one_line(tmp_path, monkeypatch):
    fake = FakeFlwr(run=STARTED.decode(), ls=subprocess.TimeoutExpired(["flwr", "ls"], 60), stop="")
    message = _run(tmp_path, monkeypatch, fake)
    assert fake.ran("ls") and not fake.ran("stop")
    assert message.startswith("flwr ls did not answer within 60 s")
    assert "run 4242" in message
