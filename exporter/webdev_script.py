"""`ignition-exporter webdev-script`: the gateway-side script and how to install it."""

from __future__ import annotations

from pathlib import Path

from exporter.packaged import data_dir

DO_GET = "return session_exporter.handle(request, session)"

INSTRUCTIONS = """\
Install the session endpoint on an Ignition gateway (7.9 to 8.3, WebDev module required)
========================================================================================

1. In the Designer, open (or create) the project that will serve the endpoint, for example
   a project named `monitoring`. Its name becomes part of the URL.
2. Project Browser > Scripting > Project Library: create a script named `session_exporter`
   and paste everything between the BEGIN and END lines below into it.
3. In that script set TOKEN to a long random string, e.g. the output of
   `python3 -c "import secrets; print(secrets.token_urlsafe(32))"`. Keep a copy for the
   exporter (token_file or token_env in its configuration).
4. Project Browser > Web Dev: create a Python Resource named `sessions`. In its doGet
   handler put this single line:

       {do_get}

   Tick "Require HTTPS" on the resource so the token and the session data never cross the
   network in clear text (the gateway then answers plain HTTP with a redirect or refusal).
5. Save the project. The endpoint is now
       https://<gateway>:8043/system/webdev/monitoring/sessions
6. Check it:
       curl -H "Authorization: Bearer <TOKEN>" https://<gateway>:8043/system/webdev/monitoring/sessions
   A JSON document with "schema": 1 is the answer; HTTP 401 means the token differs.
7. Point the exporter at it:
       gateways:
         - name: plant-a
           url: https://<gateway>:8043/system/webdev/monitoring/sessions
           token_file: /etc/ignition-exporter/plant-a.token

Ignition 7.9: the script is the same file (it runs on 7.9's Jython 2.5). Create it under
Project > Scripts > Script Library as `session_exporter`; the doGet line is then
       return project.session_exporter.handle(request, session)
and the URL has /main in front: https://<gateway>:8043/main/system/webdev/monitoring/sessions
7.9 has no Perspective: the document's Perspective list is empty, with a warning saying so.

getSessionInfo only sees the sessions of the gateway it runs on: in a redundant pair or a
gateway network, install the endpoint on each node and configure each as its own gateway.
"""


def script_path() -> Path:
    return data_dir("ignition") / "session_exporter.py"


def script_text() -> str:
    return script_path().read_text(encoding="utf-8")


def render() -> str:
    return (INSTRUCTIONS.format(do_get=DO_GET)
            + "\n----- BEGIN session_exporter (project library script) -----\n"
            + script_text()
            + "----- END session_exporter -----\n")
