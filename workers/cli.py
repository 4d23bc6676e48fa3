"""`records-bulk`: submit a bulk status change from a batch host and follow it to the end.

    RECORDS_URL=https://records.example.com RECORDS_USERNAME=north.approver RECORDS_PASSWORD=... \\
        python -m workers.cli approve --entity withdrawal --ids-file ids.txt

Reads ids (one per line, `#` comments allowed; `ID@VERSION` binds a decision to the version the
decider saw) from --ids-file or stdin, authenticates against the
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
from collections import Counter
from collections.abc import Callable, Iterable

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


def split_versions(tokens: list[str]) -> tuple[list[str], list[dict]]:
    """`ID` or `ID@VERSION` tokens -> (ids, items). An item carries the version the decider saw, so a
    request changed since (edited, resubmitted) gets a `stale_version` outcome instead of a decision
    on what nobody reviewed. Raises ValueError naming the first malformed token."""
    ids, items = [], []
    for token in tokens:
        if "@" not in token:
            ids.append(token)
            continue
        target, _, version = token.partition("@")
        if not target or not version.isdigit() or int(version) < 1:
            raise ValueError(f"{token!r}: expected ID or ID@VERSION (a version from 1)")
        items.append({"id": target, "version": int(version)})
    return ids, items


def bulk_body(action: str, entity: str, tokens: list[str], reason: str, password: Callable[[], str | None]) -> dict:
    """The POST /api/bulk-actions/ body for `tokens` (ID or ID@VERSION). A decision is signed with
    `password()` and the meaning the records' vocabulary fixes for the action. Raises ValueError
    naming what stops it (a malformed token, a decision without a password) before anything is sent."""
    ids, items = split_versions(tokens)
    body = {"entity": entity, "action": action, "ids": ids, "reason": reason}
    if items:
        body["items"] = items
    meaning = action_named(action).meaning  # the server refuses any other meaning
    if meaning:
        secret = password()
        if not secret:
            raise ValueError(f"{action} is a signed decision: set RECORDS_PASSWORD_FILE (or RECORDS_PASSWORD) to sign it")
        body["signature"] = {"password": secret, "meaning": meaning}
    return body


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
        body = bulk_body(args.action, args.entity, tokens, args.reason, _password)
    except ValueError as exc:
        print(f"nothing sent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if "signature" in body and not args.quiet:
        print(f"signing {len(tokens)} {args.entity} requests: {body['signature']['meaning']}", file=sys.stderr)
    with httpx.Client(base_url=args.url, timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {_token(client)}"
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
