"""`ignition-exporter simulate`: a standalone simulated gateway that the exporter, run as
its own process with the configuration the simulator prints, polls."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.standins.simulator import REST_PATHS, WEBDEV_PATH
from tests.metrics import total
from tests.processes import ExporterProcess


def printed_config(log: Path) -> dict[str, object]:
    text = log.read_text()
    start = text.index("# ignition-exporter configuration")
    lines = []
    for line in text[start:].splitlines():
        if line.startswith("ts="):
            break
        lines.append(line)
    return dict(yaml.safe_load("\n".join(lines)))


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "token", "path"), [
    ("webdev", "s3cret", WEBDEV_PATH),
    ("rest", "exporter:s3cret", REST_PATHS["perspective"]),  # an 8.3 key is NAME:SECRET
])
async def test_exporter_polls_the_standalone_simulator(tmp_path: Path, shape: str, token: str,
                                                       path: str) -> None:
    async with ExporterProcess(tmp_path, "simulate", "--shape", shape, "--token", token,
                               "--sessions", "12", "--clients", "3", name="simulator") as sim:
        status, _ = await sim.get(path)
        assert status == 401  # the token is required
        config = printed_config(sim.log)
        (gateway,) = config["gateways"]  # type: ignore[misc]
        assert gateway["token_env"] == "SIMULATOR_TOKEN"
        assert gateway.get("source", "webdev") == shape
        config_file = tmp_path / "config.yml"
        config_file.write_text(yaml.safe_dump({"poll_interval": "1s", **config}))
        async with ExporterProcess(tmp_path, "--config", str(config_file),
                                   env={"SIMULATOR_TOKEN": token}) as exporter:
            text = await exporter.wait_for_metric('ignition_up{gateway="simulated"} 1.0')
            assert 8 <= total(text, "ignition_perspective_sessions") <= 16
            assert total(text, "ignition_client_sessions") >= 1
            # the REST API is 8.3's: a simulated REST gateway must not report an older version
            assert ('version="8.3.' in text) == (shape == "rest")
            assert await exporter.stop() == 0
        assert await sim.stop() == 0
    assert re.search(r"msg=listening address=http://127\.0\.0\.1:\d+ simulated_gateway="
                     + shape, sim.log.read_text())


@pytest.mark.parametrize("argv", [["--shape", "rest"], ["--config", "c.yml", "--sessions", "5"],
                                  ["rules", "--token", "x"]])
def test_simulator_options_belong_to_simulate(argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "is an option of the simulate command" in capsys.readouterr().err


def test_a_rest_token_must_be_an_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--shape", "rest", "--token", "s3cret"])
    assert exit_.value.code == 2
    assert "NAME:SECRET" in capsys.readouterr().err


def test_negative_sizes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--sessions", "-1"])
    assert "--sessions must not be negative" in capsys.readouterr().err
