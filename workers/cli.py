"""`records-bulk`: submit a bulk status change from a batch host and follow it to the end.

    RECORDS_URL=https://records.example.com RECORDS_USERNAME=north.approver RECORDS_PASSWORD=... \\
        python -m workers.cli approve --entity withdrawal --ids-file ids.txt

Reads requests (one per line, `#` comments allowed) from --ids-file or stdin: ids or request numbers
as people see them (`WR-2026-0042`); `ID@VERSION` or `NUMBER@VERSION` binds a decision to the version
the decider saw. Authenticates against the
REST API (RECORDS_TOKEN, or RECORDS_USERNAME + RECORDS_PASSWORD or RECORDS_PASSWORD_FILE), submits POST /api/bulk-actions/,
shows a progress bar until the job ends (unless --no-wait) and prints a summary.

A decision (approve, reject, send-back) is signed as the API requires: with the password it reads
anyway (RECORDS_PASSWORD_FILE, or RECORDS_PASSWORD) and the meaning fixed for the action (approved,
rejected, returned). The password never comes from a command-line argument (it would sit in the
process list and the shell history); with RECORDS_TOKEN alone, decisions are refused here.

Exit codes: 0 every id succeeded (or --no-wait and the job was accepted); 2 the job finished but
some ids failed (their outcomes are printed); 1 the job could not be submitted or failed as a whole.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx
from tqdm import tqdm

from backend.records.actions import ACTIONS, action_named

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL = 0, 1, 2


def read_ids(lines: Iterable[str]) -> list[str]:
    ids = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            ids.extend(part for part in line.replace(",", " ").split() if part)
    return ids


@dataclass
class Targets:
    """What the input names: ids, request numbers, and those of either with the version the decider saw."""

    ids: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)  # {"id", "version"}
    numbered: dict[str, int] = field(default_factory=dict)  # NUMBER@VERSION: number -> version, resolved later

    def __len__(self) -> int:
        return len(self.ids) + len(self.numbers) + len(self.items) + len(self.numbered)


def _is_id(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


def parse_targets(tokens: list[str]) -> Targets:
    """`ID`, `NUMBER`, `ID@VERSION` or `NUMBER@VERSION` tokens -> Targets. Anything not an id is a
    request number (the server refuses the whole action if one names nothing: `unknown_numbers`). A
    version makes a request changed since (edited, resubmitted) a `stale_version` outcome instead of
    a decision on what nobody reviewed. Raises ValueError naming the first malformed token."""
    targets = Targets()
    for token in tokens:
        if "@" not in token:
            (targets.ids if _is_id(token) else targets.numbers).append(token)
            continue
        target, _, version = token.partition("@")
        if not target or not version.isdigit() or int(version) < 1:
            raise ValueError(f"{token!r}: expected ID, NUMBER, ID@VERSION or NUMBER@VERSION (a version from 1)")
        if _is_id(target):
            targets.items.append({"id": target, "version": int(version)})
        elif targets.numbered.setdefault(target, int(version)) != int(version):
            raise ValueError(f"{token!r}: {target} is named with two versions")
    return targets


def resolve_numbered(client: httpx.Client, action: str, entity: str, reason: str, targets: Targets) -> None:
    """Turns NUMBER@VERSION into {id, version} items through POST /api/bulk-actions/preview/ (which
    reads only and asks for no password): the API pins versions by id. Raises ValueError naming the
    numbers that name no request of the caller's unit, so nothing is signed for a typo."""
    if not targets.numbered:
        return
    answer = client.post("/api/bulk-actions/preview/", json={
        "entity": entity, "action": action, "numbers": list(targets.numbered), "reason": reason,
    })
    if answer.status_code != 200:
        raise ValueError(f"the request numbers could not be looked up ({answer.status_code}): {answer.text[:300]}")
    found = {item["ref"]: item["id"] for item in answer.json()["items"] if item["id"]}
    unknown = [number for number in targets.numbered if number not in found]
    if unknown:
        raise ValueError(f"no {entity} request of your unit has the number {', '.join(unknown)}")
    targets.items += [{"id": found[number], "version": version} for number, version in targets.numbered.items()]
    targets.numbered = {}


def bulk_body(action: str, entity: str, targets: Targets, reason: str, password: Callable[[], str | None]) -> dict:
    """The POST /api/bulk-actions/ body for `targets` (numbers with versions already resolved), signed
    when the action is a decision (signature_for)."""
    assert not targets.numbered, "resolve_numbered first"
    body = {"entity": entity, "action": action, "ids": targets.ids, "reason": reason}
    if targets.numbers:
        body["numbers"] = targets.numbers
    if targets.items:
        body["items"] = targets.items
    signature = signature_for(action, password)
    if signature:
        body["signature"] = signature
    return body


def signature_for(action: str, password: Callable[[], str | None]) -> dict | None:
    """The signature a decision carries (`password()` and the meaning the records' vocabulary fixes
    for the action: the server refuses any other); None for an action that is not signed. Raises
    ValueError when a decision has no password to sign with."""
    meaning = action_named(action).meaning
    if not meaning:
        return None
    secret = password()
    if not secret:
        raise ValueError(f"{action} is a signed decision: set RECORDS_PASSWORD_FILE (or RECORDS_PASSWORD) to sign it")
    return {"password": secret, "meaning": meaning}


def _password() -> str | None:
    password = os.environ.get("RECORDS_PASSWORD")
    if not password and os.environ.get("RECORDS_PASSWORD_FILE"):  # keeps the secret out of crontabs
        with open(os.environ["RECORDS_PASSWORD_FILE"]) as secret:
            password = secret.read().strip()
    return password or None


def _token(client: httpx.Client) -> str:
    token = os.environ.get("RECORDS_TOKEN")
    if token:
        return token
    username, password = os.environ.get("RECORDS_USERNAME"), _password()
    if not (username and password):
        raise SystemExit("set RECORDS_TOKEN, or RECORDS_USERNAME and RECORDS_PASSWORD (or RECORDS_PASSWORD_FILE)")
    answer = client.post("/api/auth/token/", json={"username": username, "password": password})
    if answer.status_code != 200:
        raise SystemExit(f"sign-in failed ({answer.status_code}): {answer.text[:200]}")
    return answer.json()["access"]


def _follow(client: httpx.Client, location: str, total: int, poll: float, quiet: bool) -> dict:
    bar = tqdm(total=total, unit="id", disable=quiet, file=sys.stderr, dynamic_ncols=True)
    try:
        while True:
            # Progress only: the outcomes of a big bulk are fetched once, at the end.
            job = client.get(location, params={"outcomes": "none"}).raise_for_status().json()
            progress = job["progress"]
            bar.update(progress["done"] - bar.n)
            bar.set_postfix(failed=progress["failed"], status=job["status"])
            if job["status"] in ("succeeded", "failed"):
                return job
            time.sleep(poll)
    finally:
        bar.close()


def _failed_outcomes(client: httpx.Client, location: str) -> list[dict]:
    """Every failed target of a finished job, page by page (GET /api/jobs/{id}/outcomes/)."""
    failures: list[dict] = []
    url: str | None = f"{location.rstrip('/')}/outcomes/?status=failed&page_size=500"
    while url:
        page = client.get(url).raise_for_status().json()
        failures += page["results"]
        url = page["next"]
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="records-bulk", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=[a.path for a in ACTIONS.values()])
    parser.add_argument("--entity", required=True, choices=["withdrawal", "destruction", "transfer"])
    parser.add_argument("--ids-file", type=argparse.FileType("r"), default=None, help="default: stdin")
    parser.add_argument("--reason", default="", help="required for reject and send-back")
    parser.add_argument("--no-wait", action="store_true", help="submit and exit; print the job URL")
    parser.add_argument("--url", default=os.environ.get("RECORDS_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the final job as JSON")
    args = parser.parse_args(argv)

    tokens = read_ids(args.ids_file or sys.stdin)
    if not tokens:
        print("no ids given", file=sys.stderr)
        return EXIT_ERROR
    try:
        targets = parse_targets(tokens)
        signature_for(args.action, _password)  # a decision without a password stops here, before any request
    except ValueError as exc:
        print(f"nothing sent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    with httpx.Client(base_url=args.url, timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {_token(client)}"
        try:
            resolve_numbered(client, args.action, args.entity, args.reason, targets)
            body = bulk_body(args.action, args.entity, targets, args.reason, _password)
        except ValueError as exc:
            print(f"nothing signed: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if "signature" in body and not args.quiet:
            print(f"signing {len(targets)} {args.entity} requests: {body['signature']['meaning']}", file=sys.stderr)
        answer = client.post("/api/bulk-actions/", json=body)
        if answer.status_code != 202:
            print(f"bulk action refused ({answer.status_code}): {answer.text[:500]}", file=sys.stderr)
            return EXIT_ERROR
        location = answer.headers["Location"]
        job = answer.json()["job"]
        if args.no_wait:
            print(f"queued job {job['id']}: {args.url.rstrip('/')}{location}")
            return EXIT_OK
        job = _follow(client, location, job["progress"]["total"], args.poll, args.quiet)
        failures = _failed_outcomes(client, location)
    if args.json:
        print(json.dumps({**job, "failed_outcomes": failures}, indent=2))
    progress = job["progress"]
    counts = Counter(outcome["code"] for outcome in failures)
    succeeded = progress["done"] - progress["failed"]
    ordered = [("succeeded", succeeded)] if succeeded else []
    ordered += sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    print(f"job {job['id']} {job['status']}: " + ", ".join(f"{n} {what}" for what, n in ordered))
    for outcome in failures:
        print(f"  {outcome['target']}: {outcome['code']}: {outcome.get('message', '')}")
    if job["status"] != "succeeded":
        print(f"job failed: {job.get('error')}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_PARTIAL if job["progress"]["failed"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
