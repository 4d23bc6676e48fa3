"""The typed client kit, @records/client (clients/js, docs/client.md), in `make test`.

Its own toolchain runs here, from the committed lockfile (`make kit-deps` ran `npm ci`): strict tsc,
eslint, the vitest unit tests (the updates client's state machine against a fake socket, the REST
client, the React hooks) and the size budget. And the two things that must never drift:
- the generated types (src/generated/) against what the server defines now (the WebSocket messages'
  JSON Schemas and the OpenAPI schema): a server change that the kit does not follow fails here;
- the console's bundle (realtime/static/realtime/kit/records-client.js, committed so a deployment
  needs no Node) against what the kit's sources build.
Node and npm come from scripts/ensure-node (`make test` runs it): missing, these fail, never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

from backend.events import schema

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "clients" / "js"
BUNDLE = ROOT / "realtime" / "static" / "realtime" / "kit" / "records-client.js"


def run(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed: run `make node-deps` (scripts/ensure-node)", pytrace=False)
    if not (KIT / "node_modules" / ".bin" / "tsc").exists():
        pytest.fail("clients/js has no node_modules: run `make kit-deps` (npm ci from the lockfile)", pytrace=False)
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(list(args), cwd=KIT, capture_output=True, text=True, timeout=timeout, env=full_env, check=False)


def passed(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture
def server_schemas(tmp_path):
    """What the server says now: the messages' JSON Schemas and the OpenAPI schema, as files."""
    messages, openapi = tmp_path / "messages.json", tmp_path / "openapi.json"
    call_command("export_message_schemas", output=str(messages))
    call_command("spectacular", format="openapi-json", file=str(openapi))
    return messages, openapi


def test_the_generated_types_are_what_the_server_defines_now(server_schemas):
    messages, openapi = server_schemas
    # when the kit's generator checks its committed types against the server's schemas
    out = passed(run("node", "scripts/generate.mjs", "--messages", str(messages), "--openapi", str(openapi), "--check"))
    # then they are the same
    assert "up to date" in out


def test_a_server_change_the_kit_does_not_follow_fails_the_check(server_schemas, tmp_path):
    messages, openapi = server_schemas
    # given a server whose data_update carries one more field, and one with one more error code
    document = json.loads(messages.read_text())
    document["$defs"]["DataUpdatePayload"]["properties"]["new_field"] = {"type": "string"}
    changed_messages = tmp_path / "changed-messages.json"
    changed_messages.write_text(json.dumps(document))
    api = json.loads(openapi.read_text())
    api["components"]["schemas"]["ErrorCode"]["enum"].append("brand_new_code")
    changed_api = tmp_path / "changed-openapi.json"
    changed_api.write_text(json.dumps(api))
    for pair in ((changed_messages, openapi), (messages, changed_api)):
        # when the check runs against it
        result = run("node", "scripts/generate.mjs", "--messages", str(pair[0]), "--openapi", str(pair[1]), "--check")
        # then it fails and says what to do
        assert result.returncode == 1, result.stdout + result.stderr
        assert "make kit-types" in result.stderr


def test_the_message_schemas_export_every_message_each_way():
    from backend.events.management.commands.export_message_schemas import message_schemas

    document = message_schemas()
    defs = document["$defs"]
    server = {defs[ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["const"] for ref in defs["ServerMessage"]["oneOf"]}
    client = {defs[ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["const"] for ref in defs["ClientMessage"]["oneOf"]}
    assert server == set(schema.SCHEMAS)
    assert client == set(schema.CLIENT_SCHEMAS) == {"ping", "subscribe", "unsubscribe", "viewing", "editing", "idle", "refresh"}
    assert document["x-protocol-version"] == schema.PROTOCOL_VERSION


def test_the_kit_major_version_follows_the_protocol():
    version = json.loads((KIT / "package.json").read_text())["version"]
    assert int(version.split(".")[0]) == schema.PROTOCOL_VERSION


def test_the_kit_typechecks_lints_and_passes_its_unit_tests():
    passed(run("npx", "tsc", "--noEmit", "-p", "tsconfig.json"))
    passed(run("npx", "eslint", "."))
    out = passed(run("npx", "vitest", "run", "--reporter=dot"))
    assert " passed" in out and " failed" not in out


def test_the_committed_console_bundle_is_what_the_kit_builds(tmp_path):
    # when the console's bundle is built from the kit's sources into a scratch folder
    passed(run("npx", "tsup", env={"KIT_BUNDLE_ONLY": "1", "KIT_BUNDLE_DIR": str(tmp_path)}))
    # then it is byte for byte the committed one the console imports
    assert (tmp_path / "records-client.js").read_bytes() == BUNDLE.read_bytes(), (
        "realtime/static/realtime/kit/records-client.js is stale: run `make kit` and commit it"
    )


def test_the_updates_client_stays_within_its_size_budget():
    out = passed(run("node", "scripts/size.mjs"))
    line = next(line for line in out.splitlines() if "src/updates.ts" in line)
    assert float(line.split("KB min+gzip")[0].split()[-1]) <= 10.0, out
