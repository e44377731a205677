"""Arbitrary requests against the real exporter process: only 200, 400, 401, 403, 404, 405 or
414 may come back; never a 500, never a hang. (403: `/-/reload` without
`--web.enable-lifecycle`, as Prometheus answers.)"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote

import bcrypt
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.processes import basic_auth
from tests.strategies import accepts, encodings

ALLOWED = {200, 400, 401, 403, 404, 405, 414}
PASSWORD = "fuzz-pass"
VALID_AUTH = basic_auth("prometheus", PASSWORD)["Authorization"]


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The exporter in demo mode with basic auth on, started once for every example."""
    tmp = tmp_path_factory.mktemp("fuzz")
    web = tmp / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {
        "prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}}))
    log = tmp / "exporter.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "exporter", "--demo",
                                    "--web.config.file", str(web), "--listen", "127.0.0.1:0"],
                                   stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (match := re.search(r"address=http://([\d.]+):(\d+)", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield match.group(1), int(match.group(2))
    finally:
        process.terminate()
        process.wait(timeout=10)
    text = log.read_text()
    assert "Traceback" not in text and "level=error" not in text, text[-5000:]


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    exclude_characters="\x7f"), max_size=200)
params = st.lists(st.tuples(st.sampled_from(["username", "project", "gateway", "kind", "name[]"])
                            | text, text), max_size=5)
paths = st.sampled_from(["/sessions", "/metrics", "/", "/healthz", "/sessions/", "/metrics/x",
                         "/-/reload"]) \
    | text.map(lambda t: "/" + quote(t, safe="/"))
raw_queries = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200)
headers = st.dictionaries(
    st.sampled_from(["Accept", "Accept-Encoding", "Range", "If-None-Match", "X-Forwarded-For",
                     "Content-Type", "Cookie"]), header_text, max_size=4) | st.fixed_dictionaries(
    {"Accept": accepts, "Accept-Encoding": encodings})
long_password = basic_auth("prometheus", "p" * 100)["Authorization"]
unknown_long = basic_auth("nobody", "p" * 73)["Authorization"]
auth = st.sampled_from([VALID_AUTH, long_password, unknown_long]) \
    | header_text.map(lambda t: "Basic " + t) | st.none()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
       path=paths, query=params, raw=st.none() | raw_queries, extra=headers,
       authorization=auth)
def test_only_expected_statuses(exporter: tuple[str, int], method: str, path: str,
                                query: list[tuple[str, str]], raw: str | None,
                                extra: dict[str, str], authorization: str | None) -> None:
    host, port = exporter
    target = path + "?" + (raw if raw is not None else
                           "&".join(f"{quote(k)}={quote(v)}" for k, v in query))
    sent = dict(extra)
    if authorization is not None:
        sent["Authorization"] = authorization
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, target, headers=sent)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status in ALLOWED, (method, target, sent, response.status)


def test_very_long_request_line_is_refused(exporter: tuple[str, int]) -> None:
    host, port = exporter
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", "/sessions?username=" + "a" * 20_000,
                       headers={"Authorization": VALID_AUTH})
    response = connection.getresponse()
    assert response.status in (400, 414)
